"""The pure core of the resolver: params, templates, the plan, the rewrite, names of
stored states, the step contract, the backend interface and the value types.

No I/O: nothing here opens a file, a socket or a process, or imports a module that does
(import-linter checks it, see pyproject.toml).
"""
