# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dlsec-installed

.PHONY: demo test lint bench-env bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dlsec evaluate --demo --report reports/demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

# Peer libraries for benchmarks/ (run by hand, never by CI): see the bench extra in pyproject.toml.
bench-env: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) -m pip install -q -c constraints.txt --no-deps torchattacks==3.5.1 pyautoattack==0.2.0

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
