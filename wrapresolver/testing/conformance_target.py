"""What the conformance kit is pointed at: a live target, and the two ways it can fail.

A plugin's tests describe its backend once (`ConformanceTarget`) and, optionally, each
failing variant the same way, as an `Unusable`: a target with its own options and changes
to the environment. The kit uses the same variant for every check of that failure, in
process (the early check, `probe`) and through the real `wrapresolver fetch` command
(conformance_errors.py), so a plugin says how to reach an unreachable or a denied target
in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Unusable:
    """A variant of the live target that must fail, and what the step would see for it."""

    target: str
    options: Mapping[str, str] | None = None
    """Backend options; None: those of the `ConformanceTarget`."""
    env: Mapping[str, str | None] = field(default_factory=dict)
    """Changes to the `ConformanceTarget`'s environment; None removes a variable."""

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this variant's changes applied."""
        out = dict(base)
        for name, value in self.env.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    def secrets(self) -> list[str]:
        """The values this variant sets that a message must not show (long enough to tell)."""
        return [value for value in self.env.values() if value is not None and len(value) >= 4]


@dataclass(frozen=True)
class ConformanceTarget:
    """How the suite reaches a live instance of the backend under test."""

    backend: str
    """The backend's entry-point name."""
    new_target: Callable[[], str]
    """Returns a fresh, empty target each call (a new bucket, prefix or directory)."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Backend options as the resolver would pass them (strings)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment the injected steps would see (credentials, emulator hosts)."""
    unreachable: Callable[[str], Unusable] | None = None
    """Given a loopback `host:port`, this backend pointed at that address only (by its
    target, options or environment). The kit points it at a closed port (the early check
    and a fetch must fail with `NetworkError` naming the port) and at a server that accepts
    connections and never answers (a fetch must fail after `io_timeout()`). None skips
    those checks."""
    denied: Callable[[], Unusable] | None = None
    """A target of the live server with no or wrong credentials: the early check and a
    fetch must fail with `AuthError`, and the message show none of the values the variant
    sets. None skips those checks."""

    def options_for(self, case: Unusable) -> dict[str, str]:
        return dict(self.options if case.options is None else case.options)
