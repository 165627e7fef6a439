"""Storage backends. See `base` for the interface and the entry-point registry."""
