"""The injected steps' side: what `wrapresolver fetch | store | publish` do with a target.

Above the backends and the transfer toolkit: it opens a target through the backend
registry, puts the layered engine around a blob store, and applies the runner's rules
(unbound workspaces, the fetch record, results, timing) around any store.
"""
