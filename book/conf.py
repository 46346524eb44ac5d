"""Sphinx configuration of the course's website (``make book``; see book/build.py).

The sources are the staged notebooks in ``_build/src`` (widgets frozen, index.md written
from the files found); this folder only holds the configuration and its stylesheet.
"""

from pathlib import Path

project = "d2lopt"
author = "the d2lopt authors"
copyright = "the d2lopt authors"

extensions = ["myst_nb"]
# Render the outputs committed with each notebook: never execute one (a build needs no
# kernel, no torch, no data), never fetch anything.
nb_execution_mode = "off"
# MyST-NB would load the widgets' JavaScript from a CDN on a page with widgets; the staged
# notebooks carry none (their widgets are frozen into HTML), and this makes sure of it.
nb_ipywidgets_js: dict = {}
# Markdown headings in a lesson may skip a level (### under #): not worth a warning here.
suppress_warnings = ["myst.header"]
exclude_patterns = ["**/.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_title = "d2lopt: make PyTorch training fast, and prove it"
html_static_path = [str(Path(__file__).resolve().parent / "_static")]
html_css_files = ["frozen-widgets.css"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,  # the notebook itself, from the page
}
html_show_sourcelink = False
