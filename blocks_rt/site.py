"""`blocks-rt spec site OUT_DIR`: the documentation pages and the spec notebooks, with their stored outputs, as one
static HTML site with one navigation (the docs first, in reading order, then the notebooks).

Every page of `docs/` is a notebook of one markdown cell made here (links to other pages point to their HTML), and
every notebook of `notebooks/` (in name order) becomes a page through nbconvert's JupyterLab HTML export:
prose, tables and charts as they were stored, each code cell folded under a one-line summary (what it
checks, when it holds asserts), links to the previous and next page and the index. `index.html` is itself a
notebook made here and exported the same way: each page's title and the one-line promise of its first markdown
cell, under "Documentation" and "Notebooks". Nothing is executed and no page loads anything from the internet.
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
# The order a newcomer reads docs/ in; a page not named here follows, in name order.
READING_ORDER = ("contract", "events", "delivery-guarantees", "security", "threat-model", "multi-node", "outbox",
                 "notebooks", "admin-ui", "engine", "performance", "development")


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
    prose = [p for p in paragraphs if not p.startswith(("#", "|", "-", "```"))]  # not a heading, table, list or code
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


def _index(docs: list[Page], notebooks: list[Page]) -> Any:
    lines = ["# blocks-rt: the spec", ""]
    if docs:
        lines += ["## Documentation", ""] + [f"- [{page.title}]({page.href}): {page.promise}" for page in docs]
        lines += [""]
    lines += ["## Notebooks", "",
              "Each notebook runs a real gateway with real clients and shows what each user receives; the test "
              "suite runs every one of them and checks its tables and asserts. Code is folded: open it with ▸.", ""]
    lines += [f"- [{page.title}]({page.href}): {page.promise}" for page in notebooks]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("\n".join(lines))])
    nb.metadata["title"] = "blocks-rt spec"
    return nb


def _doc_order(source: Path) -> tuple[int, str]:
    stem = source.stem
    return (READING_ORDER.index(stem) if stem in READING_ORDER else len(READING_ORDER), stem)


def doc_notebook(text: str) -> Any:
    """A docs/ page as a notebook of one markdown cell: links to other pages point to their HTML page, and links
    out of docs/ (to the repository's files, which the site does not carry) become the path as text."""
    text = re.sub(r"\]\(([\w.-]+)\.md(#[^)]*)?\)", lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", text)
    text = re.sub(r"\[([^\]]+)\]\(\.\./([^)#]+)[^)]*\)", lambda m: f"{m.group(1)} (`{m.group(2)}` in the repository)",
                  text)
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])


def build(notebooks: Path, out: Path, docs: Path | None = None) -> list[Path]:
    """Render the index, every `docs/*.md` (when `docs` is given) and every `notebooks/*.ipynb` into `out`;
    returns the files written, index first, then the pages in navigation order."""
    sources = sorted(notebooks.glob("*.ipynb"))
    if not sources:
        raise ValueError(f"no notebooks in {notebooks}")
    doc_sources = sorted(docs.glob("*.md"), key=_doc_order) if docs else []
    books = [doc_notebook(source.read_text()) for source in doc_sources]
    books += [nbformat.read(source, as_version=4) for source in sources]
    every = doc_sources + sources
    pages = [Page(source, title_of(nb, source), promise_of(nb)) for source, nb in zip(every, books, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    exporter = _exporter()
    index = out / "index.html"
    index_nb = _index(pages[:len(doc_sources)], pages[len(doc_sources):])
    index.write_text(exporter.from_notebook_node(index_nb, resources={"site": None})[0], encoding="utf-8")
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
