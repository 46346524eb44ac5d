# d2lopt task runner. `make lab` and `make test` are the README's two commands: each creates
# the virtual environment first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.d2lopt-installed
# d2l 1.0.3 pins numpy==1.23.5 & co. (breaks Python >= 3.12): install it without its pins;
# pyproject's dev extra provides what it imports.
D2L    := d2l==1.0.3
# Where pip finds PyTorch. Empty: PyPI, whose Linux wheels bundle the CUDA libraries
# (several GB). Without an NVIDIA GPU, take PyTorch's CPU-only wheels instead:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (in an existing .venv: `make clean` first, or pip keeps the torch it has).
TORCH_INDEX ?=
# The learner's copy of notebooks/ that `make lab` opens (git-ignored): JupyterLab saves
# outputs into the notebooks it runs, and the committed ones must stay as they are, so
# that `git pull` never conflicts with a learner's own runs.
WORK   ?= my-notebooks
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
          --nbval-cell-timeout 900 --nbval-kernel-startup-timeout 120
# pytest-xdist workers for the test and nbval runs (JOBS=0: one process, no workers, e.g. to
# debug a test). --dist loadfile keeps each file on one worker, in order: a notebook's cells
# share one kernel as they do in JupyterLab, and a test module's module-scoped fixtures (a
# rank pool, a data folder) are built once. Two, not one per core of a big machine: the
# notebooks' timing comparisons run side by side and must not fight over the cores (their
# checked outputs are the same on any load; only nbval-ignore-output cells see it).
JOBS   ?= 2
XDIST  := -n $(JOBS) --dist loadfile
# CI-sized, deterministic runs for the targets that test or record notebooks: no progress
# bars (their last line would differ between runs), one matplotlib backend, fixed hashing.
# Target-specific, so `make lab` keeps its progress bars (tests/test_makefile.py checks it).
CHECKED := test unit browser execute-notebooks nbval nbval-emulated
$(CHECKED): export TQDM_DISABLE := 1
$(CHECKED) experiment: export MPLBACKEND := module://matplotlib_inline.backend_inline
$(CHECKED) experiment: export PYTHONHASHSEED := 0

.PHONY: setup lab test lint format unit execute-notebooks experiment browser browser-deps clean \
        gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "d2lopt needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) torch torchvision)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(D2L)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Containers and CI machines often run as root, which Jupyter refuses without this flag.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

# Command 1: the course in JupyterLab (localhost only, token authentication on), in the
# learner's working copy $(WORK)/: made from notebooks/ on first run; later runs add the
# notebooks that are new in notebooks/ and never overwrite one the learner has.
# The course's own notebooks are trusted so their stored widgets render on first open.
# jupyterlab-settings/overrides.json turns on ipywidgets' "save widget state": a notebook
# saved with a progress bar or an explorer reopens, with a new kernel, showing them as they
# were instead of "Error: widget model not found" (issue 22).
lab: $(STAMP)
	@if [ ! -d $(WORK) ]; then \
	  mkdir -p $(WORK) && cp notebooks/*.ipynb notebooks/*.py $(WORK)/ 2>/dev/null; \
	  echo "make lab: made $(WORK)/, your working copy of notebooks/ (git-ignored): run" \
	       "and edit it freely; git pull updates notebooks/ only"; \
	else \
	  for nb in notebooks/*.ipynb; do \
	    [ -e "$(WORK)/$${nb##*/}" ] || { cp "$$nb" $(WORK)/ && echo "make lab: new: $(WORK)/$${nb##*/}"; }; \
	  done; \
	  echo "make lab: opening $(WORK)/, your working copy of notebooks/ (delete a notebook" \
	       "there to get the course's version back on the next make lab)"; \
	fi
	$(BIN)/jupyter trust $(WORK)/*.ipynb
	$(BIN)/jupyter lab --ServerApp.root_dir=$(WORK) --ServerApp.ip=127.0.0.1 \
	  --LabApp.app_settings_dir=$(CURDIR)/jupyterlab-settings $(ALLOW_ROOT)

# Command 2, what a contributor reruns: lint, then the unit and end-to-end tests (the
# browser test among them) and strict nbval of every notebook on this machine, in one pytest
# run over $(JOBS) workers, so neither half waits for the other's slowest file.
# CI (.ci/run) runs this, then `make nbval-emulated`: the notebooks on emulated hardware.
test: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest tests $(NB) $(NBVAL) $(XDIST)

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
	$(BIN)/python -m pytest tests $(XDIST)

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

# Re-run one notebook at another size with papermill, into runs/ (SIZE: ci, full or gpu):
#   make experiment NB=notebooks/05_disk_to_memory.ipynb SIZE=full
# writes runs/05_disk_to_memory-full.ipynb. Without a `parameters` cell papermill would put
# SIZE above the notebook's own `SIZE = "ci"` and silently run the CI size: refuse instead.
# Progress bars stay on: papermill's cell bar is the only sign of life in a long run.
# Cells tagged raises-exception (the error demos) may raise; any other error fails the run.
SIZE ?= full
experiment: $(STAMP)
	@$(BIN)/python -c 'import os, sys, nbformat; nb = sys.argv[1]; \
	  n = sum("parameters" in c.metadata.get("tags", []) for c in nbformat.read(nb, 4).cells) \
	      if os.path.isfile(nb) else "no file"; \
	  sys.exit(None if n == 1 else f"make experiment: NB={nb} must be one notebook with one " \
	           f"cell tagged parameters (found: {n}), e.g. NB=notebooks/05_disk_to_memory.ipynb")' \
	  "$(NB)"
	mkdir -p runs
	$(BIN)/python benchmarks/run_experiment.py "$(NB)" \
	  "runs/$(basename $(notdir $(NB)))-$(SIZE).ipynb" "$(SIZE)"

# Strict nbval on the notebooks (or NB=notebooks/02_definition.ipynb), natively and on
# emulated hardware. Float results drift with the CPU's instruction set, the kernels chosen
# and the thread count: the emulated runs pin ATen's kernels, oneDNN and MKL to AVX2 and
# use 1, then 2 threads (THREADS=1: one of them; CI's workflow runs each as its own job), so
# an output that only holds on the recording machine fails here.
EMULATED_ISA := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
THREADS ?= 1 2
define NEWLINE


endef
.PHONY: nbval nbval-emulated
nbval: $(STAMP)
	$(BIN)/python -m pytest $(NB) $(NBVAL) $(XDIST)

# One recipe line per thread count (the $(NEWLINE)), so they run in turn and a failure stops.
nbval-emulated: $(STAMP)
	$(foreach t,$(THREADS),$(EMULATED_ISA) OMP_NUM_THREADS=$(t) \
	  $(BIN)/python -m pytest $(NB) $(NBVAL) $(XDIST)$(NEWLINE))

# The course as a static website (Sphinx + MyST-NB, book/): every notebook with its
# committed outputs, nothing executed, nothing downloaded; widgets shown as last saved.
# Open _build/html/index.html (_build/ is git-ignored).
.PHONY: book
book: $(STAMP)
	$(BIN)/python book/build.py _build

# Wheels for `bash benchmarks/gpu_check.sh` on an offline GPU image, downloaded here (needs
# the network, not .venv): what such an image lacks (benchmarks/gpu_wheels.txt: papermill,
# a Jupyter kernel, d2l, ...) for its Python, into $(GPU_WHEELS)/ (git-ignored, < 50 MB).
# Copy that folder into the GPU machine's checkout; the script installs from it offline.
#   make gpu-wheels [GPU_PYTHON_VERSION=3.12] [GPU_WHEELS=.gpu-wheels]
GPU_WHEELS ?= .gpu-wheels
GPU_PYTHON_VERSION ?= 3.12
gpu-wheels:
	$(PYTHON) benchmarks/gpu_check.py wheels --dest $(GPU_WHEELS) \
	  --python-version $(GPU_PYTHON_VERSION)

clean:
	rm -rf $(VENV) .pytest_cache runs
