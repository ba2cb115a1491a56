"""Accuracy on the training images themselves (no augmentation) of every data_size run, from its
final checkpoint in runs/experiments/data_size/<run>/: the other half of the overfitting story.

    .venv/bin/python experiments/data_size/train_accuracy.py     # after run.py; writes train_accuracy.jsonl

The training subset is rebuilt exactly as the run drew it (load_dataset's num_samples with seed 0);
for the full 50k set a fixed 5,000-image sample of it is scored.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))

from common import DATA, ROOT, load_rows  # noqa: E402

from minivit import data as mdata  # noqa: E402
from minivit.train import evaluate, load_checkpoint  # noqa: E402
from minivit.variants import model_from_config  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    out = HERE / "train_accuracy.jsonl"
    full = mdata.load_dataset("cifar10", str(DATA), "train")
    rows = []
    for r in load_rows(HERE / "results.jsonl"):
        where = "architectures/vit" if r.get("copied_from") else f"data_size/{r['run']}"
        run_dir = ROOT / "runs" / "experiments" / where
        ckpt = load_checkpoint(run_dir / "checkpoint.npz")
        model = model_from_config(ckpt["meta"]["config"])
        model.load_state_dict(ckpt["model"])
        n = r["subset"]
        ds = mdata.load_dataset("cifar10", str(DATA), "train", num_samples=None if n == 50_000 else n, seed=0)
        if n == 50_000:
            ds = ds.subset(np.random.default_rng(0).choice(len(full), 5_000, replace=False))
        norm = ckpt["meta"]["normalization"]
        loader = mdata.DataLoader(ds, 256, shuffle=False, augment=False, drop_last=False, mean=norm["mean"],
                                  std=norm["std"])
        loss, acc = evaluate(model, loader)
        rows.append({"run": r["run"], "subset": n, "steps": r["steps"], "train_eval_acc": acc, "train_eval_loss": loss,
                     "test_acc": r["test_acc"], "gap": acc - r["test_acc"]})
        print(json.dumps(rows[-1]), flush=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
