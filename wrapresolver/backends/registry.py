"""Backends by name and by target scheme, loaded lazily from entry points.

Two entry-point groups, both pointing at the same `BACKEND` object:

* `wrapresolver.backends`: name -> backend (what the `backend` param names);
* `wrapresolver.schemes`: target scheme -> backend (`gs` -> the gcs backend).

Only the backend asked for is imported: looking up `s3://` never loads the rsync data
path, and a plugin that fails to import is reported with its own error when it is the
one asked for, never swallowed, and never takes another backend down. A plugin that
registers only under `wrapresolver.backends` is still found by scheme: its entry named
like the scheme is tried first, then the others are loaded one by one.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from wrapresolver.core.backend import Backend
from wrapresolver.core.params import DEFAULT_BACKEND
from wrapresolver.errors import ParamError

ENTRY_POINT_GROUP = "wrapresolver.backends"
SCHEME_GROUP = "wrapresolver.schemes"


@functools.cache
def _group(group: str) -> tuple[EntryPoint, ...]:
    """A group's entry points, read once per process.

    Scanning every installed distribution's metadata costs milliseconds of file reads; the
    controller asks on every request, and plugins are installed with the image, not while
    it runs.
    """
    return tuple(entry_points(group=group))


@functools.cache
def _load(entry: EntryPoint) -> Backend:
    loaded = entry.load()
    if not isinstance(loaded, Backend):
        raise TypeError(f"{entry.value} is a {type(loaded).__name__}, not a wrapresolver Backend")
    return loaded


class EntryPointRegistry:
    """The installed backends (see the module docstring); implements `core.backend.Backends`."""

    def __init__(self, group: str = ENTRY_POINT_GROUP, scheme_group: str = SCHEME_GROUP) -> None:
        self.group, self.scheme_group = group, scheme_group

    def names(self) -> list[str]:
        """Installed backend names, without importing any of them."""
        return sorted({ep.name for ep in _group(self.group)})

    def by_name(self, name: str) -> Backend:
        for ep in _group(self.group):
            if ep.name == name:
                return self._load(ep, f"backend {name!r}")
        raise ParamError(f"unknown backend {name!r}; installed backends: {', '.join(self.names()) or 'none'}")

    def by_scheme(self, scheme: str) -> Backend:
        for ep in _group(self.scheme_group):
            if ep.name == scheme:
                return self._load(ep, f"the backend for {scheme}:// targets")
        # Plugins that declare no scheme entry point: the entry named like the scheme
        # first, then the rest, one at a time, stopping at the first that claims it.
        by_name = sorted(_group(self.group), key=lambda ep: ep.name != scheme)
        failures: list[str] = []
        for ep in by_name:
            try:
                backend = _load(ep)
            except Exception as exc:  # reported below if no other backend claims the scheme
                failures.append(f"backend {ep.name!r} failed to load: {exc}")
                continue
            if scheme in backend.schemes:
                return backend
        known = sorted({f"{ep.name}://" for ep in _group(self.scheme_group)})
        message = (
            f"no installed backend handles targets of scheme {scheme!r}; known schemes: "
            f"{', '.join(known) or 'none'} (or set the `backend` param)"
        )
        if failures:
            message += "; " + "; ".join(failures)
        raise ParamError(message)

    def for_target(self, scheme: str, name: str = "") -> Backend:
        """The backend a by-hand command means: by name, else by scheme, else the default."""
        if name:
            return self.by_name(name)
        return self.by_scheme(scheme) if scheme else self.by_name(DEFAULT_BACKEND)

    @staticmethod
    def _load(ep: EntryPoint, what: str) -> Backend:
        try:
            return _load(ep)
        except Exception as exc:  # any import error of a plugin: say which one and why
            raise ParamError(f"{what} is installed ({ep.value}) but failed to load: {exc}") from exc


REGISTRY = EntryPointRegistry()


def get_backend(name: str) -> Backend:
    return REGISTRY.by_name(name)


def backend_for_scheme(scheme: str) -> Backend:
    return REGISTRY.by_scheme(scheme)
