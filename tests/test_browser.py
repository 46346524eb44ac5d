"""The course as a learner sees it: JupyterLab in a real headless Chromium (issue 8, item 4).

A real JupyterLab server (127.0.0.1, token on) serves a temporary copy of ``notebooks/``;
Chromium, driven by Playwright, opens every course notebook one after another and checks that
every cell and every stored output renders, that no JavaScript error occurs, that stored
ipywidgets render once the learner trusts the notebook, and that a cell run through the UI
prints its result. With a live kernel it then drives the widgets as a learner does (issue 15):
in the loader explorers of 03 and 05 it runs only the cells the explorer needs, moves two
sliders, clicks **measure** and reads the new chart's setting; in 04 it watches the live loss
curve redraw while training runs. Screenshots of every step land in ``test-artifacts/browser/``
(git-ignored).

The browser is the system's Chromium (Debian ``chromium`` or ``chromium-headless-shell``,
or ``$D2LOPT_CHROMIUM``), never one downloaded by ``playwright install``;
``tests/browser/ensure_chromium.sh`` installs it (``make test`` runs it first).
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

from d2lopt.measure import setting_label

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts" / "browser"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# No network in CI and none needed: every background service that would phone home is off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers' 64 MB /dev/shm crashes renderers; use /tmp
]
# Settings JupyterLab reads from ``overrides.json`` of its application settings folder:
# the course's own (what `make lab` gives the learner), then the test's.
COURSE_LAB_SETTINGS = REPO / "jupyterlab-settings" / "overrides.json"
LAB_OVERRIDES = {
    **json.loads(COURSE_LAB_SETTINGS.read_text()),
    # JupyterLab 4 attaches only the cells near the viewport by default; a test that checks
    # every cell needs them all in the DOM.
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    # no news feed, no update check: both would fetch from the internet
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"},
    # the UI test edits a notebook and must not write it back
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}
SERVER_START_S = 120
RENDER_TIMEOUT_S = 60
KERNEL_TIMEOUT_S = 120
# Generous: a cell of the CI-sized notebooks takes seconds, but CI's 2 cores may be loaded.
CELL_TIMEOUT_S = 300
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen
# What JupyterLab draws in place of an output it failed to render.
RENDER_FAILURES = ("No renderer could be found", "Error displaying widget", "Javascript Error")

# Snapshot of the notebook on screen: every cell with what it rendered.
SNAPSHOT_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText);
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => {
    const kind = c.classList.contains('jp-CodeCell') ? 'code'
      : c.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw';
    const md = c.querySelector('.jp-MarkdownOutput');
    const area = c.querySelector('.jp-Cell-outputArea');
    const outputs = area ? [...area.querySelectorAll(':scope > .jp-OutputArea-child')].map(o => {
      const out = o.querySelector('.jp-OutputArea-output');
      return {
        mime: out ? out.getAttribute('data-mime-type') : null,
        text: out ? out.innerText : '',
        images: [...o.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0)
          .length + o.querySelectorAll('svg').length,
        widgets: o.querySelectorAll('.jupyter-widgets').length,
      };
    }) : [];
    const input = c.querySelector('.jp-InputArea-editor');
    return {kind, input: input ? input.innerText : '', markdown: md ? md.innerText : null,
            outputs};
  });
  return {cells, dialogs};
}"""
# The prompt of every cell of the notebook on screen ("[ ]:", "[*]:", "[3]:").
PROMPTS_JS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')]
  .map(c => c.querySelector('.jp-InputPrompt'))
  .map(p => p ? p.innerText.trim() : '')"""
# Error outputs (tracebacks) of one cell, from the notebook model: in the DOM an error looks
# like a stderr stream, which is allowed (e.g. the offline data set's one-line notice).
CELL_ERRORS_JS = """(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  return cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
    .map(o => `${o.ename}: ${o.evalue}`);
}"""


# ------------------------------------------------------------------------- what is expected
def course_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _normalize(text: str) -> str:
    """Text as a browser shows it: ANSI colours gone, ``\\r`` overwrites applied, spaces folded."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return " ".join(" ".join(lines).replace("\xa0", " ").split())


def _lines(text: str) -> list[str]:
    return [n for n in (_normalize(line) for line in text.split("\n")) if n]


def expected_outputs(cell: Any) -> list[dict[str, Any]]:
    """The output children JupyterLab draws for ``cell``: consecutive same-name streams merge."""
    merged: list[dict[str, Any]] = []
    for out in cell.get("outputs", []):
        if (
            out["output_type"] == "stream"
            and merged
            and merged[-1]["output_type"] == "stream"
            and merged[-1]["name"] == out["name"]
        ):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + out["text"]}
        else:
            merged.append(dict(out))
    return merged


def outputs_hidden(cell: Any) -> bool:
    meta = cell.get("metadata", {})
    return bool(meta.get("collapsed") or meta.get("jupyter", {}).get("outputs_hidden"))


def output_problem(expected: dict[str, Any], shown: dict[str, Any]) -> str | None:
    """Why ``shown`` (from :data:`SNAPSHOT_JS`) does not render ``expected``, or ``None``."""
    text = _normalize(shown["text"])
    if any(failure in text for failure in RENDER_FAILURES):
        return f"JupyterLab shows {text[:160]!r}"
    kind = expected["output_type"]
    if kind == "stream":
        mime = f"application/vnd.jupyter.{expected['name']}"
        if shown["mime"] != mime:
            return f"{expected['name']} stream rendered as {shown['mime']}"
        lines = _lines(expected["text"])
        for line in lines[:1] + lines[-1:]:
            if line not in text:
                return f"{expected['name']} text {line[:60]!r} not visible"
        return None
    if kind == "error":
        return None if expected["ename"] in text else f"error {expected['ename']} not visible"
    data = expected.get("data", {})
    if any(m.startswith("image/") for m in data):
        return None if shown["images"] else "stored image not displayed"
    if set(data) == {"text/plain"}:
        lines = _lines("".join(data["text/plain"]))
        return None if not lines or lines[0] in text else f"text {lines[0][:60]!r} not visible"
    if text or shown["widgets"]:  # HTML, markdown, LaTeX, widget fallbacks...
        return None
    return f"rich output ({', '.join(sorted(data))}) rendered empty"


def notebook_problems(nb: Any, snapshot: dict[str, Any] | None) -> list[str]:
    """Everything about the rendered ``snapshot`` that differs from the stored notebook."""
    if snapshot is None:
        return ["no notebook panel on screen"]
    problems = [f"dialog open: {d.strip()[:200]!r}" for d in snapshot["dialogs"]]
    cells = snapshot["cells"]
    kinds = [c.cell_type for c in nb.cells]
    if [c["kind"] for c in cells] != kinds:
        return problems + [f"{len(cells)} cells rendered, notebook has {len(kinds)}"]
    for i, (cell, shown) in enumerate(zip(nb.cells, cells, strict=True)):
        where = f"cell {i} ({cell.cell_type})"
        if cell.cell_type == "markdown":
            if cell.source.strip() and not (shown["markdown"] or "").strip():
                problems.append(f"{where}: markdown not rendered")
            continue
        if cell.cell_type != "code" or outputs_hidden(cell):
            continue  # collapsed outputs are drawn on request only
        wanted = expected_outputs(cell)
        if len(shown["outputs"]) != len(wanted):
            problems.append(
                f"{where}: {len(shown['outputs'])} outputs rendered, {len(wanted)} stored"
            )
            continue
        for j, (exp, out) in enumerate(zip(wanted, shown["outputs"], strict=True)):
            problem = output_problem(exp, out)
            if problem:
                problems.append(f"{where} output {j}: {problem}")
    return problems


def stored_widget_views(nb: Any) -> list[tuple[int, int, str]]:
    """``(cell, output, model_id)`` of every stored ipywidgets view in ``nb``."""
    views = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for j, out in enumerate(expected_outputs(cell)):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view:
                views.append((i, j, view["model_id"]))
    return views


# ------------------------------------------------------------- which cells a cell needs
class _CellNames(ast.NodeVisitor):
    """The names a cell binds at its top level, and the names it reads before binding them.

    Function bodies, lambdas and comprehensions have their own locals: a name read there
    counts only when it is not local. Assignments are visited value first, so
    ``SIZE = f(SIZE)`` reads ``SIZE`` from an earlier cell.
    """

    def __init__(self) -> None:
        self.defined: set[str] = set()
        self.read: set[str] = set()
        self._scopes: list[set[str]] = []  # locals of the enclosing functions

    def _bind(self, name: str) -> None:
        (self._scopes[-1] if self._scopes else self.defined).add(name)

    def _in_scope(self, local: set[str], nodes: list[Any]) -> None:
        self._scopes.append(local)
        for node in nodes:
            self.visit(node)
        self._scopes.pop()

    @staticmethod
    def _stored(nodes: list[Any]) -> set[str]:
        return {
            n.id
            for node in nodes
            for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._bind(node.id)
        elif not any(node.id in scope for scope in self._scopes) and node.id not in self.defined:
            self.read.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.visit(ast.Name(node.target.id, ast.Load()))  # x += 1 reads x first
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for child in node.body + node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._bind(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind(alias.asname or alias.name)

    def _function(self, node: Any, body: list[Any]) -> None:
        for expr in [*node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        args = node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        local = {a.arg for a in params if a is not None} | self._stored(body)
        self._in_scope(local, body)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._bind(node.name)
        self._function(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases]:
            self.visit(expr)
        self._bind(node.name)
        self._in_scope(self._stored(node.body), node.body)

    def _comprehension(self, node: Any, results: list[Any]) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        local = self._stored([g.target for g in node.generators])
        rest = [node.generators[0].target, *node.generators[0].ifs]
        for g in node.generators[1:]:
            rest += [g.iter, g.target, *g.ifs]
        self._in_scope(local, rest + results)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def cell_names(source: str) -> tuple[set[str], set[str]]:
    """``(defined, read)`` of a code cell: what it binds, what it needs from earlier cells.

    IPython lines (``%magic``, ``!shell``) count as ``pass``; a cell that is not Python
    (``%%writefile`` ...) binds and reads nothing.
    """
    lines = []
    for line in source.splitlines():
        code = line.lstrip()
        lines.append(line[: len(line) - len(code)] + "pass" if code[:1] in ("%", "!") else line)
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set(), set()
    names = _CellNames()
    names.visit(tree)
    return names.defined, names.read - set(dir(builtins))


def cells_needed(nb: Any, target: int) -> list[int]:
    """Indices of the code cells to run, in order, so that cell ``target`` has every name it
    reads: the last earlier cell that binds a needed name, then what that cell needs, and so
    on. Cells meant to raise (``raises-exception``) never qualify."""
    _, needed = cell_names(nb.cells[target].source)
    chosen = [target]
    for i in range(target - 1, -1, -1):
        cell = nb.cells[i]
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        defined, read = cell_names(cell.source)
        if defined & needed:
            chosen.append(i)
            needed = (needed - defined) | read
    return sorted(chosen)


def find_cell(nb: Any, pattern: str) -> int:
    """Index of the first code cell whose source matches the regular expression."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(pattern, cell.source):
            return i
    raise AssertionError(f"no code cell matches {pattern!r}")


# ------------------------------------------------------------------------- server, browser
def find_chromium() -> str | None:
    """The system Chromium: ``$D2LOPT_CHROMIUM``, else Debian's headless shell or browser."""
    for name in (os.environ.get("D2LOPT_CHROMIUM"), "chromium-headless-shell", "chromium"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab server and what the tests need to talk to it."""

    base: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path}{sep}token={self.token}"

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base}/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def notebooks(self) -> list[Path]:
        """The served copies of the course notebooks."""
        return sorted(self.root.glob("*.ipynb"))

    def stop_kernels(self) -> None:
        """Shut down every kernel the last notebook started, so they do not pile up."""
        for session in self.api("GET", "api/sessions"):
            self.api("DELETE", f"api/sessions/{session['id']}")

    def kernel_problems(self, name: str) -> list[str]:
        """Why the kernel of notebook ``name`` is not yet running with the page connected."""
        sessions = [s for s in self.api("GET", "api/sessions") if s["path"] == name]
        if not sessions:
            return [f"no kernel session for {name}"]
        kernel = sessions[0]["kernel"]
        if kernel["execution_state"] != "idle" or kernel["connections"] < 1:
            return [f"kernel {kernel['execution_state']}, {kernel['connections']} connections"]
        return []

    def errors(self) -> list[str]:
        """The error lines the server has logged so far."""
        return [line for line in self.log.read_text().splitlines() if line.startswith("[E ")]


def _start_lab(tmp: Path) -> Lab:
    root = tmp / "notebooks"  # a copy: nothing the browser does can touch tracked files
    root.mkdir()
    for nb in course_notebooks():
        shutil.copy2(nb, root / nb.name)
    app_settings = tmp / "lab-app-settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=2))
    # Isolate the server from the developer's own Jupyter/IPython state and keep it from
    # writing into $HOME: config, data (notebook-signing key), runtime, user settings,
    # workspaces. The environment's own kernels and extensions stay on the search path.
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "user-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ):
        env[var] = str(tmp / sub)
    port, token = _free_port(), secrets.token_hex(24)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # the port we picked, or fail: never another one
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={app_settings}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # window.jupyterapp: the live tests read a cell's outputs from the notebook model,
        # the only place where an error output differs from a stderr stream
        "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "jupyter-server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, process, log)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode}; see {log}")
        try:
            lab.api("GET", "api/status")
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    process.kill()
    pytest.fail(f"JupyterLab did not answer /api/status within {SERVER_START_S} s; see {log}")


def _stop_lab(lab: Lab) -> None:
    """Shut down as a user's Ctrl+C would (kernels first), and insist that it worked."""
    try:
        lab.api("POST", "api/shutdown")
        code = lab.process.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        lab.process.kill()
        lab.process.wait()
        pytest.fail(f"JupyterLab did not shut down cleanly ({exc!r}); see {lab.log}")
    assert code == 0, f"JupyterLab exited with {code} on shutdown; see {lab.log}"


@dataclass
class Browser:
    """One Chromium page reused for every notebook, with the errors it reported."""

    page: Any
    lab: Lab
    errors: list[str] = field(default_factory=list)

    def open(self, name: str) -> None:
        """Open ``name`` the way a bookmark would, in a fresh workspace, kernels of the last
        notebook shut down first."""
        self.page.goto("about:blank")
        self.lab.stop_kernels()
        self.errors.clear()
        self.page.goto(self.lab.url(f"lab/tree/{quote(name)}?reset"))

    def snapshot(self) -> dict[str, Any] | None:
        return self.page.evaluate(SNAPSHOT_JS)

    def wait_until(self, problems: Callable[[], list[str]], timeout: float) -> list[str]:
        """Poll until ``problems()`` is empty; return the last problems otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = problems()
            if not found or time.monotonic() > deadline:
                return found
            self.page.wait_for_timeout(250)

    def run_command(self, label: str, name: str) -> None:
        """Run a JupyterLab command the way a user does: select a cell, open the command
        palette (Ctrl+Shift+C), type its label, press Enter; screenshot ``name`` on failure.

        A loaded machine can finish laying out the notebook after the first click and take
        the keyboard focus with it, so the shortcut is tried up to three times.
        """
        palette = self.page.locator(".lm-CommandPalette-input")
        for _ in range(3):
            self.page.locator(f"{PANEL} .jp-InputPrompt").first.click()
            self.page.keyboard.press("Control+Shift+C")
            try:
                palette.wait_for(state="visible", timeout=10_000)
                break
            except PlaywrightTimeoutError:
                continue
        else:
            self.screenshot(name)
            pytest.fail(f"Ctrl+Shift+C did not open the command palette; see {name}.png")
        palette.fill(label)
        self.page.keyboard.press("Enter")

    def cell(self, index: int) -> Any:
        """The ``index``-th cell of the notebook on screen (every cell is in the DOM)."""
        return self.page.locator(f"{PANEL} .jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        return _normalize(self.cell(index).locator(".jp-InputPrompt").inner_text())

    def clear_outputs(self, name: str) -> None:
        """ "Clear Outputs of All Cells": outputs and execution counts go, so that a cell's
        number in the prompt (``[3]:``) can only come from a run in this kernel."""
        self.run_command("Clear Outputs of All Cells", name)
        problems = self.wait_until(
            lambda: [p for p in self.page.evaluate(PROMPTS_JS) if p not in ("", "[ ]:")],
            RENDER_TIMEOUT_S,
        )
        if problems:
            self.screenshot(name)
            pytest.fail(f"outputs not cleared, prompts {problems[:5]}; see {name}.png")

    def start_cell(self, index: int, name: str) -> None:
        """Run cell ``index`` as a learner does: click its prompt (selects it, command
        mode), press Ctrl+Enter (run, stay). A loaded machine can swallow the key while it
        lays out the page: pressed again (at most three times) while the prompt shows that
        nothing started."""
        prompt = self.cell(index).locator(".jp-InputPrompt")
        for _ in range(3):
            prompt.click()
            self.page.keyboard.press("Control+Enter")
            if not self.wait_until(
                lambda: ["not started"] if self.prompt(index) == "[ ]:" else [], 10
            ):
                return
        self.screenshot(name)
        pytest.fail(f"Ctrl+Enter did not start cell {index}; see {name}.png")

    def finish_cell(self, index: int, name: str, timeout: float = CELL_TIMEOUT_S) -> None:
        """Wait until cell ``index`` has run (its prompt shows a number) without an error."""

        def problems() -> list[str]:
            prompt = self.prompt(index)
            return [] if re.fullmatch(r"\[\d+\]:", prompt) else [f"prompt {prompt!r}"]

        found = self.wait_until(problems, timeout)
        found += [f"error output {e}" for e in self.page.evaluate(CELL_ERRORS_JS, index)]
        if found:
            self.screenshot(name)
            pytest.fail(f"cell {index} did not run cleanly: {found}; see {name}.png")

    def run_cell(self, index: int, name: str) -> None:
        self.start_cell(index, name)
        self.finish_cell(index, name)

    def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def _console_error(message: Any) -> str | None:
    """A console message that is a JavaScript error worth failing for, as text.

    Every ``console.error`` counts: with JupyterLab 4.6 and Chromium 156 loading the course
    logs none, so there is no known-benign noise to filter. A filter added here must say
    which message it drops and why that message is harmless.
    """
    if message.type != "error":
        return None
    return f"console.error: {message.text}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not course_notebooks():
        pytest.fail(f"no notebooks in {NOTEBOOKS}: nothing to open in the browser")
    server = _start_lab(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        _stop_lab(server)


@pytest.fixture(scope="module")
def browser(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "no Chromium found: run `sh tests/browser/ensure_chromium.sh` (Debian: installs the "
            "`chromium` package) or set D2LOPT_CHROMIUM=/path/to/chromium; deselect with "
            "-m 'not browser'. Never `playwright install`: it downloads a browser."
        )
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()  # screenshots of this run only
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # empty user data dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(RENDER_TIMEOUT_S * 1000)
        state = Browser(page, lab)
        page.on("pageerror", lambda exc: state.errors.append(f"uncaught: {exc}"))
        page.on("crash", lambda _: state.errors.append("page crashed"))

        def on_console(message: Any) -> None:
            error = _console_error(message)
            if error:
                state.errors.append(error)

        def on_dialog(dialog: Any) -> None:
            # Leaving an edited notebook asks "leave the page?": yes. Anything else
            # (alert/confirm/prompt) is unexpected UI and counts as an error.
            if dialog.type != "beforeunload":
                state.errors.append(f"unexpected {dialog.type} dialog: {dialog.message}")
            dialog.accept()

        page.on("console", on_console)
        page.on("dialog", on_dialog)
        try:
            yield state
        finally:
            context.close()


def _open_and_check(browser: Browser, path: Path) -> Any:
    """Open the course notebook ``path`` and wait until it renders as stored."""
    # compare with the served copy: the course's file may be re-executed meanwhile
    nb = nbformat.read(browser.lab.root / path.name, as_version=4)
    browser.open(path.name)
    problems = browser.wait_until(
        lambda: notebook_problems(nb, browser.snapshot()), RENDER_TIMEOUT_S
    )
    if not problems:  # the learner's next step is running a cell: the kernel must be up
        kernel = browser.lab.kernel_problems
        problems = browser.wait_until(lambda: kernel(path.name), KERNEL_TIMEOUT_S)
    browser.screenshot(path.stem)
    assert not problems, f"{path.name} does not open as stored:\n" + "\n".join(problems)
    return nb


# ------------------------------------------------------------------------------------ tests
def test_course_has_notebooks() -> None:
    assert course_notebooks(), f"no notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_notebook_renders(browser: Browser, path: Path) -> None:
    """Every cell, every stored output, no JavaScript error."""
    _open_and_check(browser, path)
    browser.page.wait_for_timeout(500)  # late errors of the load (e.g. async renderers)
    assert not browser.errors, f"JavaScript errors in {path.name}:\n" + "\n".join(browser.errors)


def test_stored_widgets_render(browser: Browser) -> None:
    """The notebooks' ipywidgets controls render once the learner trusts the notebook.

    JupyterLab shows stored widgets of an *untrusted* notebook (every freshly cloned one) as
    their text fallback; "Trust Notebook" in the command palette re-renders them from the
    widget state nbclient saved in the notebook's metadata.
    """
    served = browser.lab.notebooks()
    views_of = {p: stored_widget_views(nbformat.read(p, as_version=4)) for p in served}
    with_widgets = [(p, views) for p, views in views_of.items() if views]
    assert with_widgets, (
        "no course notebook stores an ipywidgets output: issue 8 asks for widget controls "
        "(e.g. in 03_dataset_dataloader and 05_disk_to_memory), executed and committed with "
        "their widget state"
    )
    page = browser.page
    for path, views in with_widgets:
        nb = _open_and_check(browser, path)
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        missing = [f"cell {i}" for i, _, model in views if model not in state]
        assert not missing, (
            f"{path.name}: widget views without stored widget state ({', '.join(missing)}): "
            "a trusted notebook would show 'Error displaying widget'; re-execute it with "
            "`make execute-notebooks` (nbclient stores the state)"
        )
        browser.run_command("Trust Notebook", f"trust-{path.stem}")
        page.get_by_role("button", name="Confirm Trusting this notebook").click()

        def widget_problems(views: list[tuple[int, int, str]] = views) -> list[str]:
            cells = browser.snapshot()["cells"]
            found = []
            for i, j, _ in views:
                out = cells[i]["outputs"][j]
                if not out["widgets"] or "Error displaying widget" in out["text"]:
                    found.append(f"cell {i} output {j}: {out['text'][:120]!r}")
            return found

        problems = browser.wait_until(widget_problems, KERNEL_TIMEOUT_S)
        page.locator(f"{PANEL} .jp-Cell").nth(views[0][0]).scroll_into_view_if_needed()
        browser.screenshot(f"widgets-{path.stem}")
        assert not problems, f"{path.name}: widgets not rendered after trusting:\n" + "\n".join(
            problems
        )
        assert not browser.errors, f"JavaScript errors in {path.name}:\n" + "\n".join(
            browser.errors
        )


def test_run_cell_through_ui(browser: Browser) -> None:
    """A learner adds a cell, types code, presses Shift+Enter and sees the result: the whole
    path browser -> server -> kernel -> browser works, including a live widget."""
    paths = browser.lab.notebooks()
    path = next((p for p in paths if p.name.startswith("01_")), paths[0])
    before = path.read_bytes()
    nb = _open_and_check(browser, path)
    page = browser.page
    cells = page.locator(f"{PANEL} .jp-Cell")
    n = len(nb.cells)

    def cell_outputs(code: str) -> list[dict[str, Any]] | None:
        """Outputs of the cell whose input is ``code`` (None while there is none)."""
        for cell in browser.snapshot()["cells"]:
            if _normalize(cell["input"]) == _normalize(code):
                return cell["outputs"]
        return None

    printing = "print(6 * 7)"
    cells.nth(n - 1).locator(".jp-InputPrompt").click()  # select the last cell...
    page.keyboard.press("Escape")  # ...in command mode
    page.keyboard.press("b")  # insert a cell below (the documented shortcut)
    page.keyboard.press("Enter")  # edit it
    page.keyboard.insert_text(printing)  # typed text, no auto-closing of brackets
    page.keyboard.press("Shift+Enter")  # run; on the last cell this adds an empty cell below

    def print_problems() -> list[str]:
        outputs = cell_outputs(printing)
        printed = None if outputs is None else [o["text"].strip() for o in outputs]
        if printed != ["42"]:
            return [f"{printing} shows {printed}"]
        if cells.count() != n + 2:
            return [f"{cells.count()} cells; Shift+Enter should leave an empty one below"]
        return []

    problems = browser.wait_until(print_problems, KERNEL_TIMEOUT_S)
    assert not problems, f"running a cell in {path.name} through the UI:\n" + "\n".join(problems)

    # the new empty cell is in edit mode: type a live widget into it, as a learner would
    slider_code = "import ipywidgets; ipywidgets.IntSlider(value=42, description='answer')"
    page.keyboard.insert_text(slider_code)
    page.keyboard.press("Shift+Enter")

    def run_problems() -> list[str]:
        outputs = cell_outputs(slider_code)
        if not outputs or not outputs[0]["widgets"]:
            return [f"live IntSlider not rendered: {outputs}"]
        return []

    problems = browser.wait_until(run_problems, KERNEL_TIMEOUT_S)
    slider = page.locator(f"{PANEL} .widget-slider").last
    if slider.count():
        slider.scroll_into_view_if_needed()
    browser.screenshot(f"run-cell-{path.stem}")
    assert not problems, f"running cells in {path.name} through the UI:\n" + "\n".join(problems)
    assert page.locator(".widget-readout").last.inner_text().strip() == "42"
    assert not browser.errors, "JavaScript errors:\n" + "\n".join(browser.errors)
    assert path.read_bytes() == before, "the UI test saved the notebook; it must not"


# ----------------------------------------------------------- live kernel: widgets that teach
CELL_JS = "document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')"
# A short fingerprint of a (base64 PNG) string: whether a chart image changed.
HASH_JS = "const hash = s => [...s].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7);"
# The chart of the explorer in cell ``index``: fingerprint and pixel height of its image.
EXPLORER_CHART_JS = f"""(index) => {{
  {HASH_JS}
  const img = {CELL_JS}[index].querySelector('.d2lopt-explorer .widget-output img');
  if (!img || !img.complete || !img.naturalWidth) return null;
  return {{hash: hash(img.src), height: img.naturalHeight}};
}}"""
# The layout of the explorer's chart, read from its pixels (it is a PNG): the horizontal
# extent of the bars (matplotlib's tab:blue and tab:orange), the axes' right spine (the
# column with the most dark pixels right of the bars, over the bars' rows) and the dark
# (text) pixels beyond it, where a value label written past the axes would be (issue 22).
CHART_LAYOUT_JS = f"""(index) => {{
  const img = {CELL_JS}[index].querySelector('.d2lopt-explorer .widget-output img');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const W = img.naturalWidth, H = img.naturalHeight;
  const canvas = document.createElement('canvas');
  canvas.width = W; canvas.height = H;
  const g = canvas.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, W, H).data;
  const at = (x, y) => [d[4 * (y * W + x)], d[4 * (y * W + x) + 1], d[4 * (y * W + x) + 2]];
  const near = (p, c) => Math.abs(p[0] - c[0]) + Math.abs(p[1] - c[1]) + Math.abs(p[2] - c[2]) < 40;
  const bar = p => near(p, [31, 119, 180]) || near(p, [255, 127, 14]);
  let left = W, right = -1, top = H, bottom = -1;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (bar(at(x, y))) {{
    left = Math.min(left, x); right = Math.max(right, x);
    top = Math.min(top, y); bottom = Math.max(bottom, y);
  }}
  if (right < 0) return {{width: W, bars: false}};
  const dark = [];
  for (let x = right + 1; x < W; x++) {{
    let n = 0;
    for (let y = top; y <= bottom; y++) if (Math.max(...at(x, y)) < 100) n++;
    dark.push(n);
  }}
  const spine = dark.indexOf(Math.max(...dark));
  const beyond = dark.slice(spine + 2).reduce((a, b) => a + b, 0);
  return {{width: W, bars: true, share: (right - left + 1) / W, beyond}};
}}"""
# Labels of the explorer's controls whose text does not fit ("num_work…").
CUT_LABELS_JS = f"""(index) => [...{CELL_JS}[index].querySelectorAll(
  '.d2lopt-explorer .widget-label, .d2lopt-explorer .widget-label-basic')]
  .filter(l => l.innerText.trim() && l.scrollWidth > l.clientWidth + 1)
  .map(l => `${{l.innerText.trim()}} (${{l.clientWidth}} of ${{l.scrollWidth}} px)`)"""
# Records every state the explorer's button passes through; a DOM observer sees even a
# state that lasts a few milliseconds, so the busy state is checked without racing it.
WATCH_BUTTON_JS = f"""(index) => {{
  const box = {CELL_JS}[index].querySelector('.d2lopt-explorer');
  const seen = window.__d2loptButton = [];
  const record = () => box.querySelectorAll('button').forEach(b => {{
    const state = `${{b.disabled ? 'disabled' : 'enabled'}}: ${{b.innerText.trim()}}`;
    if (seen[seen.length - 1] !== state) seen.push(state);
  }});
  record();
  new MutationObserver(record).observe(box, {{subtree: true, childList: true,
    attributes: true, characterData: true}});
}}"""
# Records every distinct image the output area of cell ``index`` shows, whether the cell
# was still running when it appeared, and the most images shown at once.
WATCH_IMAGES_JS = f"""(index) => {{
  {HASH_JS}
  const cell = {CELL_JS}[index];
  const area = cell.querySelector('.jp-Cell-outputArea');
  const log = window.__d2loptImages = {{images: [], running: [], most: 0}};
  const record = () => {{
    const imgs = area.querySelectorAll('img');
    log.most = Math.max(log.most, imgs.length);
    for (const img of imgs) {{
      const h = hash(img.src);
      if (img.src && !log.images.includes(h)) {{
        log.images.push(h);
        log.running.push(cell.querySelector('.jp-InputPrompt').innerText.includes('*'));
      }}
    }}
  }};
  new MutationObserver(record).observe(area, {{subtree: true, childList: true,
    attributes: true, attributeFilter: ['src']}});
}}"""


def _settings(label: str) -> dict[str, str]:
    """``"num_workers=2, prefetch_factor=4"`` -> ``{"num_workers": "2", ...}``."""
    return dict(item.split("=", 1) for item in label.split(", "))


def _set_slider(browser: Browser, control: Any, target: int, name: str) -> str:
    """Move a slider with the keyboard, as a learner can: focus its handle, press the arrow
    keys until the readout shows ``target``; return what the readout shows."""
    handle, readout = control.locator(".noUi-handle"), control.locator(".widget-readout")
    handle.focus()
    for _ in range(32):
        shown = int(readout.inner_text())
        if shown == target:
            break
        handle.press("ArrowRight" if shown < target else "ArrowLeft")
        browser.wait_until(
            lambda s=shown: ["readout unchanged"] if int(readout.inner_text()) == s else [], 10
        )
    else:
        browser.screenshot(name)
        pytest.fail(f"slider stuck at {readout.inner_text()!r}, wanted {target}; see {name}.png")
    return readout.inner_text().strip()


def _run_up_to(browser: Browser, nb: Any, target: int, shot: str) -> list[int]:
    """Clear the outputs, then run, in a fresh kernel, only the cells that ``target``
    needs (found from the names they bind and read), ``target`` not included."""
    cells = cells_needed(nb, target)
    browser.clear_outputs(f"{shot}-clear")
    for i in cells[:-1]:
        browser.run_cell(i, f"{shot}-cell{i}")
    return cells


@pytest.mark.parametrize("stem", ["03_dataset_dataloader", "05_disk_to_memory"])
def test_loader_explorer_measures_the_chosen_setting(browser: Browser, stem: str) -> None:
    """Issue 15: with a live kernel, move the ``num_workers`` and ``prefetch_factor``
    sliders of the loader explorer, click **measure**, and read the new chart's setting.

    The explorer (``d2lopt.plot.explore``) writes the settings of its last bar in a status
    line next to the button (the chart itself is a PNG); the new chart must also be taller
    by one bar. Only the cells the explorer needs run: imports, parameters, the data set.
    """
    # a fresh copy of the course's file: test_stored_widgets_render trusted the served one in
    # the page, and with the course's lab settings (saveState) its widgets' state travels
    # with that open document; a learner's copy is opened fresh (make lab trusts it first)
    path = browser.lab.root / f"live-{stem}.ipynb"
    shutil.copy2(NOTEBOOKS / f"{stem}.ipynb", path)
    nb = _open_and_check(browser, path)
    try:
        target = find_cell(nb, r"\bexplore\(")
    except AssertionError:
        pytest.fail(
            f"{path.name}: no cell builds its loader explorer with d2lopt.plot.explore(...), "
            "which gives the learner a busy state, full slider labels and a status line "
            "with the measured setting (issue 15)"
        )
    shot = f"live-{stem}"
    cells = _run_up_to(browser, nb, target, shot)
    browser.screenshot(f"{shot}-1-setup-ran")
    browser.run_cell(target, f"{shot}-explorer")
    explorer = browser.cell(target).locator(".d2lopt-explorer")
    status = explorer.locator(".d2lopt-explorer-status")
    problems = browser.wait_until(
        lambda: [] if browser.page.evaluate(EXPLORER_CHART_JS, target) else ["no chart yet"],
        KERNEL_TIMEOUT_S,
    )
    explorer.scroll_into_view_if_needed()
    browser.screenshot(f"{shot}-2-explorer")
    assert not problems, f"{path.name}: the explorer shows no chart; see {shot}-2-explorer.png"
    assert status.inner_text().startswith("last measured:"), status.inner_text()
    cut = browser.page.evaluate(CUT_LABELS_JS, target)
    assert not cut, f"{path.name}: explorer labels cut off: {cut}"

    # the status line names the controls in order: keyword i is control i
    first = _settings(status.locator("code").inner_text())
    controls = explorer.locator(":scope > .widget-hbox").first.locator(":scope > .jupyter-widgets")
    assert controls.count() == len(first), f"{controls.count()} controls for {first}"
    wanted = dict(first)
    for keyword, value in (("num_workers", 1), ("prefetch_factor", 4)):
        assert keyword in first, f"{path.name}: the explorer has no {keyword} control: {first}"
        control = controls.nth(list(first).index(keyword))
        wanted[keyword] = _set_slider(browser, control, value, f"{shot}-{keyword}")
    assert (wanted["num_workers"], wanted["prefetch_factor"]) == ("1", "4")
    browser.screenshot(f"{shot}-3-sliders-moved")

    before = browser.page.evaluate(EXPLORER_CHART_JS, target)
    browser.page.evaluate(WATCH_BUTTON_JS, target)
    explorer.locator("button").click()
    expected = setting_label(wanted)

    def measured() -> list[str]:
        shown = status.inner_text()
        chart = browser.page.evaluate(EXPLORER_CHART_JS, target)
        if not shown.startswith("last measured:") or expected not in shown:
            return [f"status line: {shown!r}"]
        if chart is None or chart["hash"] == before["hash"]:
            return ["the chart was not redrawn"]
        return []

    problems = browser.wait_until(measured, CELL_TIMEOUT_S)
    explorer.scroll_into_view_if_needed()
    browser.screenshot(f"{shot}-4-measured")
    assert not problems, f"{path.name}: after measure: {problems}; see {shot}-4-measured.png"
    assert status.locator("code").inner_text() == expected  # the new bar's label
    after = browser.page.evaluate(EXPLORER_CHART_JS, target)
    assert after["height"] > before["height"], "the chart did not grow by one bar"
    # issue 22: the bars get most of the width (the setting labels took 70 % of it, the
    # bars ~150 px of 800) and every value label stays inside the axes
    layout = browser.page.evaluate(CHART_LAYOUT_JS, target)
    assert layout["bars"], f"{path.name}: no bars found in the chart: {layout}"
    assert layout["share"] >= 0.35, f"{path.name}: the longest bar spans {layout}"
    assert layout["beyond"] == 0, f"{path.name}: text right of the axes: {layout}"
    states = browser.page.evaluate("() => window.__d2loptButton")
    assert "disabled: measuring…" in states, f"no busy state while measuring: {states}"
    assert states[-1] == "enabled: measure", f"button not back after measuring: {states}"
    errors = [e for i in cells for e in browser.page.evaluate(CELL_ERRORS_JS, i)]
    errors += explorer.locator(".widget-output [data-mime-type$='stderr']").all_inner_texts()
    assert not errors, f"{path.name}: kernel errors: {errors}"
    assert not browser.lab.kernel_problems(path.name), browser.lab.kernel_problems(path.name)
    assert not browser.errors, f"JavaScript errors in {path.name}:\n" + "\n".join(browser.errors)


def test_live_loss_plot_updates_while_training(browser: Browser) -> None:
    """Issue 15: in 04 the live loss curve redraws, in place, while the loop trains.

    The article's loop cell runs in a live kernel (after only the cells it needs); a DOM
    observer records every image its output shows: the first epoch's plot and at least two
    updates must appear while the cell is still running, never two plots at once.
    """
    path = browser.lab.root / "04_training_loop.ipynb"
    nb = _open_and_check(browser, path)
    target = find_cell(nb, r"LiveLossPlot\(")
    shot = "live-04_training_loop"
    cells = _run_up_to(browser, nb, target, shot)
    browser.screenshot(f"{shot}-1-setup-ran")
    browser.page.evaluate(WATCH_IMAGES_JS, target)
    browser.start_cell(target, f"{shot}-loop")
    log = "() => window.__d2loptImages"
    browser.wait_until(  # a screenshot of the plot mid-training, when the machine allows
        lambda: [] if len(browser.page.evaluate(log)["images"]) >= 2 else ["wait"],
        CELL_TIMEOUT_S,
    )
    browser.cell(target).locator(".jp-Cell-outputArea").scroll_into_view_if_needed()
    browser.screenshot(f"{shot}-2-training")
    browser.finish_cell(target, f"{shot}-loop")
    browser.cell(target).locator(".jp-Cell-outputArea").scroll_into_view_if_needed()
    browser.screenshot(f"{shot}-3-trained")
    images = browser.page.evaluate(log)
    updates_while_running = sum(images["running"][1:])  # the first image is the display
    assert updates_while_running >= 2, f"live plot updated {updates_while_running}x: {images}"
    assert images["most"] == 1, f"the plot was drawn again instead of updated: {images}"
    errors = [e for i in cells for e in browser.page.evaluate(CELL_ERRORS_JS, i)]
    assert not errors, f"{path.name}: kernel errors: {errors}"
    assert not browser.lab.kernel_problems(path.name), browser.lab.kernel_problems(path.name)
    assert not browser.errors, f"JavaScript errors in {path.name}:\n" + "\n".join(browser.errors)


# A notebook of one cell that displays a widget, as a progress bar in a notebook does.
WIDGET_NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "bar", "metadata": {},
               "outputs": [], "source": "import ipywidgets\nipywidgets.IntProgress(value=3)"}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}  # fmt: skip
SHOWN_WIDGET = f"{PANEL} .jp-Cell-outputArea .jupyter-widgets"
SAVE_JS = "async () => { await window.jupyterapp.commands.execute('docmanager:save'); }"
RESTART_JS = """async () => {
  await window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart();
}"""


def test_a_saved_widget_reopens_after_a_kernel_restart(browser: Browser) -> None:
    """Issue 22: a notebook saved with a widget (a progress bar of ``fit``, an explorer)
    reopens with a new kernel showing it, with no "Error: widget model not found" in the
    console: `make lab`'s settings (``jupyterlab-settings/overrides.json``) save the widget
    state with the notebook, as this server's do."""
    name = "zz_widget_state.ipynb"
    path = browser.lab.root / name
    path.write_text(json.dumps(WIDGET_NOTEBOOK))
    try:
        browser.open(name)
        problems = browser.wait_until(lambda: browser.lab.kernel_problems(name), KERNEL_TIMEOUT_S)
        assert not problems, problems
        browser.run_cell(0, "widget-state-1-run")
        browser.page.wait_for_selector(SHOWN_WIDGET)
        browser.page.evaluate(SAVE_JS)
        saved = browser.wait_until(
            lambda: [] if WIDGET_STATE in json.loads(path.read_text())["metadata"].get(
                "widgets", {}) else ["no widget state saved"],
            RENDER_TIMEOUT_S,
        )  # fmt: skip
        assert not saved, f"{name}: JupyterLab saved no widget state: {saved}"
        browser.page.evaluate(RESTART_JS)  # the models of the old kernel are gone
        browser.errors.clear()
        browser.page.reload()
        shown = browser.wait_until(
            lambda: [] if browser.page.locator(SHOWN_WIDGET).count()
            else ["no widget"], RENDER_TIMEOUT_S,
        )  # fmt: skip
        browser.page.wait_for_timeout(3000)  # get_model gives up after 2 s: let it try
        browser.screenshot("widget-state-2-reopened")
        assert not shown, f"{name}: the saved widget is not shown after a restart"
        assert not browser.errors, "JavaScript errors:\n" + "\n".join(browser.errors)
    finally:
        browser.lab.stop_kernels()
        path.unlink(missing_ok=True)


def test_server_logged_no_errors(lab: Lab, browser: Browser) -> None:
    """Everything the browser did was served without a server-side error (runs last)."""
    errors = lab.errors()
    assert not errors, f"JupyterLab logged errors (see {lab.log}):\n" + "\n".join(errors[:20])
