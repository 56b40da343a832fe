# DMI-Rec: two commands for a new user (see README.md).
#   make demo  -- set up .venv, then run the main job on the default synthetic data
#   make test  -- set up .venv, then run the whole test suite
# Both are idempotent: the virtual environment is built once and reused while setup.py and
# constraints.txt are unchanged.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==24.2"
	$(BIN)/python -m pip install --quiet --ignore-requires-python -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/dmirec demo --out $(DEMO_DIR)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# Benchmark suite (bench/): runs the benchmarks and rewrites docs/results.md. Long; see docs/results.md.
#   make bench BENCH_ARGS="--quick"   or   BENCH_ARGS="--only serving"
BENCH_ARGS ?=

.PHONY: bench
bench: install
	$(BIN)/dmirec bench $(BENCH_ARGS)
