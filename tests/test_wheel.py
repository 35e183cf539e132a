"""The built wheel works on its own: installed (not editable) into a fresh virtual environment, `blocks-rt demo`
runs with no configuration, on the demo data that ships inside the package.

Offline and fast: the wheel is built without build isolation (setuptools and wheel are dev dependencies), and
the fresh environment reuses this one's installed dependencies through a .pth file instead of downloading them;
only the wheel itself is installed into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_installed_in_a_fresh_venv_runs_the_demo_on_its_packaged_data(tmp_path: Path) -> None:
    # Built from a copy: setuptools builds in the source tree, and a stale build/ there could leak into the wheel.
    source, dist = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(ROOT / "blocks_rt", source / "blocks_rt", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", dist, source, cwd=tmp_path)
    [wheel] = dist.glob("blocks_rt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"blocks_rt/reference/data/{n}.json" for n in ("users", "wallets", "properties", "investments")} <= names
    assert {f"blocks_rt/web/{n}" for n in ("index.html", "app.js", "app.css")} <= names  # `demo --web` needs no Node
    assert not any(name.startswith(("tests/", "notebooks/", "data/")) for name in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout.strip())
    # This environment's dependencies, not its blocks_rt: the editable install's finder is a .pth of its own,
    # and .pth files inside a directory named by a .pth are not read.
    (site / "reused-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=tmp_path)

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BLOCKS_RT_", "PYTHON", "VIRTUAL_ENV"))}
    where = run(python, "-c", "import blocks_rt.settings as s; print(s.__file__); print(s.DATA_DIR)",
                cwd=tmp_path, env=clean).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the installed copy, not the checkout

    done = run(env_dir / "bin" / "blocks-rt", "demo", cwd=tmp_path, env=clean)
    steps = [line for line in done.stdout.splitlines() if line.startswith("* ")]
    assert len(steps) == 5
    assert any(line.split()[:3] == ["usr_amira", "<-", "wallet:balance_updated"] for line in done.stdout.splitlines())
    assert "not set: created development values in" in done.stderr  # in the working folder, readable by its owner
