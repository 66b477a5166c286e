# Two commands: `make demo` and `make test`. Both build .venv from nothing with the machine's Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# OpenMP threads sleep instead of spinning while they wait: on a shared 2-core machine spinning threads made the
# Monte Carlo tests 7x slower (195 s against 26 s measured).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test test-slow bench venv clean

venv: $(STAMP)

# torch==2.13.0 first: it installs the CPU build from local disk; an open range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# rt-utils (a PyTomography dependency) pulls in the Python 3.6 backport `dataclasses`, whose dataclasses.py in
	# site-packages shadows the standard library wherever site-packages comes first on sys.path -- as it does in
	# Prefect's local API server (uvicorn --app-dir site-packages), which then fails to start. Python 3.11 has it.
	$(PY) -m pip uninstall --quiet --yes dataclasses
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cohort-dosimetry demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
