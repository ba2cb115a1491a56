"""The data-requirements finding in miniature (ViT paper, Sec. 4.3, Figures 3-4): ViT, a BiT
ResNetV2 and a hybrid trained on nested random subsets of CIFAR-10's training images (2k, 5k, 15k
and all 50k) for the same number of steps, scored on the 10,000-image test split.

    .venv/bin/python experiments/data_size/run.py           # every run not in results.jsonl yet
    .venv/bin/python experiments/data_size/run.py --table   # results.md's table and results.png

The subsets are load_dataset's `num_samples` draws with seed 0, which are nested (each contains
the smaller ones; checked below before training). Every run takes STEPS steps of 64 images with
the schedule and augmentation of experiments/architectures/common.py, so a small subset is seen
for many epochs (2k: 9.6) and the largest for 0.38 of one: the pre-training set size varies at
a fixed budget (the paper stops early instead; here the budget is fixed). The models are the
ones of experiments/architectures (about 40-46 MFLOP an image each). At the two ends (2k, 50k)
ViT and ResNet also get LONG_STEPS (2k: 32 epochs), where the small set can be overfitted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))

from common import append_row, load_rows, train_fixed_steps  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
ARCHITECTURES = HERE.parent / "architectures" / "results.jsonl"
STEPS = 300  # = experiments/architectures' BASE_STEPS: its "vit" run is this file's vit_50k
SIZES = (2_000, 5_000, 15_000, 50_000)
MODELS = {"vit": "vit_demo_patch4_32", "resnet": "resnetv2_20_cifar", "hybrid": "vit_demo_r14_s4_32"}
# A longer budget at the two ends, ViT against ResNet: where 300 steps leave every model short of its data
LONG_STEPS, LONG_SIZES, LONG_MODELS = 1000, (2_000, 50_000), ("vit", "resnet")


def check_nested():
    """The subsets load_dataset draws for SIZES with seed 0 are nested (as sets of image indices)."""
    picks = [set(np.random.default_rng([0, 777]).choice(50_000, n, replace=False).tolist()) for n in SIZES[:-1]]
    assert all(a <= b for a, b in zip(picks, picks[1:])), "the subsets are not nested"


def run_all():
    check_nested()
    done = {r["run"] for r in load_rows(RESULTS)}
    for n in SIZES:  # the smallest subsets first: the most informative points come early
        for key, model in MODELS.items():
            run = f"{key}_{n // 1000}k"
            if run in done:
                continue
            same = [r for r in load_rows(ARCHITECTURES)
                    if r["run"] == key and r["model"] == model and r["steps"] == STEPS]
            if n == 50_000 and same:  # the identical run (model, steps, data, seed) was made there
                append_row(RESULTS, {**same[0], "experiment": "data_size", "run": run, "subset": n,
                                     "copied_from": "architectures/results.jsonl"})
                continue
            row, _ = train_fixed_steps("data_size", run, model, STEPS, num_samples=None if n == 50_000 else n)
            append_row(RESULTS, {**row, "subset": n})
    for n in LONG_SIZES:
        for key in LONG_MODELS:
            run = f"{key}_{n // 1000}k_long"
            if run not in done:
                row, _ = train_fixed_steps("data_size", run, MODELS[key], LONG_STEPS,
                                           num_samples=None if n == 50_000 else n)
                append_row(RESULTS, {**row, "subset": n})


def table():
    rows = load_rows(RESULTS)
    for steps, suffix, keys in ((STEPS, "", MODELS), (LONG_STEPS, "_long", LONG_MODELS)):
        print(f"\n{steps} steps: test accuracy (train: running accuracy of the epoch in progress, augmented)\n")
        print("| model | " + " | ".join(f"{n // 1000}k images" for n in SIZES) + " |")
        print("|---|" + "---|" * len(SIZES))
        for key in keys:
            cells = []
            for n in SIZES:
                r = next((r for r in rows if r["run"] == f"{key}_{n // 1000}k{suffix}"), None)
                cells.append(f"{100 * r['test_acc']:.1f}% ({100 * r['train_acc']:.0f}%)" if r else "-")
            print(f"| {key} ({MODELS[key]}) | " + " | ".join(cells) + " |")
    plot(rows)


def plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for i, (key, model) in enumerate(MODELS.items()):
        for suffix, style, steps in (("", "o-", STEPS), ("_long", "s--", LONG_STEPS)):
            pts = sorted((r["subset"], 100 * r["test_acc"]) for r in rows
                         if r["run"].startswith(key + "_") and r["run"].endswith("k" + suffix))
            if pts:
                ax.plot(*zip(*pts), style, color=f"C{i}", label=f"{key}, {steps} steps")
    ax.set_xscale("log")
    ax.set_xticks(SIZES, [f"{n // 1000}k" for n in SIZES])
    ax.minorticks_off()
    ax.set_xlabel("training images (nested random subsets of CIFAR-10)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fig. 3-4 in miniature: the same steps at every subset size", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)
    print(f"\nsaved {HERE / 'results.png'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help="print the table and draw results.png from results.jsonl")
    if p.parse_args().table:
        table()
    else:
        run_all()
        table()
