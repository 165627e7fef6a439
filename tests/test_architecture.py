"""The pure core stays pure: import-linter checks the contract written in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_core_modules_import_no_cluster_network_or_data_path_code():
    command = shutil.which("lint-imports") or f"{Path(sys.executable).parent}/lint-imports"
    result = subprocess.run([command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
