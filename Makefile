# make repro    — create .venv and rebuild the pipeline (dvc repro of params.yaml)
# make test     — create .venv, lint, and the fast tests: the everyday loop before a commit
# make test-all — lint and every test, the slow end-to-end ones too (what CI runs)
# make serve    — the web app on http://127.0.0.1:8000 (after make repro)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test test-all lint serve clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

repro: venv
	$(BIN)/dvc repro

# Two test processes (pytest-xdist), a file each at a time: much of a test is Python and DVC
# starting up, one core each; a file's module fixtures (one tiny `dvc repro`) run once.
XDIST := -n 2 --dist loadfile

test: venv lint
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) --durations=10

# In CI (CI=true) a test that cannot run here (no ../shared/data, Chromium or sshd) fails with
# its reason instead of skipping (tests/conftest.py).
test-all: venv lint
	$(BIN)/python -m pytest -q -m "" $(XDIST) --durations=25

serve: venv
	$(BIN)/python -m stages.app.serve

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
