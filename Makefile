# The two commands of the README:
#   make repro   set up everything and run the main job (dvc repro) on the embedded default
#   make test    set up everything and run the whole test suite (ruff, pytest, nbval)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test lint clean-venv

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: setup
	$(BIN)/ruff check mlb_core tests

test: setup lint
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval notebooks/teaching --nbval-sanitize-with notebooks/teaching/sanitize.cfg

clean-venv:
	rm -rf $(VENV)
