"""Export a finished `minivit train` run as one of the course's trained models (tutorials/trained/).

    python scripts/export_course_model.py runs/course-learn1d tutorials/trained/vit_mini_learn1d \\
        --command "minivit train ..." --commit c642dc1 --data-dir ../shared/data/cifar10-jpeg

Writes into the output folder:
    weights.npz     the run's final weights as a minivit checkpoint without optimizer state or RNG
                    state (so a few MB): the model config, input normalisation, class names and
                    training arguments in its meta.json; `minivit eval`, `model_from_checkpoint`
                    and the notebooks load it
    model.json      the exact command that trained it, the commit it ran at, the final test
                    accuracy from the run's log, and the accuracy on a fixed slice of the test set
                    (SLICE below) measured here, so a test can check that file and record agree
    metrics.jsonl, config.json, curves.png   copied from the run folder unchanged
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from minivit import data as mdata  # noqa: E402
from minivit.train import evaluate  # noqa: E402
from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint, normalization, save_checkpoint  # noqa: E402

# The fixed test slice: load_dataset("cifar10", root, "test", num_samples=1000, seed=0), no
# test-time augmentation. 1,000 images: a few seconds on 2 cores, 100 per class on average.
SLICE = {"split": "test", "num_samples": 1000, "seed": 0, "flip_tta": False}


def slice_accuracy(model, ckpt, data_dir) -> tuple[float, int]:
    """(accuracy, number correct) of `model` on the fixed test slice of CIFAR-10 in `data_dir`."""
    mean, std = normalization(ckpt, model.config.in_chans)
    ds = mdata.load_dataset("cifar10", data_dir, SLICE["split"], num_samples=SLICE["num_samples"],
                            seed=SLICE["seed"])
    loader = mdata.DataLoader(ds, 250, shuffle=False, augment=False, drop_last=False, mean=mean, std=std)
    _, acc = evaluate(model.eval(), loader, flip_tta=SLICE["flip_tta"])
    return float(acc), int(round(acc * len(ds)))


def final_test_accuracy(metrics: Path) -> dict:
    """The last row of a run's metrics.jsonl that holds a test accuracy."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tested = [r for r in rows if isinstance(r.get("test_acc"), (int, float))]
    if not tested:
        raise SystemExit(f"{metrics} holds no test_acc: did the run finish?")
    return tested[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run folder (checkpoint.npz, metrics.jsonl, config.json)")
    p.add_argument("out", type=Path, help="the folder to write, e.g. tutorials/trained/vit_mini_learn1d")
    p.add_argument("--command", required=True, help="the exact command that trained the run")
    p.add_argument("--commit", required=True, help="the commit the run was trained at")
    p.add_argument("--data-dir", required=True, help="CIFAR-10 for the test-slice accuracy")
    p.add_argument("--note", default="", help="anything else a reader should know (machine, wall clock)")
    args = p.parse_args(argv)

    ckpt = load_checkpoint(args.run / "checkpoint.npz")
    model, _ = model_from_checkpoint(ckpt)
    meta = ckpt["meta"]
    keep = {k: meta[k] for k in ("normalization", "classes", "train_config", "position") if k in meta}
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "weights.npz", model, **keep)

    reloaded = load_checkpoint(args.out / "weights.npz")
    exported, _ = model_from_checkpoint(reloaded)
    for name, value in model.state_dict().items():
        assert np.array_equal(np.asarray(value), np.asarray(exported.state_dict()[name])), name
    acc, correct = slice_accuracy(exported, reloaded, args.data_dir)
    final = final_test_accuracy(args.run / "metrics.jsonl")
    record = {
        "command": args.command,
        "commit": args.commit,
        "parameters": exported.num_parameters(),
        "test_accuracy": final["test_acc"],
        "test_loss": final.get("test_loss"),
        "test_accuracy_note": "all 10,000 CIFAR-10 test images, as the run's last metrics row logged it"
                              + (" (flip test-time augmentation)" if meta.get("train_config", {}).get("flip_tta") else ""),
        "steps": final.get("step"),
        "test_slice": {**SLICE, "accuracy": acc, "correct": correct},
        "note": args.note,
    }
    (args.out / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    for name in ("metrics.jsonl", "config.json", "curves.png"):
        if (args.run / name).exists():
            shutil.copyfile(args.run / name, args.out / name)
    size = (args.out / "weights.npz").stat().st_size
    print(f"{args.out}: weights {size / 1e6:.1f} MB, test accuracy {final['test_acc']:.4f}, "
          f"slice {correct}/{SLICE['num_samples']} = {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
