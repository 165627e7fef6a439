"""Bounds on untrusted input and on waiting, read in one place.

Pipelines and params come from pipeline authors, layers from anyone who can push to the
storage, nested-resolver data from git; none of it may make a step or the controller do
unbounded work (docs/security.md). Every bound has a default that no real Tekton object or
workspace comes near, and an environment variable to change it: set it in the controller's
Deployment, or in the step through the PipelineRun's `podTemplate`/the task's `env`
(the injected steps inherit `stepTemplate.env`). A refusal names the limit and its
variable, so whoever hits it knows what to change.

Pure: reads only `os.environ`, once per call (tests set the variables per process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from wrapresolver.errors import WrapError

ENV_PREFIX = "WRAPRESOLVER_"


@dataclass(frozen=True)
class Limit:
    """One bound: its name in messages and docs, its variable, its default."""

    name: str
    default: float
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    def value(self) -> float:
        text = os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            number = float(text)
        except ValueError:
            raise LimitError(f"{self.env}={text!r} is not a number; unset it or give one "
                             f"(default {self.default:g})") from None
        if number <= 0:
            raise LimitError(f"{self.env}={text!r} must be greater than 0 (default {self.default:g})")
        return number

    def int_value(self) -> int:
        return int(self.value())

    def where(self) -> str:
        """How a refusal says where the limit is configured."""
        return f"limit {self.name} = {self.value():g}, set by the environment variable {self.env}"


class LimitError(WrapError):
    """Input over one of the limits of this module (or a limit set to nonsense)."""

    reason = "InputTooLarge"
    exit_code = 2  # the injected steps treat it as bad input (usage)


# ---- YAML (Pipelines, Tasks, nested-resolver data, render's files) ----
YAML_MAX_BYTES = Limit("yaml-max-bytes", 16 << 20, "size of one YAML text, in bytes")
YAML_MAX_NODES = Limit("yaml-max-nodes", 200_000, "nodes of one document with every alias expanded")
YAML_MAX_ALIASES = Limit("yaml-max-aliases", 1_000, "alias references (`*name`) in one text")
YAML_MAX_DEPTH = Limit("yaml-max-depth", 100, "nesting depth of mappings and sequences")

# ---- tar headers of layers ----
TAR_MAX_NAME = Limit("tar-max-name", 4096, "bytes of one entry's path (the OS's PATH_MAX)")
TAR_MAX_LINK = Limit("tar-max-link", 4096, "bytes of one link target")
TAR_MAX_PAX = Limit("tar-max-pax", 1 << 20, "bytes of one PAX or GNU long-name header record")

# ---- JSON step arguments (`--workspace`) ----
JSON_MAX_BYTES = Limit("json-max-bytes", 1 << 20, "bytes of one --workspace JSON argument")

# ---- waiting on storage ----
IO_TIMEOUT = Limit("io-timeout", 30, "seconds a step waits for any one answer from storage")


def io_timeout() -> float:
    """Seconds any backend (and plugin) waits for one answer: connect, a read, a write.

    A stalled operation fails after this long instead of being retried; refused
    connections and 5xx answers are retried with backoff for about 8 s in all.
    """
    return IO_TIMEOUT.value()


SHOWN = 120
"""Characters of an untrusted name echoed into a message: enough to recognise it."""


def shown(text: object, limit: int = SHOWN) -> str:
    """`repr(text)`, cut to `limit` characters with the full length said, for messages."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def cap_line(line: str, limit: int = 2000) -> str:
    """One message line at most `limit` characters: an error line never floods a log."""
    line = " ".join(line.splitlines()) if "\n" in line else line
    if len(line) <= limit:
        return line
    return line[:limit] + f"... ({len(line) - limit} more characters)"
