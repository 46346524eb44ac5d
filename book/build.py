"""Build the course as a static website: ``make book`` (or ``python book/build.py [OUT]``).

Learners read a course on the web before they clone it. This renders every
``notebooks/*.ipynb`` with the outputs committed in it: nothing is executed (Sphinx with
MyST-NB, ``nb_execution_mode = "off"`` in book/conf.py) and nothing is fetched from the
network, to build or to read the pages. The site lands in ``OUT/html/index.html`` (default
``_build/``, git-ignored).

Two steps:

1. *Stage* (``stage``): copy each notebook into ``OUT/src/`` with its widgets frozen
   (``freeze_widgets``) and write the table of contents (``index.md``) from the files found,
   so a notebook added to notebooks/ gets its page without editing a list.
2. *Render*: ``sphinx-build`` on ``OUT/src`` with book/conf.py.

Why freeze the widgets: a saved notebook keeps its progress bars and explorers
(ipywidgets) as a widget-view output plus the widgets' last state in the notebook's
metadata (issue 22, ``make lab`` saves it). Rendering them live in a page needs the
widgets' JavaScript from a CDN, and without it (offline) a reader gets an empty box or
"widget model not found". Frozen, each widget shows its last state as plain HTML: a
slider as its description and value, a progress bar as a ``<progress>`` element, an
``HTML`` widget as its HTML, and an ``Output`` widget's stored outputs (the explorer's
last chart) as ordinary outputs of the cell. A widget whose state was not saved falls back
to the text the kernel stored with it (``text/plain``).
"""

from __future__ import annotations

import argparse
import copy
import html
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
FROZEN_NOTE = (
    '<div class="d2lopt-frozen-note">Interactive in JupyterLab (<code>make lab</code>); '
    "shown here as it was last saved.</div>"
)


# ----------------------------------------------------------------------------- frozen widgets
def _ref(value: object) -> str | None:
    """The model id a widget's state refers to (``"IPY_MODEL_<id>"``), else None."""
    if isinstance(value, str) and value.startswith("IPY_MODEL_"):
        return value[len("IPY_MODEL_") :]
    return None


def _label(state: dict) -> str:
    desc = state.get("description") or ""
    return f'<span class="d2lopt-w-label">{html.escape(desc)}</span> ' if desc else ""


def _value_text(state: dict) -> str:
    """A control's shown value: the selected option's label for selections, else the value."""
    labels = state.get("_options_labels")
    if labels is not None:
        index = state.get("index")
        if isinstance(index, int) and 0 <= index < len(labels):
            return str(labels[index])
        if isinstance(index, list | tuple):  # multiple selection
            return ", ".join(str(labels[i]) for i in index if 0 <= i < len(labels))
        return ""
    value = state.get("value")
    if isinstance(value, list | tuple):  # range sliders
        return " – ".join(str(v) for v in value)
    return "" if value is None else str(value)


class _Freezer:
    """Renders one widget tree from a notebook's saved state into static HTML."""

    def __init__(self, models: dict) -> None:
        self.models = models
        self.outputs: list[dict] = []  # the Output widgets' stored outputs, in tree order

    def render(self, model_id: str, depth: int = 0) -> str:
        model = self.models.get(model_id)
        if model is None or depth > 50:
            return ""
        name = model.get("model_name", "")
        state = model.get("state", {})
        if name == "OutputModel":
            for out in state.get("outputs", []):
                self.outputs.extend(freeze_output(out, self.models))
            return ""
        children = [_ref(c) for c in state.get("children", []) or []]
        if children:
            titles = state.get("titles") or []
            parts = []
            for i, child in enumerate(children):
                inner = self.render(child, depth + 1) if child else ""
                if i < len(titles) and titles[i]:  # Tab, Accordion
                    inner = f"<div><b>{html.escape(str(titles[i]))}</b></div>{inner}"
                if inner:
                    parts.append(inner)
            kind = "row" if name.startswith("HBox") else "column"
            return f'<div class="d2lopt-w-box d2lopt-w-{kind}">{"".join(parts)}</div>'
        if name in ("HTMLModel", "HTMLMathModel"):  # the kernel wrote this HTML itself
            return f'<div class="d2lopt-w-html">{_label(state)}{state.get("value", "")}</div>'
        if name.endswith("ProgressModel"):
            lo, hi, value = state.get("min", 0), state.get("max", 100), state.get("value", 0)
            return (
                f'<span class="d2lopt-w-control">{_label(state)}<progress '
                f'max="{hi - lo}" value="{value - lo}"></progress></span>'
            )
        if name in ("ButtonModel", "ToggleButtonModel"):
            text = html.escape(state.get("description") or "")
            return f'<button class="d2lopt-w-button" disabled>{text}</button>'
        if name in ("CheckboxModel", "ValidModel"):
            mark = "☑" if state.get("value") else "☐"
            return f'<span class="d2lopt-w-control">{mark} {_label(state)}</span>'
        if "value" in state or "_options_labels" in state:  # sliders, dropdowns, texts
            value = html.escape(_value_text(state))
            return (
                f'<span class="d2lopt-w-control">{_label(state)}'
                f'<span class="d2lopt-w-value">{value}</span></span>'
            )
        return ""  # layouts, styles: nothing to show


def freeze_output(output: dict, models: dict) -> list[dict]:
    """``output`` with its widget view, if any, replaced by static outputs (see module doc).

    Returns the outputs that take its place: itself when it holds no widget; the frozen
    widget's HTML followed by its ``Output`` widgets' stored outputs when its state was saved;
    its ``text/plain`` fallback alone when not (nothing if it has none).
    """
    data = output.get("data") or {}
    if WIDGET_VIEW not in data:
        return [output]
    model_id = data[WIDGET_VIEW].get("model_id", "")
    rest = {k: v for k, v in data.items() if k != WIDGET_VIEW}
    if model_id not in models:
        if "text/plain" not in rest:
            return []
        return [{**output, "data": {"text/plain": rest["text/plain"]}}]
    freezer = _Freezer(models)
    body = freezer.render(model_id)
    frozen = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"text/html": f'<div class="d2lopt-frozen">{body}{FROZEN_NOTE}</div>'},
    }
    return [frozen, *freezer.outputs]


def freeze_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose widgets show their last saved state as static outputs.

    The widget state is dropped from the copy's metadata, so no page asks for the widgets'
    JavaScript.
    """
    nb = copy.deepcopy(nb)
    saved = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {})
    models = saved.get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            outputs = [o for out in cell.outputs for o in freeze_output(out, models)]
            cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return nb


# ----------------------------------------------------------------------------------- staging
def title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The notebook's first Markdown heading (its title in the table of contents)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


INDEX = """\
# d2lopt — make PyTorch training fast, and prove it

A notebook course: every lesson asks a question about training speed, measures the answer
and ends with a verdict computed from that measurement. These pages show each notebook with
the outputs it was recorded with (on a CPU, as CI runs them). To run the lessons on your own
hardware, clone the repository and run `make lab`; explorers and progress bars are
interactive there.

```{{toctree}}
:maxdepth: 1
:caption: Lessons

{entries}
```
"""


def _write_if_changed(path: Path, text: str) -> None:
    """Leave an unchanged file alone, so that Sphinx re-renders only what changed."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def stage(src: Path, notebooks: Path = NOTEBOOKS) -> list[Path]:
    """Write the site's sources into ``src``: the frozen notebooks and index.md.

    Returns the staged notebooks, sorted by name (the order of the table of contents).
    Staged notebooks whose original is gone are removed.
    """
    src.mkdir(parents=True, exist_ok=True)
    paths = sorted(notebooks.glob("*.ipynb"))
    if not paths:
        raise SystemExit(f"book: no notebooks in {notebooks}")
    entries = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        _write_if_changed(src / path.name, nbformat.writes(freeze_widgets(nb)) + "\n")
        entries.append(path.stem)
        print(f"book: {path.name}: {title(nb, path.stem)}")
    for old in set(src.glob("*.ipynb")) - {src / p.name for p in paths}:
        old.unlink()
    _write_if_changed(src / "index.md", INDEX.format(entries="\n".join(entries)))
    return [src / p.name for p in paths]


def build(out: Path, notebooks: Path = NOTEBOOKS) -> Path:
    """Stage and render the site into ``out``; return the folder holding index.html."""
    out = out.resolve()
    start = time.perf_counter()
    stage(out / "src", notebooks)
    html_dir = out / "html"
    # short options: Sphinx < 7.3 has no long ones
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(CONF_DIR)]
    cmd += ["-d", str(out / "doctrees"), str(out / "src")]
    subprocess.run([*cmd, str(html_dir)], check=True)
    # A page's download button offers its source: the course's notebook, not the frozen copy.
    for path in sorted(notebooks.glob("*.ipynb")):
        shutil.copyfile(path, html_dir / "_sources" / path.name)
    took = time.perf_counter() - start
    print(f"book: built {html_dir / 'index.html'} in {took:.0f} s (open it in a browser)")
    return html_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "_build"), type=Path)
    args = parser.parse_args(argv)
    missing = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme") if not find_spec(m)]
    if missing:
        sys.exit(
            f"book: {', '.join(missing)} not installed: they come with the dev extra "
            "(make setup, or pip install -e '.[dev]')"
        )
    try:
        build(args.out)
    except subprocess.CalledProcessError as err:
        sys.exit(f"book: sphinx-build failed (exit {err.returncode}); see its messages above")


if __name__ == "__main__":
    main()
