"""Re-execute the spec notebooks and save their outputs (the references nbval compares in CI).

    .venv/bin/python scripts/run_notebooks.py                 # every notebooks/*.ipynb
    .venv/bin/python scripts/run_notebooks.py 03 07_reward    # those whose name starts with a prefix

CI never runs this: it only checks (`pytest`). Run it on purpose after a change to a flow, and review
the diff of the checked cells before committing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _kernel_environment() -> None:
    """The same environment nbval's kernels get (the repository's conftest.py)."""
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def execute(path: Path, timeout: float) -> float:
    """Run every cell of `path` in a fresh python3 kernel and write the outputs back; returns seconds.

    A notebook with a failing cell is left untouched (its committed outputs stay the reference).
    """
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, kernel_name="python3", timeout=timeout, record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.monotonic() - started
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="only notebooks whose file name starts with one of these")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per cell (default 120)")
    args = parser.parse_args(argv)
    _kernel_environment()
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb"))
             if not args.prefixes or any(p.name.startswith(prefix) for prefix in args.prefixes)]
    if not paths:
        parser.error("no notebook matches")
    total, failed = 0.0, []
    for path in paths:
        try:
            elapsed = execute(path, args.timeout)
        except CellExecutionError as exc:
            failed.append(path.name)
            print(f"{path.name:<45} FAILED, not saved\n{exc}", flush=True)
            continue
        total += elapsed
        print(f"{path.name:<45} {elapsed:6.1f} s", flush=True)
    print(f"{'all':<45} {total:6.1f} s" + (f", {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
