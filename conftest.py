"""For tests and notebooks alike: kernels keep their state inside the repo and draw charts inline.

`scripts/run_notebooks.py` loads this file too, so nbval (CI) and the runner (regenerating outputs)
start kernels in the same environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blocks_rt.testing.nodes import redis_available

CACHE = Path(__file__).resolve().parent / ".cache"


def kernel_environment() -> None:
    """Jupyter, IPython and matplotlib state under .cache/; no MPLBACKEND (Agg would make charts vanish)."""
    for var, sub in (("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
        os.environ.setdefault(var, str(CACHE / sub))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    os.environ.pop("MPLBACKEND", None)


kernel_environment()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The multi-node notebook needs a real Redis: skipped where none can be had, never on CI."""
    if redis_available() or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="no redis-server binary and no REDIS_URL")
    for item in items:
        if item.path.name.startswith("12_multi_node"):
            item.add_marker(skip)
