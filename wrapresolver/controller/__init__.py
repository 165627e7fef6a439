"""The `wrap` resolver's Kubernetes controller: kopf wiring around `wrapresolver.resolve`.

Only `main` is imported by the command line; it imports the rest (kopf, the Kubernetes
client) when the `controller` command actually runs.
"""
