"""The ablation table of issue 12 from the run folders of ablate.sh (runs/h12/<run>/), and a copy of
each run's config.json, metrics.jsonl and curves.png beside this file (checkpoints stay out of git).

    .venv/bin/python experiments/cifar10_hour/table.py [--runs runs/h12] [--hour runs/cifar10-hour]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHANGES = {  # run -> what it changes against cifar10-hour-all (ablate.sh)
    "all": "cifar10-hour-all as it is (every trick on)",
    "all_rerun": "the same, run again at the end of the queue",
    "no_lowres": "full 32 px from the start",
    "no_lowres_rerun": "the same, run again at the end of the queue",
    "no_mimetic": "timm's attention init instead of mimetic",
    "no_ema": "no weight EMA",
    "no_clip": "no gradient clipping",
    "zeros_pad": "crops padded with zeros, not reflected",
    "sincos_avg": "fixed 2D sin-cos position embedding, average pooling, no class token",
    "cosine_plain": "the old cifar10-hour's choices: cosine to 1e-5, no low-res, timm init, no EMA, no flip TTA, zero padding",
}


def summary(run: Path) -> dict | None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = [r for r in rows if "test_acc" in r]
    if not final:
        return None
    cfg = json.loads((run / "config.json").read_text())["train"]
    last = final[-1]
    return {"run": run.name, "steps": last["step"], "images": last["step"] * cfg["batch_size"],
            "epochs": last["epoch"], "minutes": last.get("seconds", 0) / 60, "test_acc": last["test_acc"],
            "img_s": last["step"] * cfg["batch_size"] / last["seconds"] if last.get("seconds") else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/h12")
    args = p.parse_args(argv)
    print("| run | what changes | steps | epochs | test acc | images/s (all of the run) |")
    print("|---|---|---|---|---|---|")
    for run in sorted(Path(args.runs).iterdir(), key=lambda r: list(CHANGES).index(r.name) if r.name in CHANGES else 99):
        if not (run / "metrics.jsonl").exists():
            continue
        s = summary(run)
        if s is None:
            continue
        ips = f"{s['img_s']:.0f}" if s["img_s"] else "-"
        print(f"| {s['run']} | {CHANGES.get(s['run'], '?')} | {s['steps']} | {s['epochs']:.2f} | "
              f"{s['test_acc']:.1%} | {ips} |")
        dest = HERE / run.name
        dest.mkdir(exist_ok=True)
        for name in ("config.json", "metrics.jsonl", "curves.png"):
            if (run / name).exists():
                shutil.copy2(run / name, dest / name)


if __name__ == "__main__":
    main()
