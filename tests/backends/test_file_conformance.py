"""The file:// backend passes the conformance kit every backend must pass."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget


class TestFileConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        counter = itertools.count()
        return ConformanceTarget(
            backend="file",
            new_target=lambda: f"file://{tmp_path}/store-{next(counter)}",
        )
