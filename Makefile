# Two entry points on a fresh machine: `make demo` (main job on bundled data) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test benchmark web browser

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/spacingreg demo --output output/demo

test: $(VENV)/.installed browser
	$(PY) -m pytest -q Testing

# Debian's chromium and chromedriver for the web front end's browser test (installed when running as root).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium/chromedriver missing and not root: the browser test will be skipped"; fi; \
	fi

web: $(VENV)/.installed
	$(PY) -m SpacingRegistrationWeb --host 127.0.0.1 --port 8080

benchmark: $(VENV)/.installed
	$(PY) Testing/benchmarks/bench_engine.py
	$(PY) Testing/benchmarks/bench_study.py
