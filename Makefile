# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test workers: one test mostly waits on its servers and subprocesses (about one core's
# worth of CPU for the whole suite run serially), so two share a 2-core machine well;
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

.PHONY: demo test bench lint clean mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wansweep run configs/quickstart.yaml --report-dir demo-out

test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/run.py

# mutation testing of the money path (not part of `make test`): ~10 minutes on 2 cores
mutate: $(STAMP)
	$(BIN)/pip install --quiet "mutmut==3.8.1"
	WANSWEEP_MONEY_EXAMPLES=30 $(BIN)/mutmut run; mkdir -p mutation
	$(BIN)/python tools/mutation_report.py > mutation/REPORT.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf archive demo-out .wansweep mutants
