"""The local executor saying what each task does as it happens, for `wrapresolver run`.

`ReportingExecutor` (made by `executor_class`, so the executor is imported only when a run
starts) overrides the executor's per-attempt, per-step and record methods: a line when a
task starts and when it ends (status, seconds, bytes the injected steps fetched and
stored, read from their report lines), the task's logs when it fails, a line for a task
skipped, and a step that cannot start here (a missing command, a directory a switched UID
cannot reach) as that task's failure rather than an exception. `summary` is the table at
the end.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPORT = re.compile(r"^wrap (fetch|store|publish) [^:]*: \d+ files, (\d+) bytes", re.MULTILINE)


def _transferred(log: str) -> tuple[int, int]:
    """(bytes fetched, bytes stored or published) from the injected steps' report lines."""
    fetched = stored = 0
    for action, nbytes in _REPORT.findall(log):
        if action == "fetch":
            fetched += int(nbytes)
        else:
            stored += int(nbytes)
    return fetched, stored


@dataclass
class TaskLine:
    """One task's row in the summary."""

    name: str
    status: str = "Skipped"
    seconds: float = 0.0
    fetched: int = 0
    stored: int = 0
    attempts: int = 0
    note: str = ""


def executor_class() -> type:
    from wrapresolver.testing.executor import FAILED, SKIPPED, LocalExecutor, TaskRun

    class ReportingExecutor(LocalExecutor):
        """The executor, saying what each task does as it happens."""

        def __init__(self, *args: Any, say: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.say = say
            self.lines: dict[str, TaskLine] = {}
            self._lines_lock = threading.Lock()

        def _line(self, name: str) -> TaskLine:
            with self._lines_lock:
                return self.lines.setdefault(name, TaskLine(name))

        def _attempt(self, task: Mapping, pipeline_vars: Mapping[str, str], attempt: int,
                     referenced: bool = False) -> TaskRun:
            name = str(task["name"])
            line = self._line(name)
            self.say(f"[{name}] started" + (f" (retry {attempt})" if attempt else ""))
            start = time.monotonic()
            try:
                result = super()._attempt(task, pipeline_vars, attempt, referenced)
            except Exception as exc:  # a task the executor cannot start: its failure, not the command's
                result = TaskRun(name, FAILED, attempts=attempt + 1, log=f"cannot run the task here: {exc}")
            seconds = time.monotonic() - start
            fetched, stored = _transferred(result.log)
            line.status, line.attempts = result.status, attempt + 1
            line.seconds += seconds
            line.fetched, line.stored = fetched, stored
            self.say(f"[{name}] {result.status.lower()} in {seconds:.1f}s, "
                     f"{fetched} bytes fetched, {stored} bytes stored")
            if result.status == FAILED:
                self.say(f"[{name}] logs:\n" + _indent(result.log))
            return result

        def _step(self, step: Mapping, template: Mapping | None, variables: Mapping[str, str],
                  volumes: Mapping[str, Path], scratch: Path, read_only: Sequence[Path] = ()) -> tuple[int, str]:
            try:
                return super()._step(step, template, variables, volumes, scratch, read_only)
            except PermissionError as exc:  # a switched UID cannot reach the script or the command
                return 126, (f"step {step.get('name')!r} cannot start here: permission denied on "
                             f"{exc.filename or 'its command'} for the UID it runs as; every directory above "
                             f"--local-dir (and the command) must be reachable by that UID")
            except OSError as exc:  # no such command or working directory on this machine
                what = exc.filename or ""
                return 127, (f"step {step.get('name')!r} cannot start here: {exc.strerror or exc}"
                             + (f" ({what})" if what else "")
                             + "; images are not used locally, so its command must exist on this machine")

        def _record(self, run: TaskRun) -> None:
            super()._record(run)
            if run.status == SKIPPED and run.name not in self.lines:
                why = {"when": "its when expressions are false",
                       "blocked": "a task it depends on failed or was skipped for that"}.get(run.reason, run.reason)
                line = self._line(run.name)
                line.note = run.reason
                self.say(f"[{run.name}] skipped: {why}")

    return ReportingExecutor


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def summary(lines: Sequence[TaskLine]) -> str:
    rows = [("TASK", "STATUS", "SECONDS", "FETCHED", "STORED", "NOTE")]
    for line in lines:
        status = line.status if line.status != "None" else "Skipped"
        note = line.note or (f"{line.attempts} attempts" if line.attempts > 1 else "")
        rows.append((line.name, status, f"{line.seconds:.1f}", _size(line.fetched), _size(line.stored), note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
