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

.PHONY: demo test test-slow lint bench gpu-check validation venv clean

venv: $(STAMP)

# deploy/install.sh is the one install recipe, shared with deploy/Dockerfile: torch==2.13.0 first (the CPU build from
# local disk; an open range would pull a multi-GB CUDA build), then the project, then the `dataclasses` backport out.
$(STAMP): pyproject.toml deploy/install.sh
	$(PYTHON) -m venv $(VENV)
	sh deploy/install.sh $(PY) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cohort-dosimetry demo

test: $(STAMP)
	$(PY) -m pytest -q

# ruff (lint and format), import-linter (the layers in pyproject.toml), mypy (the typed package). `.ci/run` runs it
# before `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check cohort_dosimetry flows tests bench
	$(VENV)/bin/ruff format --check cohort_dosimetry flows tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# On a GPU machine: the CUDA tests and the 42-scan cohort on its GPUs, one Dask worker per GPU; timings and peak GPU
# memory printed and written to bench/results/gpu_check.json (about 5 minutes on one H100). Without CUDA it says so
# and exits 0.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

# The scientific evidence in docs/validation (README, CSVs, figures): kernels against published S-values, the
# homogeneous limit, DVK against Monte Carlo, the CNN against DVK on held-out virtual patients (about 40 minutes on
# 2 CPU cores).
validation: $(STAMP)
	$(VENV)/bin/cohort-dosimetry validate-science --out docs/validation

clean:
	rm -rf $(VENV) .pytest_cache
