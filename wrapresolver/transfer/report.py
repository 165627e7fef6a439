"""What a transfer did, for the one log line per workspace."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransferReport:
    workspace: str
    action: str  # "fetch", "store", "publish"
    files: int = 0
    bytes: int = 0
    layers: int = 0
    seconds: float = 0.0
    detail: str = ""
    """e.g. "from build, test (lint skipped: fell back to clone)" or "no changes"."""

    def line(self) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        text = (
            f"wrap {self.action} {self.workspace}: {self.files} files, {self.bytes} bytes, "
            f"{self.layers} layers, {self.seconds:.2f}s, {rate:.1f} MB/s"
        )
        return f"{text} ({self.detail})" if self.detail else text
