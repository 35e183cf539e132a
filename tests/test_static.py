"""The package type-checks with mypy --strict and lints clean: checked on every run, like the behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_package_type_checks_strictly() -> None:
    result = run("mypy", "blocks_rt")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_lints_clean() -> None:
    result = run("ruff", "check", "blocks_rt", "tests", "benchmarks", "scripts", "conftest.py")
    assert result.returncode == 0, result.stdout + result.stderr
