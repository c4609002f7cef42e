# hashmesh — every target sets up its own .venv from pyproject.toml.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
PYTHON ?= python3

.PHONY: test lint types unit fuzz demo bench clean vectors test-min sim

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: lint types unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q -n 6

fuzz: $(STAMP)
	HASHMESH_FUZZ_DEPTH=1 $(VENV)/bin/pytest -q -n 2 tests/protocol tests/node/test_store_crash.py \
	  tests/node/test_store.py tests/node/test_video.py

# Simulated federations (tests/sim): RUNS random seeds across every fault scenario; prints
# each failing seed with the command that replays it (and its trace).
RUNS ?= 2000
sim: $(STAMP)
	$(PY) tests/sim/run.py --runs $(RUNS) --jobs 2

# The lowest versions pyproject.toml allows, installed exactly, in a venv of their own.
test-min:
	rm -rf .venv-min && $(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install --quiet --upgrade pip
	.venv-min/bin/python -m pip install --quiet -e '.[test]' $$($(PYTHON) scripts/min_requirements.py)
	.venv-min/bin/pytest -q -n 4 -p no:cacheprovider \
	  --deselect tests/test_readme.py::test_cli_reference_block_is_current  # click renders help its own way

demo: $(STAMP)
	$(VENV)/bin/hashmesh demo

vectors: $(STAMP)
	$(PY) scripts/generate_vectors.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-min build *.egg-info .mypy_cache .pytest_cache .ruff_cache
