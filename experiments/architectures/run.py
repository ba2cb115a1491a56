"""The paper's Figure 5 in miniature (Sec. 4.4: performance against pre-training compute for ViT,
hybrids and ResNets; Appendix D.6: Axial-ViT) and Sec. 4.6's masked patch prediction against
training from scratch, on CIFAR-10 at an equal training compute.

    .venv/bin/python experiments/architectures/run.py            # every run not in results.jsonl yet
    .venv/bin/python experiments/architectures/run.py --table    # results.md's tables and results.png

Compute budget: vit_demo_patch4_32 for BASE_STEPS steps of 64 images. Every other model gets the
steps that spend the same training FLOPs (3 x forward FLOPs x images), rounded; its forward FLOPs
are counted by flops.py from the shapes its dense kernels see. The four families are sized alike
(about 40-46 MFLOP an image, see minivit/variants.py), except the hybrid of form (i), whose CNN
ends at /8 (16 tokens): it is cheaper and gets 3x the steps.

Masked patch prediction: vit_demo_patch4_32 pre-trained for BASE_STEPS steps on the training
images without their labels, then fine-tuned for BASE_STEPS steps from its encoder.npz, against
the same ViT trained from scratch for BASE_STEPS steps (the row "vit") and for 2 x BASE_STEPS
(equal total compute).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, append_row, fwd_mflops, load_rows, train_fixed_steps  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
BASE_MODEL, BASE_STEPS = "vit_demo_patch4_32", 300

# run name: (registered model, what it stands for in the paper)
RUNS = {
    "vit": ("vit_demo_patch4_32", "ViT (Sec. 3.1)"),
    "resnet": ("resnetv2_20_cifar", "ResNet (BiT), Sec. 4.1"),
    "hybrid_s4": ("vit_demo_r14_s4_32", "hybrid (ii): stage 4 moved into stage 3, 8x8 tokens"),
    "hybrid_s8": ("vit_demo_r14_s8_32", "hybrid (i): the last stage's output, 4x4 tokens"),
    "axial": ("axial_vit_demo_patch4_32", "Axial-ViT (App. D.6)"),
}


def equal_compute_steps(model):
    return round(BASE_STEPS * fwd_mflops(BASE_MODEL) / fwd_mflops(model))


def run_all():
    done = {r["run"] for r in load_rows(RESULTS)}
    for run, (model, _) in RUNS.items():
        if run not in done:
            row, _ = train_fixed_steps("architectures", run, model, equal_compute_steps(model))
            append_row(RESULTS, row)
    if "mpp_pretrain" not in done:
        from minivit.train.pretrain import PretrainConfig, PretrainTrainer

        row, _ = train_fixed_steps("architectures", "mpp_pretrain", BASE_MODEL, BASE_STEPS,
                                   trainer_cls=PretrainTrainer, cfg_cls=PretrainConfig)
        append_row(RESULTS, row)
    if "mpp_finetune" not in done:
        encoder = ROOT / "runs" / "experiments" / "architectures" / "mpp_pretrain" / "encoder.npz"
        row, _ = train_fixed_steps("architectures", "mpp_finetune", BASE_MODEL, BASE_STEPS, init_from=str(encoder))
        append_row(RESULTS, row)
    if "vit_2x" not in done:  # the compute of pre-training + fine-tuning, spent on supervised steps
        row, _ = train_fixed_steps("architectures", "vit_2x", BASE_MODEL, 2 * BASE_STEPS)
        append_row(RESULTS, row)


def table():
    rows = {r["run"]: r for r in load_rows(RESULTS)}
    print("| run | model | stands for | params | MFLOP/image | steps | images seen | train TFLOP | test acc | "
          "train loss | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names = {**RUNS, "vit_2x": (BASE_MODEL, "ViT, twice the steps"),
             "mpp_finetune": (BASE_MODEL, "ViT fine-tuned from MPP (+ pre-training)")}
    for run, (model, what) in names.items():
        r = rows.get(run)
        if r:
            print(f"| {run} | {model} | {what} | {r['params']:,} | {r['fwd_mflops']:.1f} | {r['steps']} | "
                  f"{r['images_seen']:,} | {1000 * r['train_pflops']:.2f} | {100 * r['test_acc']:.1f}% | "
                  f"{r['train_loss']:.3f} | {r['minutes']:.1f} |")
    if "mpp_pretrain" in rows:
        r = rows["mpp_pretrain"]
        print(f"\nMPP pre-training: {r['steps']} steps, final train loss {r['train_loss']:.3f}, corrupted patches "
              f"whose 3-bit colour (of 512) was right: {100 * r['train_acc']:.1f}%, {r['minutes']:.1f} minutes")
    plot(rows)


def plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"vit": "C0", "resnetv2": "C1", "hybrid": "C2", "axial": "C3"}
    equal = [(run, rows[run]) for run in RUNS if run in rows]
    ax.bar(range(len(equal)), [100 * r["test_acc"] for _, r in equal], color=[colours[r["family"]] for _, r in equal])
    ax.set_xticks(range(len(equal)), [run for run, _ in equal], fontsize=8)
    for i, (_, r) in enumerate(equal):
        ax.text(i, 100 * r["test_acc"] + 0.3, f"{100 * r['test_acc']:.1f}", ha="center", fontsize=9)
    tflop = 1000 * rows["vit"]["train_pflops"] if "vit" in rows else float("nan")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title(f"Fig. 5 in miniature: every model trained with {tflop:.2f} TFLOP", fontsize=10)
    bars = [(k, rows[k]) for k in ("vit", "mpp_finetune", "vit_2x") if k in rows]
    labels = {"vit": f"scratch\n{BASE_STEPS} steps", "mpp_finetune": f"MPP {BASE_STEPS} +\nfine-tune {BASE_STEPS}",
              "vit_2x": f"scratch\n{2 * BASE_STEPS} steps"}
    bx.bar(range(len(bars)), [100 * r["test_acc"] for _, r in bars], color=["C0", "C4", "C0"][:len(bars)])
    bx.set_xticks(range(len(bars)), [labels[k] for k, _ in bars], fontsize=8)
    for i, (_, r) in enumerate(bars):
        bx.text(i, 100 * r["test_acc"] + 0.3, f"{100 * r['test_acc']:.1f}", ha="center", fontsize=9)
    bx.set_ylabel("CIFAR-10 test accuracy (%)")
    bx.set_title(f"Sec. 4.6: masked patch prediction ({BASE_MODEL})", fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)
    print(f"\nsaved {HERE / 'results.png'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help="print the tables and draw results.png from results.jsonl")
    if p.parse_args().table:
        table()
    else:
        run_all()
        table()
