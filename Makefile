# make repro    — create .venv and rebuild the pipeline (dvc repro of params.yaml)
# make test     — create .venv, lint, and the fast tests: the everyday loop before a commit
# make test-all — lint and every test, the slow end-to-end ones too (what CI runs)
# make serve    — the web app on http://127.0.0.1:8000 (after make repro)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv dev-venv repro test test-all lint serve clean

# uv installs the pinned requirements in seconds where pip takes a minute or more (same
# versions: requirements*.txt pin them). `make repro` needs only requirements.txt; the test
# targets add requirements-dev.txt.
UV := uv==0.13.9

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(UV)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

dev-venv: $(VENV)/.installed-dev
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet $(UV)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-dev.txt
	touch $@

repro: venv
	$(BIN)/dvc repro

# Two test processes (pytest-xdist), a file each at a time: much of a test is Python and DVC
# starting up, one core each; a file's module fixtures (one tiny `dvc repro`) run once.
XDIST := -n 2 --dist loadfile

test: dev-venv lint
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) --durations=10

# In CI (CI=true) a test that cannot run here (no ../shared/data, Chromium or sshd) fails with
# its reason instead of skipping (tests/conftest.py).
test-all: dev-venv lint
	$(BIN)/python -m pytest -q -m "" $(XDIST) --durations=25

serve: venv
	$(BIN)/python -m stages.app.serve

lint: dev-venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
