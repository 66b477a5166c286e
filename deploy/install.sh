#!/bin/sh
# Install cohort-dosimetry into a Python environment: the one recipe that `make` (.venv) and deploy/Dockerfile (the
# image) both run, so the two cannot drift apart.
#
#   deploy/install.sh PYTHON PACKAGE...      e.g.  deploy/install.sh .venv/bin/python -e '.[dev]'
#
# 1. pip itself, upgraded.
# 2. torch==2.13.0 first: from the default index it is the CPU build, installed from local disk in seconds; an open
#    range installed first would pull a multi-GB CUDA build. For GPU images set TORCH_INDEX_URL to a CUDA wheel index
#    your site mirrors (same version, CUDA build).
# 3. The project (PACKAGE..., passed to pip as given), with a torch range that 2.13.0 already satisfies.
# 4. rt-utils (a PyTomography dependency) pulls in the Python 3.6 backport `dataclasses`, whose dataclasses.py in
#    site-packages shadows the standard library wherever site-packages comes first on sys.path -- as it does in
#    Prefect's local API server (uvicorn --app-dir site-packages), which then fails to start. Python 3.11 has it: the
#    backport is removed.
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: deploy/install.sh PYTHON PACKAGE...   (e.g. deploy/install.sh .venv/bin/python -e '.[dev]')" >&2
    exit 2
fi
python=$1
shift
torch_spec="torch==2.13.0"

"$python" -m pip install --quiet --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$python" -m pip install --quiet --index-url "$TORCH_INDEX_URL" "$torch_spec"
else
    "$python" -m pip install --quiet "$torch_spec"
fi
"$python" -m pip install --quiet "$@"
"$python" -m pip uninstall --quiet --yes dataclasses
