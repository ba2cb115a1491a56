#!/usr/bin/env bash
# The one-hour recipe in minivit and then in PyTorch + timm (benchmarks/torch_cifar.py), one after
# the other on an otherwise idle machine, the same day. Each run's files are copied beside this
# script as hour_<DAY>/ and torch_<DAY>/; run.json (minivit) and metrics.json's "run" (PyTorch)
# record the machine, BLAS, environment and start/end times; the log holds `date -u` around each.
#   bash experiments/cifar10_hour/twin.sh [DAY] [TORCH_PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../.."
DAY=${1:-$(date -u +%F)}
TORCH_PY=${2:-/work/benchvenv/bin/python}
bash experiments/cifar10_hour/variant.sh hour_$DAY  # the recipe unchanged: its files in hour_$DAY/
TORCH_PY=$TORCH_PY bash experiments/cifar10_hour/torch_variant.sh torch_$DAY  # then PyTorch: torch_$DAY/
