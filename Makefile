# Two entry points (see README): `make run` (the headline sweep) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: install run test lint bench clean chunking reproduce docs wheel-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,ray,minari,hf]"

run: install
	$(BIN)/ntp-bench sweep --preset quick --out runs/quick

test: install
	$(BIN)/ruff check .
	PYTHON=$(PYTHON) bash .ci/wheel_check.sh
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The wheel, installed into a fresh venv outside the checkout, runs `ntp-bench` (part of test)
wheel-check:
	PYTHON=$(PYTHON) bash .ci/wheel_check.sh

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

chunking: install
	$(BIN)/ntp-bench reproduce --profile full --only chunking --out runs/chunking

# Every experiment of a profile (default cpu), every claim checked: runs/reproduce-cpu/report.md
PROFILE ?= cpu
reproduce: install
	$(BIN)/ntp-bench reproduce --profile $(PROFILE)

# The same, then publish to docs/results/$(PROFILE)/ and regenerate the README/docs blocks
docs: install
	$(BIN)/ntp-bench reproduce --profile $(PROFILE) --update-readme

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
