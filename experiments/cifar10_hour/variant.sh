#!/usr/bin/env bash
# One full-hour run of the recipe with changed options, on an otherwise idle machine; its files
# are copied beside this script as <NAME>/ (config, metrics, curves, run.json with the machine,
# BLAS, environment and start/end times; the log holds `date -u` around the run).
#   bash experiments/cifar10_hour/variant.sh NAME [minivit train options...]
#   bash experiments/cifar10_hour/variant.sh lowres50_2026-12-07 --low-res-fraction 0.5
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=$1
shift
DATA=../shared/data/cifar10-jpeg
V=experiments/cifar10_hour/$NAME
mkdir -p $V runs
echo "minivit start $(date -u +%FT%TZ)" | tee $V/wall.txt
.venv/bin/minivit train --recipe cifar10-hour --data-dir $DATA --out runs/cifar10-hour-$NAME --no-progress "$@" \
    2>&1 | tee $V/train.log
echo "minivit end $(date -u +%FT%TZ)" | tee -a $V/wall.txt
cp runs/cifar10-hour-$NAME/{config.json,metrics.jsonl,curves.png,run.json} $V/
