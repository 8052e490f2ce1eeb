# Two entry points (see README): `make run` (the headline sweep) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: install run test lint bench clean chunking

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,ray,minari]"

run: install
	$(BIN)/ntp-bench sweep --preset quick --out runs/quick

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

chunking: install
	$(BIN)/python -m evaluation.chunking_experiment --out runs/chunking

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
