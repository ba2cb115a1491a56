#!/usr/bin/env bash
# Stronger augmentation against the one-hour recipe, at equal wall clock, one run after the other on
# an otherwise idle machine: cifar10-hour with its time limit cut to SECONDS (default 1680, half of
# it), as it is and with TrivialAugment + Random Erasing (p 0.25, noise). Each run's config.json,
# metrics.jsonl and curves.png are copied beside this file (checkpoints stay out of git).
#   bash experiments/cifar10_augment/ab.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-1680}
S=${2:-0}
R="--recipe cifar10-hour --data-dir ../shared/data/cifar10-jpeg --time-limit $T --seed $S --no-progress"
run() {
    name=$1; shift
    out=runs/aug/$name
    [ -f $out/best.npz ] || .venv/bin/minivit train $R --out $out "$@" 2>&1 | tee $out.log
    mkdir -p experiments/cifar10_augment/$name
    cp $out/config.json $out/metrics.jsonl $out/curves.png $out.log experiments/cifar10_augment/$name/ 2>/dev/null || true
}
mkdir -p runs/aug
run base_${T}_s$S
run ta_re_${T}_s$S --trivial-augment --random-erase 0.25
