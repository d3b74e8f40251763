# Two entry points on a fresh machine: `make demo` (main job on bundled data) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test benchmark

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/spacingreg demo --output output/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q Testing

benchmark: $(VENV)/.installed
	$(PY) Testing/benchmarks/bench_engine.py
	$(PY) Testing/benchmarks/bench_study.py
