# d2lopt task runner. `make lab` and `make test` are the README's two commands: each creates
# the virtual environment first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.d2lopt-installed
# d2l 1.0.3 pins numpy==1.23.5 & co. (breaks Python >= 3.12): install it without its pins;
# pyproject's dev extra provides what it imports.
D2L    := d2l==1.0.3
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
          --nbval-cell-timeout 900 --nbval-kernel-startup-timeout 120
# CI-sized, deterministic notebook runs: no progress bars, one matplotlib backend.
export TQDM_DISABLE := 1
export MPLBACKEND := module://matplotlib_inline.backend_inline
export PYTHONHASHSEED := 0

.PHONY: setup lab test lint format unit execute-notebooks browser browser-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "d2lopt needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(D2L)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Containers and CI machines often run as root, which Jupyter refuses without this flag.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

# Command 1: the course in JupyterLab (localhost only, token authentication on).
# The course's own notebooks are trusted so their stored widgets render on first open.
lab: $(STAMP)
	$(BIN)/jupyter trust notebooks/*.ipynb
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 $(ALLOW_ROOT)

# Command 2: every check CI runs.
test: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest tests notebooks $(NBVAL)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The browser test drives the system's Chromium (never a downloaded one): install Debian's
# `chromium` when none is present (as root or with passwordless sudo).
browser-deps:
	sh tests/browser/ensure_chromium.sh

unit: $(STAMP)
	$(BIN)/python -m pytest tests

browser: $(STAMP) browser-deps
	$(BIN)/python -m pytest tests/test_browser.py

# Re-execute notebooks in place with the CI configuration (commit the result).
# Usage: make execute-notebooks [NB=notebooks/03_dataset_dataloader.ipynb]
NB ?= notebooks/*.ipynb
execute-notebooks: $(STAMP)
	for nb in $(NB); do \
	  (cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	     --ExecutePreprocessor.timeout=900 $$(basename $$nb)) || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache runs
