# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Each builds the local .venv it needs; re-running is fast when nothing changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: pyproject.toml changes reinstall, nothing else does.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[plot]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,plot]'
	touch $@

$(VENV)/.installed-lint: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[lint]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/sparseprune demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest --benchmark-disable

bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest --benchmark-only

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check sparseprune tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks sparseprune-demo sparseprune-profile
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
