"""The retention policy: what happens to a run's intermediate states when its PipelineRun ends.

A run stores one state per producing task; only the published target (the Pipeline's
result) is meant to outlive the run. The policy is the `retention` param, defaulted by
`default-retention` in the ConfigMap, and the controller carries it out:

    delete-on-completion   (the default) when the run finishes, whatever its outcome, or
                           its PipelineRun is deleted
    delete-on-success      when the run succeeds; a failed or cancelled run keeps its
                           states for inspection until its PipelineRun is deleted
    keep-for <duration>    that long after the run finishes (or at once when its
                           PipelineRun is deleted), e.g. `keep-for 12h`, `keep-for 7d`
    keep                   never by the controller; `wrapresolver gc` can still remove them

The published target is never deleted by that policy. What a run published has its own,
`publish-retention` (default `default-publish-retention`, else `keep`), in the same words:

    keep                   (the default) never by the controller
    keep-for <duration>    that long after the run finishes, or when its PipelineRun is deleted
    delete-with-run        when its PipelineRun is deleted (by a user, or Tekton's pruner)

It deletes only results the run itself published and no later run has published over,
and never the result of a carried workspace (one whose base is in its target's repository).
Pure: parsing only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wrapresolver.errors import ParamError

PARAM_RETENTION = "retention"
CONFIG_DEFAULT_RETENTION = "default-retention"

DELETE_ON_COMPLETION = "delete-on-completion"
DELETE_ON_SUCCESS = "delete-on-success"
KEEP_FOR = "keep-for"
KEEP = "keep"
DELETE_WITH_RUN = "delete-with-run"
PARAM_PUBLISH_RETENTION = "publish-retention"
CONFIG_DEFAULT_PUBLISH_RETENTION = "default-publish-retention"
PUBLISH_POLICIES = (KEEP, KEEP_FOR, DELETE_WITH_RUN)
DEFAULT_RETENTION = DELETE_ON_COMPLETION
POLICIES = (DELETE_ON_COMPLETION, DELETE_ON_SUCCESS, KEEP_FOR, KEEP)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` or a sum like `1d12h` -> seconds."""
    text = text.strip()
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration: write e.g. 30m, 12h, 7d or 1d12h")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


@dataclass(frozen=True)
class Retention:
    """A parsed policy; `text()` is its canonical spelling (what the annotation carries)."""

    policy: str = DEFAULT_RETENTION
    delay: float = 0.0
    """Seconds after completion (keep-for only)."""
    spelled: str = ""

    def text(self) -> str:
        if self.policy == KEEP_FOR:
            return f"{KEEP_FOR} {self.spelled}"
        return self.policy

    def due(self, outcome: str, deleted: bool) -> float | None:
        """Seconds after the end until deletion, or None when the controller must not delete.

        `outcome` is "succeeded", "failed" or "running" (not finished); `deleted` says the
        PipelineRun object is gone. A run still going is never due.
        """
        if self.policy == KEEP:
            return None
        if self.policy == DELETE_WITH_RUN:
            return 0.0 if deleted else None
        if deleted:
            return 0.0
        if outcome == "running":
            return None
        if self.policy == DELETE_ON_SUCCESS:
            return 0.0 if outcome == "succeeded" else None
        if self.policy == KEEP_FOR:
            return self.delay
        return 0.0


def parse_retention(value: object, where: str = f"param `{PARAM_RETENTION}`") -> Retention:
    """One policy from its spelling; `ParamError` naming the choices otherwise."""
    if not isinstance(value, str):
        raise ParamError(f"{where} must be a string, one of: {_choices()}")
    words = value.split()
    if not words:
        return Retention()
    name, rest = words[0], words[1:]
    if name == KEEP_FOR:
        if len(rest) != 1:
            raise ParamError(f"{where}: `{KEEP_FOR}` needs one duration, e.g. `{KEEP_FOR} 12h`")
        try:
            seconds = parse_duration(rest[0])
        except ValueError as exc:
            raise ParamError(f"{where}: {exc}") from None
        return Retention(KEEP_FOR, seconds, rest[0])
    if name in POLICIES and not rest:
        return Retention(name)
    raise ParamError(f"{where} is {value!r}; write one of: {_choices()}")


def retention_of(params: Sequence[Mapping], config: Mapping[str, str]) -> Retention:
    """The run's policy: the `retention` param, else the ConfigMap default, else delete-on-completion."""
    for param in params:
        if isinstance(param, Mapping) and param.get("name") == PARAM_RETENTION:
            return parse_retention(param.get("value"))
    default = config.get(CONFIG_DEFAULT_RETENTION)
    if default is not None and str(default).strip():
        return parse_retention(str(default), f"`{CONFIG_DEFAULT_RETENTION}` in the ConfigMap")
    return Retention()


def parse_publish_retention(value: object, where: str = f"param `{PARAM_PUBLISH_RETENTION}`") -> Retention:
    """The policy of what a run publishes: keep (default), `keep-for <duration>`, delete-with-run."""
    if not isinstance(value, str):
        raise ParamError(f"{where} must be a string, one of: {_publish_choices()}")
    words = value.split()
    if not words:
        return Retention(KEEP)
    if words[0] == KEEP_FOR:
        return parse_retention(value, where)
    if words[0] in PUBLISH_POLICIES and len(words) == 1:
        return Retention(words[0])
    hint = ""
    if words[0] in (DELETE_ON_COMPLETION, DELETE_ON_SUCCESS):
        hint = " (that would delete the result as soon as the run wrote it)"
    raise ParamError(f"{where} is {value!r}{hint}; write one of: {_publish_choices()}")


def publish_retention_of(params: Sequence[Mapping], config: Mapping[str, str]) -> Retention:
    """The run's publish policy: the param, else the ConfigMap default, else keep."""
    for param in params:
        if isinstance(param, Mapping) and param.get("name") == PARAM_PUBLISH_RETENTION:
            return parse_publish_retention(param.get("value"))
    default = config.get(CONFIG_DEFAULT_PUBLISH_RETENTION)
    if default is not None and str(default).strip():
        return parse_publish_retention(str(default), f"`{CONFIG_DEFAULT_PUBLISH_RETENTION}` in the ConfigMap")
    return Retention(KEEP)


def _publish_choices() -> str:
    return f"{KEEP} (default), `{KEEP_FOR} <duration>` (e.g. 30d), {DELETE_WITH_RUN}"


def _choices() -> str:
    return f"{DELETE_ON_COMPLETION} (default), {DELETE_ON_SUCCESS}, `{KEEP_FOR} <duration>` (e.g. 7d), {KEEP}"
