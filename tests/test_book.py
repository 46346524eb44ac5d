"""``make book``: the course as a static website (book/build.py), checked on the built pages.

The site is built once per session from the notebooks as committed (nothing is executed),
into a temporary folder. Every notebook must have a page that shows all its charts (the PNG
outputs, the explorers' last chart included) and that needs no network: no script, style or
image from another host, and no live widget (frozen to its last saved state instead).
The freezing itself is checked on small hand-made notebooks, without the book's tools.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TOOLS = ("sphinx", "myst_nb", "sphinx_book_theme")
_missing = [name for name in TOOLS if importlib.util.find_spec(name) is None]
needs_book_tools = pytest.mark.skipif(
    bool(_missing),
    reason=f"the book's tools are not installed ({', '.join(_missing)}): "
    "they come with pyproject's dev extra (make setup)",
)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site's html folder (one build per session)."""
    if _missing:
        pytest.skip(f"the book's tools are not installed: {', '.join(_missing)}")
    out = tmp_path_factory.mktemp("book")
    run = subprocess.run(
        [sys.executable, str(ROOT / "book" / "build.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        pytest.fail(f"book/build.py failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return out / "html"


# ----------------------------------------------------------------------------- what a page has
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pngs(outputs: list) -> set[str]:
    return {
        _sha(base64.b64decode("".join(out["data"]["image/png"])))
        for out in outputs
        if "image/png" in out.get("data", {})
    }


def _charts(nb: nbformat.NotebookNode) -> set[str]:
    """The notebook's charts: its PNG outputs and those of the Output widgets it displays."""
    models = nb.metadata.get("widgets", {}).get(book.WIDGET_STATE, {}).get("state", {})
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    todo = [
        out["data"][book.WIDGET_VIEW]["model_id"]
        for out in outputs
        if book.WIDGET_VIEW in out.get("data", {})
    ]
    widget_outputs, seen = [], set()
    while todo:  # the displayed widgets' trees
        state = models.get(model_id := todo.pop(), {}).get("state", {})
        if model_id in seen:
            continue
        seen.add(model_id)
        widget_outputs += state.get("outputs", [])
        todo += [c.removeprefix("IPY_MODEL_") for c in state.get("children", []) or []]
    return _pngs(outputs) | _pngs(widget_outputs)


def _page_images(page: Path) -> set[str]:
    html = page.read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    local = [page.parent / src for src in srcs if not src.startswith("data:")]
    missing = [str(path) for path in local if not path.is_file()]
    assert not missing, f"{page.name} shows images that are not in the site: {missing}"
    return {_sha(path.read_bytes()) for path in local}


@needs_book_tools
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_page_with_its_charts(site: Path, path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    page = site / f"{path.stem}.html"
    assert page.is_file(), f"no page for {path.name} in {site}"
    charts = _charts(nb)
    assert charts, f"{path.name} has no chart: the check would prove nothing"
    missing = charts - _page_images(page)
    assert not missing, (
        f"{page.name} lacks {len(missing)} of the {len(charts)} charts of {path.name}"
    )
    assert (site / "_sources" / path.name).read_bytes() == path.read_bytes(), (
        "the page's download button must offer the course's notebook, not the frozen copy"
    )
    index = (site / "index.html").read_text(encoding="utf-8")
    assert f'href="{path.stem}.html"' in index, f"index.html does not list {path.name}"


@needs_book_tools
def test_pages_need_no_network_and_no_live_widget(site: Path) -> None:
    pages = sorted(site.glob("*.html"))
    assert len(pages) > len(NOTEBOOKS)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="(?:https?:)?//[^"]*"', html)
        remote += [
            tag
            for tag in re.findall(r"<link[^>]*>", html)
            if re.search(r'href="(?:https?:)?//', tag) and "stylesheet" in tag
        ]
        assert not remote, f"{page.name} loads from the network: {remote}"
        for live in (book.WIDGET_VIEW, book.WIDGET_STATE, "embed-amd", "require.min.js"):
            assert live not in html, f"{page.name} still has a live widget ({live})"


@needs_book_tools
def test_an_explorer_shows_its_last_state_on_its_page(site: Path) -> None:
    """03's loader explorer, as saved: its settings, its last result and its chart."""
    page = (site / "03_dataset_dataloader.html").read_text(encoding="utf-8")
    frozen = page[page.index('<div class="d2lopt-frozen">') :]
    assert "num_workers" in frozen and "last measured" in frozen
    assert frozen.index("shown here as it was last saved") < frozen.index("<img")


# --------------------------------------------------------- freezing, on hand-made notebooks
def _model(name: str, **state: object) -> dict:
    return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a chart").decode()


def _notebook(models: dict, view: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    shown = {
        book.WIDGET_VIEW: {"model_id": view, "version_major": 2, "version_minor": 0},
        "text/plain": "HBox(children=(...))",
    }
    cell = nbformat.v4.new_code_cell("bar()")
    cell.outputs = [nbformat.v4.new_output("display_data", data=shown)]
    nb.cells = [cell]
    saved = {"state": models, "version_major": 2, "version_minor": 0}
    nb.metadata["widgets"] = {book.WIDGET_STATE: saved}
    return nb


def test_a_progress_bar_freezes_to_its_last_state() -> None:
    """tqdm's notebook bar: HBox(HTML prefix, FloatProgress, HTML suffix)."""
    models = {
        "bar": _model("HBoxModel", children=["IPY_MODEL_pre", "IPY_MODEL_p", "IPY_MODEL_post"]),
        "pre": _model("HTMLModel", value="ladder: 100%"),
        "p": _model("FloatProgressModel", min=0, max=25, value=25.0, description=""),
        "post": _model("HTMLModel", value=" 25/25 [00:10&lt;00:00]"),
    }
    frozen = book.freeze_widgets(_notebook(models, "bar"))
    assert "widgets" not in frozen.metadata
    (out,) = frozen.cells[0].outputs
    html = out["data"]["text/html"]
    assert list(out["data"]) == ["text/html"]
    assert "ladder: 100%" in html and "25/25" in html
    assert '<progress max="25" value="25.0">' in html


def test_an_explorer_freezes_to_its_controls_then_its_chart() -> None:
    models = {
        "ui": _model("VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_out"]),
        "row": _model("HBoxModel", children=["IPY_MODEL_n", "IPY_MODEL_bs", "IPY_MODEL_pin"]),
        "n": _model("IntSliderModel", description="num_workers", value=2),
        "bs": _model(
            "DropdownModel", description="batch_size", index=1, _options_labels=["16", "32"]
        ),
        "pin": _model("CheckboxModel", description="pin_memory", value=True),
        "out": _model(
            "OutputModel",
            outputs=[{"output_type": "display_data", "data": {"image/png": PNG}, "metadata": {}}],
        ),
    }
    nb = _notebook(models, "ui")
    frozen = book.freeze_widgets(nb)
    controls, chart = frozen.cells[0].outputs
    html = controls["data"]["text/html"]
    assert re.search(r"num_workers</span> <span[^>]*>2<", html)
    assert re.search(r"batch_size</span> <span[^>]*>32<", html)
    assert "☑" in html and "pin_memory" in html
    assert chart["data"]["image/png"] == PNG
    assert "widgets" in nb.metadata, "the original notebook is left as it was"


def test_a_widget_without_saved_state_falls_back_to_its_text() -> None:
    nb = _notebook({}, "gone")
    (out,) = book.freeze_widgets(nb).cells[0].outputs
    assert out["data"] == {"text/plain": "HBox(children=(...))"}


def test_the_table_of_contents_follows_the_notebooks_folder(tmp_path: Path) -> None:
    """A notebook added to notebooks/ gets a page; a removed one loses it."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("02_b", "01_a"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name} title")])
        nbformat.write(nb, notebooks / f"{name}.ipynb")
    src = tmp_path / "src"
    (src).mkdir()
    (src / "00_removed.ipynb").write_text("{}")
    staged = book.stage(src, notebooks)
    assert [p.name for p in staged] == ["01_a.ipynb", "02_b.ipynb"]
    assert sorted(p.name for p in src.glob("*.ipynb")) == ["01_a.ipynb", "02_b.ipynb"]
    index = (src / "index.md").read_text()
    assert index.index("\n01_a\n") < index.index("\n02_b\n")
    assert book.title(nbformat.read(notebooks / "01_a.ipynb", 4), "x") == "01_a title"


def test_make_book_builds_into_build_with_the_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"^book: \$\(STAMP\)\n\t\$\(BIN\)/python book/build.py _build$", makefile, re.M
    )
    assert re.search(r"^\.PHONY:.*\bbook\b", makefile, re.M)
    assert "/_build/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "make book" in (ROOT / "README.md").read_text()
