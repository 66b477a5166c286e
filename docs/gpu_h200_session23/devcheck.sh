#!/bin/bash
# Device check (not committed): the CUDA tests, then the benchmarks with CUDA rows. Output also under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.whl/stub:$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch,numpy,scipy,xarray;print('torch',torch.__version__,'cuda',torch.version.cuda,torch.cuda.get_device_name(),'numpy',numpy.__version__,'scipy',scipy.__version__,'xarray',xarray.__version__)"; } 2>&1 | tee $OUT/env.txt
date +%T; timeout 200 python3 -m pytest -p no:cacheprovider -k cuda tests/physics tests/model tests/phantoms tests/test_dose.py --ignore=tests/phantoms/test_dicom_export.py -rA --durations=20 2>&1 | tee $OUT/pytest.txt | grep -E "PASS|FAIL|ERROR|Error|assert|passed|failed|s call" 
date +%T; timeout 120 python3 bench/cnn.py --device cuda --baseline-slices 32 2>&1 | tee $OUT/bench_cnn.txt
date +%T; timeout 90 python3 bench/train.py --slices 256 --threads 2 2>&1 | tee $OUT/bench_train.txt
date +%T; timeout 150 python3 bench/mc.py --decays 500000 2>&1 | tee $OUT/bench_mc.txt
date +%T
