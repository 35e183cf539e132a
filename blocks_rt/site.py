"""`blocks-rt spec site OUT_DIR`: the spec notebooks, with their stored outputs, as a static HTML site.

Every notebook of `notebooks/` (in name order) becomes a page through nbconvert's JupyterLab HTML export:
prose, tables and charts as they were stored, each code cell folded under a one-line summary (what it
checks, when it holds asserts), links to the previous and next notebook and the index. `index.html` is
itself a notebook made here and exported the same way: each notebook's title and the one-line promise of
its first markdown cell. Nothing is executed and no page loads anything from the internet.
Cells tagged `remove-cell` are left out; `remove-input` shows a cell's outputs alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor

TEMPLATE_DIR = Path(__file__).resolve().parent / "site_template"
CHECKED_OUTPUT = "# NBVAL_CHECK_OUTPUT"


@dataclass(frozen=True)
class Page:
    """One notebook of the site."""

    source: Path
    title: str
    promise: str

    @property
    def href(self) -> str:
        return f"{self.source.stem}.html"


def _first_markdown(nb: Any) -> str:
    return next((cell.source for cell in nb.cells if cell.cell_type == "markdown"), "")


def title_of(nb: Any, source: Path) -> str:
    """The first heading of the first markdown cell (the file name if there is none), without its hashes."""
    heading = re.search(r"^#+\s+(.+)$", _first_markdown(nb), re.MULTILINE)
    return heading.group(1).strip() if heading else source.stem


def plain(title: str) -> str:
    """A markdown title as plain text (navigation links and the browser's title show no backticks)."""
    return re.sub(r"`([^`]*)`|\*\*([^*]*)\*\*", lambda m: m.group(1) or m.group(2) or "", title)


def promise_of(nb: Any) -> str:
    """The first sentence of the **Promise** paragraph of the first markdown cell, without its label.

    A notebook without one gives the first sentence of its first paragraph after the heading.
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", _first_markdown(nb)) if p.strip()]
    prose = [p for p in paragraphs if not p.startswith("#")]
    chosen = next((p for p in prose if p.startswith("**Promise**")), prose[0] if prose else "")
    text = " ".join(chosen.split())
    text = re.sub(r"^\*\*Promise\*\*\s*(\([^)]*\))?\s*:?\s*", "", text)
    sentence = re.match(r"(.+?[.!?])(\s|$)", text)
    text = sentence.group(1) if sentence else text
    return text[:1].upper() + text[1:]


def _object_repr(output: Any) -> bool:
    """A result that only says what object a chart call returned (`<Axes: ...>`): noise on a page."""
    data = output.get("data", {}) if output.output_type == "execute_result" else {}
    return set(data) == {"text/plain"} and bool(re.match(r"<[\w.]+[ :>]", data["text/plain"]))


class Summaries(Preprocessor):
    """Give each code cell the line its folded code shows (what it checks, or just "code"), its charts an alt
    text (the heading of the section they are in), and drop the reprs that chart calls leave."""

    section = ""

    def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
        if index == 0:
            self.section = ""
        heading = re.search(r"^#+\s+(.+)$", cell.source, re.MULTILINE) if cell.cell_type == "markdown" else None
        if heading:
            self.section = heading.group(1).strip()
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not _object_repr(output)]
            cell.metadata["site_alt"] = f"chart: {self.section}" if self.section else "chart"
            asserts = len(re.findall(r"^\s*assert\b", cell.source, re.MULTILINE))
            notes = []
            if CHECKED_OUTPUT in cell.source:
                notes.append("its output is checked by the test suite")
            if asserts:
                notes.append(f"{asserts} assert{'s' if asserts > 1 else ''} held")
            cell.metadata["site_summary"] = "code" + (f" ✓ {', '.join(notes)}" if notes else "")
        return cell, resources


def _exporter() -> HTMLExporter:
    exporter = HTMLExporter(template_name="lab", extra_template_basedirs=[str(TEMPLATE_DIR.parent)],
                            extra_template_paths=[str(TEMPLATE_DIR)], template_file="page.html.j2",
                            exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"remove-cell"},
                                                         remove_input_tags={"remove-input"}), enabled=True)
    exporter.register_preprocessor(Summaries(), enabled=True)
    return exporter


def _link(page: Page | None) -> dict[str, str] | None:
    return {"href": page.href, "title": plain(page.title)} if page else None


def _index(pages: list[Page]) -> Any:
    lines = ["# blocks-rt: the spec notebooks", "",
             "Each notebook runs a real gateway with real clients and shows what each user receives; the test "
             "suite runs every one of them and checks its tables and asserts. Code is folded: open it with ▸.", ""]
    lines += [f"- [{page.title}]({page.href}): {page.promise}" for page in pages]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("\n".join(lines))])
    nb.metadata["title"] = "blocks-rt spec notebooks"
    return nb


def build(notebooks: Path, out: Path) -> list[Path]:
    """Render every `notebooks/*.ipynb` and the index into `out`; returns the files written, index first."""
    sources = sorted(notebooks.glob("*.ipynb"))
    if not sources:
        raise ValueError(f"no notebooks in {notebooks}")
    books = [nbformat.read(source, as_version=4) for source in sources]
    pages = [Page(source, title_of(nb, source), promise_of(nb)) for source, nb in zip(sources, books, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    exporter = _exporter()
    index = out / "index.html"
    index.write_text(exporter.from_notebook_node(_index(pages), resources={"site": None})[0], encoding="utf-8")
    written = [index]
    for n, (page, nb) in enumerate(zip(pages, books, strict=True)):
        nb.metadata["title"] = plain(page.title)
        after = pages[n + 1] if n + 1 < len(pages) else None
        links = {"prev": _link(pages[n - 1] if n else None), "next": _link(after)}
        html, _ = exporter.from_notebook_node(nb, resources={"site": links})
        target = out / page.href
        target.write_text(html, encoding="utf-8")
        written.append(target)
    return written
