"""The toolkit under the backends and the steps: tar read and written, layers, snapshots
and their diffs, applying a layer safely, the writer process, streams, the step's disk.

It imports no backend and no step (import-linter's layers contract, see pyproject.toml):
a backend uses it to move a workspace, and `wrapresolver.steps` puts it together with a
backend.
"""
