"""Python's cyclic garbage collector (the `gc` module) paused around work that makes many
objects and no cycles. Not the deletion of stored states, which the `gc` command does.

Shared by the resolver (one rewrite) and the data path (a store's walk of the workspace,
a fetch's extraction): all build hundreds of thousands of tuples, dicts and strings that
form no cycles, and the collector passes over them again and again as they pile up: a
tenth of a 2,000-task rewrite, 0.12 s of the 0.28 s a store spends reading its record and
walking 20,000 files, 0.69 s (221 collections) of a 14.8 s fetch of 100,000 files.
Objects that do form cycles meanwhile are collected after.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's collector off for the block, and back as it was."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
