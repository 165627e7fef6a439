"""wrapresolver: Tekton workspaces shared through storage instead of PersistentVolumeClaims."""

__version__ = "0.1.0"
