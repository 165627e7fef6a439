"""Storage backends: `base` is what a plugin implements, `registry` finds them by name or scheme."""
