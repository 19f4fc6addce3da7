#!/usr/bin/env bash
# The GPU check (benchmarks/device_check.py): on a CUDA machine, install mrsr with a CUDA build
# of torch (pip's default wheel) and run the checks, the timing table and the training-pairs
# table; under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e .
timeout 600 python benchmarks/device_check.py
# training pairs/s: loader worker vs batched degradation on the GPU, beside the paper net's need
timeout 120 python benchmarks/run.py --only loader --quick
