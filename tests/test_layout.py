"""The README's module table matches the package: a newcomer finds every module there, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table_names() -> set[str]:
    """The module and subpackage names in the first column of the README's module table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| module | role |", 1)[1].split("\n\n", 1)[0]
    return {name for row in table.splitlines()[2:] for name in re.findall(r"`([\w/]+(?:\.py)?)`", row.split("|")[1])}


def test_the_module_table_names_every_module_and_subpackage_and_only_those() -> None:
    package = ROOT / "blocks_rt"
    tree = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    tree |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    assert table_names() == tree
