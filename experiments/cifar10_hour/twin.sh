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
DATA=../shared/data/cifar10-jpeg
T=experiments/cifar10_hour/torch_$DAY
mkdir -p $T runs
bash experiments/cifar10_hour/variant.sh hour_$DAY  # the recipe unchanged: its files in hour_$DAY/
echo "torch start $(date -u +%FT%TZ)" | tee $T/wall.txt
PYTHONPATH=. $TORCH_PY benchmarks/torch_cifar.py --recipe cifar10-hour --data-dir $DATA \
    --out runs/torch-hour-$DAY 2>&1 | tee $T/train.log
echo "torch end $(date -u +%FT%TZ)" | tee -a $T/wall.txt
cp runs/torch-hour-$DAY/metrics.json $T/
