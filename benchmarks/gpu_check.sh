#!/usr/bin/env bash
# GPU check (at most ~8 minutes): the tests marked gpu, benchmarks.speed with a random BERT-base configuration
# for text, mhmf and mag at bf16 and fp32, one short benchmarks.run epoch; everything in OUT/gpu_check.json.
#   benchmarks/gpu_check.sh [--out DIR] [--device cuda:1]      (see benchmarks/gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu_check "$@"
