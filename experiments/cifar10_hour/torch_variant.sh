#!/usr/bin/env bash
# variant.sh's twin in PyTorch + timm (benchmarks/torch_cifar.py): one full-hour run of the recipe
# with changed options, its files copied beside this script as <NAME>/ (metrics.json, whose "run"
# records the machine, BLAS, environment and start/end times; the log holds `date -u` around it).
#   TORCH_PY=/path/to/python bash experiments/cifar10_hour/torch_variant.sh NAME [minivit train options...]
#   bash experiments/cifar10_hour/torch_variant.sh torch_patchdrop50_2026-12-07 --patch-drop-rate 0.5
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=$1
shift
TORCH_PY=${TORCH_PY:-/work/benchvenv/bin/python}
DATA=../shared/data/cifar10-jpeg
T=experiments/cifar10_hour/$NAME
mkdir -p $T runs
echo "torch start $(date -u +%FT%TZ)" | tee $T/wall.txt
PYTHONPATH=. $TORCH_PY benchmarks/torch_cifar.py --recipe cifar10-hour --data-dir $DATA \
    --out runs/$NAME "$@" 2>&1 | tee $T/train.log
echo "torch end $(date -u +%FT%TZ)" | tee -a $T/wall.txt
cp runs/$NAME/metrics.json $T/
