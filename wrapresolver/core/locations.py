"""Where states may go: storage locations parsed, and the admin's `allowed-targets` prefixes.

`allowed-targets` in the ConfigMap is a comma-separated list of location prefixes
(`oci://registry.internal/ci/,s3://ci-states/`). When it is set, resolution refuses a
target or base outside it, and the controller reclaims nothing outside it.

A prefix admits a location when both parse to the same scheme, the same host (the
hostname lowercased, with its port; a bucket for s3:// and gs://; empty for file://) and
the prefix's path segments are the first segments of the location's. Matching is on the
parsed parts, never on the raw text, so `oci://registry.internal/ci` admits neither
`oci://registry.internal/ci-evil/x` nor `oci://registry.internal.evil.com/ci/x`, and a
user name in front of the host (`oci://registry.internal@evil.com/ci`) is not the host.

What cannot be matched is refused rather than guessed: `.` and `..` segments, an encoded
`/` inside a segment, and Tekton variables other than `$(context.pipelineRun.name|
namespace|uid)` (Tekton substitutes `$(params.x)` in the steps after this check, so its
value could point anywhere). A target without a scheme is read with the scheme of its
backend (`registry.example/ci/src` is `oci://registry.example/ci/src`). Pure: parsing only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from wrapresolver.core.params import CONFIG_ALLOWED_TARGETS
from wrapresolver.errors import ParamError

_CONTEXT = re.compile(r"\$\(context\.pipelineRun\.(?:name|namespace|uid)\)")
"""Values Tekton fills with a DNS name or a UID: they cannot add a segment or leave one."""
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class LocationError(ValueError):
    """A location that cannot be checked against `allowed-targets`; the text says why."""


@dataclass(frozen=True)
class Location:
    """A storage location reduced to what an allow list compares."""

    scheme: str
    host: str
    segments: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}/{'/'.join(self.segments)}"

    def within(self, prefix: Location) -> bool:
        """True when `prefix` admits this location (same scheme and host, leading segments)."""
        return (self.scheme == prefix.scheme and self.host == prefix.host
                and self.segments[:len(prefix.segments)] == prefix.segments)


def parse_location(text: str, default_scheme: str = "oci", *, prefix: bool = False) -> Location:
    """One target, base or prefix as a `Location`; `LocationError` saying why it cannot be.

    An OCI location's tag or digest is not part of its path (`oci://r/ci/src:v1` is in
    `oci://r/ci/`); a prefix never has one (`prefix=True`).
    """
    text = text.strip()
    filled = _CONTEXT.sub("x", text)
    if "$(" in filled:
        raise LocationError(
            f"{text!r} holds a Tekton variable other than $(context.pipelineRun.name/namespace/uid), "
            f"whose value is only known when the steps run")
    if not _SCHEME.match(filled):
        if "://" in filled or not default_scheme:
            raise LocationError(f"{text!r} is not a URL like scheme://host/path")
        filled = f"{default_scheme}://{filled}"
    try:
        parts = urlsplit(filled)
        port = parts.port
    except ValueError as exc:
        raise LocationError(f"{text!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme == "file" and host == "localhost":
        host = ""
    if port is not None:
        host = f"{host}:{port}"
    path = parts.path
    if scheme == "oci" and not prefix:
        path = path.split("@", 1)[0]
        last = path.rsplit("/", 1)
        if ":" in last[-1]:
            path = path[:path.rindex(":")]
    raw = path.split("/")
    if raw and raw[0] == "":
        raw = raw[1:]
    if raw and raw[-1] == "":
        raw = raw[:-1]
    segments = tuple(unquote(s) for s in raw)
    for segment in segments:
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            raise LocationError(f"{text!r} has a path segment {segment!r} that could leave its prefix")
    return Location(scheme, host, segments)


@dataclass(frozen=True)
class AllowedTargets:
    """The parsed `allowed-targets`; empty `prefixes` with `configured` False allows everything."""

    prefixes: tuple[Location, ...] = ()
    spelled: tuple[str, ...] = ()
    configured: bool = False

    def admits(self, location: Location) -> bool:
        return not self.configured or any(location.within(p) for p in self.prefixes)

    def refusal(self, text: str, default_scheme: str = "oci") -> str:
        """'' when `text` may be used, else why not (the message names the key)."""
        if not self.configured:
            return ""
        try:
            location = parse_location(text, default_scheme)
        except LocationError as exc:
            return f"{exc}, so it cannot be checked against `{CONFIG_ALLOWED_TARGETS}`"
        if self.admits(location):
            return ""
        return (f"{text!r} is outside `{CONFIG_ALLOWED_TARGETS}` of the ConfigMap wrapresolver-config "
                f"({', '.join(self.spelled) or 'no valid prefix'}); store under one of those prefixes, "
                f"or ask the cluster admin to add one")


def parse_allowed_targets(value: str | None) -> tuple[AllowedTargets, list[str]]:
    """The allow list from the ConfigMap value, and one message per entry that is not a prefix.

    An unset or blank value allows every location. A set value whose entries are all
    invalid allows none: a typo in the admin's list must not open storage to everyone.
    """
    text = (value or "").strip()
    if not text:
        return AllowedTargets(), []
    prefixes: list[Location] = []
    spelled: list[str] = []
    problems: list[str] = []
    for entry in _entries(text.split(",")):
        try:
            if not _SCHEME.match(entry):
                raise LocationError(f"{entry!r} has no scheme; write e.g. oci://{entry}")
            location = parse_location(entry, "", prefix=True)
            if not location.host and location.scheme != "file":
                raise LocationError(f"{entry!r} names no host or bucket")
        except LocationError as exc:
            problems.append(f"`{CONFIG_ALLOWED_TARGETS}`: {exc}; entry ignored")
            continue
        prefixes.append(location)
        spelled.append(entry)
    return AllowedTargets(tuple(prefixes), tuple(spelled), configured=True), problems


def check_locations(config: Mapping[str, str], default_scheme: str, targets: Mapping[str, str],
                    bases: Mapping[str, str]) -> None:
    """Refuse, at resolution, a workspace's target or base outside `allowed-targets`.

    `targets` and `bases` map each wrapped workspace to its concrete location (bases: only
    the workspaces that have one). The message names the key, the workspace and the param.
    """
    allowed, problems = parse_allowed_targets(config.get(CONFIG_ALLOWED_TARGETS))
    if not allowed.configured:
        return
    for what, locations in (("target", targets), ("base", bases)):
        for workspace, text in locations.items():
            why = allowed.refusal(text, default_scheme)
            if why:
                hint = f" ({'; '.join(problems)})" if problems and not allowed.prefixes else ""
                raise ParamError(f"param `{what}` of workspace {workspace!r}: {why}{hint}")


def _entries(parts: Iterable[str]) -> list[str]:
    return [p.strip() for p in parts if p.strip()]
