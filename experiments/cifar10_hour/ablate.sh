#!/usr/bin/env bash
# Issue 12's ablations: cifar10-hour-all with one trick changed at a time, each run given the same
# wall clock of training (--time-limit, schedule by time), on all 50,000 training images, scored on
# the 10,000 test images at the end. One run after the other on an otherwise idle machine.
#   bash experiments/cifar10_hour/ablate.sh [SECONDS]      (default 300)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-300}
R="--recipe cifar10-hour-all --data-dir ../shared/data/cifar10-jpeg --time-limit $T --no-progress"
run() { name=$1; shift; [ -f runs/h12/$name/best.npz ] || .venv/bin/minivit train $R --out runs/h12/$name "$@"; }
run all                                     # every trick of the recipe on
run no_lowres       --low-res-size 0        # full 32 px from the start
run no_mimetic      --init timm             # timm's attention init
run no_ema          --ema-decay 0           # score the raw weights
run no_clip         --grad-clip 0           # no gradient clipping
run zeros_pad       --crop-padding zeros    # crops padded with zeros
run sincos_avg      --pos-embed sincos --global-pool avg --no-class-token   # fixed 2D sin-cos, average pooling
run cosine_plain    --schedule cosine --min-lr 1e-5 --low-res-size 0 --init timm --ema-decay 0 --no-flip-tta --crop-padding zeros   # the old cifar10-hour's choices
