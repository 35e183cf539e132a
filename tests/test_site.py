"""The docs and the spec notebooks as one static site (site.py): every page renders, in order, linked, code folded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from blocks_rt import cli, site

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DOCS = Path(__file__).resolve().parent.parent / "docs"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def external_resources(html: str) -> list[str]:
    """What a page would fetch from elsewhere: scripts, styles, images, fonts by absolute URL."""
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']((?:https?:)?//[^\"']+)", html)
    css = re.findall(r"@import\s+url\([\"']?((?:https?:)?//[^)\"']+)|url\([\"']?((?:https?:)?//[^)\"']+)", html)
    return tags + [a or b for a, b in css]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return site.build(NOTEBOOKS, tmp_path_factory.mktemp("site"), DOCS)


def doc_count() -> int:
    return len(list(DOCS.glob("*.md")))


def test_every_notebook_renders_with_its_charts_and_code_folded(built: list[Path]) -> None:
    sources = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in built[1 + doc_count():]] == [f"{s.stem}.html" for s in sources]
    for source, page in zip(sources, built[1 + doc_count():], strict=True):
        nb = nbformat.read(source, as_version=4)
        html = page.read_text()
        charts = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        soup = BeautifulSoup(html, "html.parser")
        assert len(soup.select('img[src^="data:image/png;base64,"][alt^="chart"]')) == charts, source.name
        folded = soup.select("details.code")
        assert len(folded) == sum(c.cell_type == "code" for c in nb.cells), source.name
        assert not any(d.has_attr("open") for d in folded)
        assert soup.title is not None and soup.title.string == site.title_of(nb, source).replace("`", "")
        assert external_resources(html) == [], source.name
        assert "Traceback" not in html, source.name


def test_every_docs_page_renders_in_reading_order_with_links_kept_inside_the_site(built: list[Path]) -> None:
    docs = built[1:1 + doc_count()]
    assert {p.name for p in docs} == {f"{s.stem}.html" for s in DOCS.glob("*.md")}
    assert [p.stem for p in docs][:3] == list(site.READING_ORDER[:3])  # a newcomer's order, not the alphabet's
    for page in docs:
        soup = BeautifulSoup(page.read_text(), "html.parser")
        hrefs = [a["href"] for a in soup.select("main a[href]")]
        assert not [h for h in hrefs if h.endswith(".md") or ".md#" in h or h.startswith("../")], page.name
        assert all((page.parent / h.split("#")[0]).exists() for h in hrefs if not h.startswith(("#", "http"))), page.name
        assert external_resources(page.read_text()) == [], page.name
    security = BeautifulSoup((built[0].parent / "security.html").read_text(), "html.parser")
    assert "threat-model.html" in [a["href"] for a in security.select("main a[href]")]


def test_the_index_lists_every_page_in_order_with_its_promise(built: list[Path]) -> None:
    index = built[0].read_text()
    items = BeautifulSoup(index, "html.parser").select("main li")
    assert [li.a["href"] for li in items] == [p.name for p in built[1:]]
    headings = [h.get_text().strip("¶ ") for h in BeautifulSoup(index, "html.parser").select("main h2")]
    assert headings == ["Documentation", "Notebooks"]
    for li in items[:doc_count()]:  # every docs page has a sentence of its own, not a table or list cut short
        promise = li.get_text().removeprefix(li.a.get_text() + ": ")
        assert promise[0].isupper() and promise.endswith(".") and "|" not in promise, li.a["href"]
    for li, source in zip(items[doc_count():], sorted(NOTEBOOKS.glob("*.ipynb")), strict=True):
        nb = nbformat.read(source, as_version=4)
        assert li.a.get_text() == site.title_of(nb, source).replace("`", "")
        promise = li.get_text().removeprefix(li.a.get_text() + ": ")
        assert len(promise) > 20 and promise[0].isupper() and promise.endswith("."), source.name
    assert external_resources(index) == []


def test_pages_link_to_the_previous_and_next_notebook_and_the_index(built: list[Path]) -> None:
    for n, page in enumerate(built[1:], start=1):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        links = {rel: {a["href"] for a in soup.select(f'nav.site a[rel="{rel}"]')} for rel in ("index", "prev", "next")}
        assert links["index"] == {"index.html"}
        assert links["prev"] == ({built[n - 1].name} if n > 1 else set())
        assert links["next"] == ({built[n + 1].name} if n + 1 < len(built) else set())
        assert not any("`" in a.get_text() for a in soup.select("nav.site a")), page.name  # plain titles


def test_promise_title_and_summaries_of_a_notebook(tmp_path: Path) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# 14 · Something new\n\n**Promise** (design §1): it works. And more.\n\nDetails."),
        new_code_cell("setup = 1", metadata={"tags": ["remove-cell"]}),
        new_markdown_cell("## Then: a chart"),
        new_code_cell("# NBVAL_CHECK_OUTPUT\nassert x\nassert y\ndf.plot()", outputs=[
            new_output("execute_result", data={"text/plain": "<Axes: title={'center': 'x'}>"}, execution_count=1),
            new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
        new_code_cell("secret_helper()", metadata={"tags": ["remove-input"]},
                      outputs=[new_output("stream", name="stdout", text="shown alone\n")]),
    ])
    source = tmp_path / "notebooks" / "14_new.ipynb"
    source.parent.mkdir()
    nbformat.write(nb, source)
    assert site.title_of(nb, source) == "14 · Something new"
    assert site.plain("03 · `wallet:balance_updated` and **more**") == "03 · wallet:balance_updated and more"
    assert site.promise_of(nb) == "It works."
    assert site.promise_of(new_notebook(cells=[new_markdown_cell("# T\n\nplain first line. second")])) == "Plain first line."

    index, page = site.build(source.parent, tmp_path / "out")
    html = page.read_text()
    assert "setup = 1" not in html and "secret_helper" not in html and "shown alone" in html
    assert "code ✓ its output is checked by the test suite, 2 asserts held" in html
    assert 'alt="chart: Then: a chart"' in html and "&lt;Axes" not in html
    assert "It works." in index.read_text()


def test_the_site_command_builds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(NOTEBOOKS / "03_wallet_balance_updated.ipynb", notebooks)
    cli.main(["spec", "site", str(tmp_path / "out"), "--notebooks", str(notebooks)])
    assert (tmp_path / "out" / "03_wallet_balance_updated.html").exists()
    assert f"open {(tmp_path / 'out' / 'index.html').as_uri()}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no notebooks"):
        site.build(tmp_path / "empty", tmp_path / "out2")
