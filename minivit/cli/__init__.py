"""The `minivit` command: train, eval, predict, demo, analyze, fewshot, convert, sweep, bench,
kernels, models, recipes.

    minivit demo                                     # procedural shapes, about a minute on 2 cores
    minivit train --data-dir ../shared/data/cifar10-jpeg --epochs 10 --out runs/cifar
    minivit train --resume --out runs/cifar          # continue exactly where it stopped
    minivit eval runs/cifar/best.npz
    minivit predict runs/cifar/best.npz cat.jpg
    minivit train --device cuda ...                  # on an NVIDIA GPU (pip install -e '.[gpu]')

Numbers that make no sense (`--top 0`, `--batch-size -1`, `--lr nan`) are refused while the
arguments are parsed, with argparse's usage message; anything else a user can get wrong (a
missing or damaged file, an inconsistent dataset, a crafted checkpoint) ends in one line
"error: ..." on stderr and exit status 2, never a traceback (MINIVIT_DEBUG=1 shows it); so
does `--device cuda` where CuPy or a GPU is missing ("error: cuda requested but ...").
"""
from __future__ import annotations

import argparse
import os
import sys

from .args import (DATASETS, add_device_arg, add_train_args, shown, name_list, nonnegative_float, nonnegative_int,
                   positive_float, positive_int, positive_int_list, train_config_from_args)
from .args import add_distributed_args
from .checkpoints import cmd_analyze, cmd_convert, cmd_eval, cmd_fewshot, cmd_predict
from .listing import cmd_bench, cmd_kernels, cmd_models, cmd_recipes
from .training import cmd_demo, cmd_pretrain, cmd_sweep, cmd_train

__all__ = ["build_parser", "main", "train_config_from_args"]


def build_parser():
    p = argparse.ArgumentParser(prog="minivit", description="A readable, fast Vision Transformer on NumPy.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a ViT")
    add_train_args(t)
    t.add_argument("--backend", choices=["numpy", "jax"], default="numpy",
                   help="jax: the same run with each step jitted by JAX (pip install 'minivit[jax]')")
    t.add_argument("--devices", type=positive_int,
                   help="--backend jax: data parallel over this many devices (default all; on a CPU, "
                        "this many host devices)")
    add_distributed_args(t)
    t.set_defaults(func=cmd_train)

    pt = sub.add_parser("pretrain", help="self-supervised pre-training of a ViT: masked patch prediction "
                                         "(then: minivit train --init-from RUN/encoder.npz)")
    add_train_args(pt)
    pt.add_argument("--objective", choices=["mpp"], default="mpp",
                    help="mpp: predict the 3-bit mean colour of corrupted patches (paper Sec. 4.6)")
    pt.add_argument("--mask-ratio", type=positive_float, help="fraction of each image's patches corrupted "
                                                              "(default 0.5)")
    pt.add_argument("--mask-token-prob", type=nonnegative_float, help="of those, replaced by the [mask] "
                                                                      "embedding (default 0.8)")
    pt.add_argument("--random-patch-prob", type=nonnegative_float, help="... by another patch's embedding "
                                                                        "(default 0.1; the rest are kept)")
    pt.add_argument("--mpp-bits", type=positive_int, help="bits per channel of the colour target (default 3: "
                                                          "512 classes)")
    pt.set_defaults(func=cmd_pretrain)

    e = sub.add_parser("eval", help="accuracy of a checkpoint on a dataset split")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", choices=DATASETS, help="default: the one the checkpoint was trained on")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test")
    e.add_argument("--batch-size", type=positive_int, default=256)
    add_device_arg(e)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="top-5 classes of image files")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top", type=positive_int, default=5)
    add_device_arg(pr)
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("demo", help="train a small ViT on procedural shapes (about a minute)")
    d.add_argument("--epochs", type=positive_int, default=6)
    d.add_argument("--num-samples", type=positive_int, default=10000, help="training images (at least 128)")
    d.add_argument("--seed", type=nonnegative_int, default=0)
    d.add_argument("--out")
    d.add_argument("--no-progress", action="store_true")
    add_device_arg(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("analyze", help="the paper's analysis figures for a checkpoint")
    a.add_argument("checkpoint")
    a.add_argument("--out", required=True)
    a.add_argument("--data-dir")
    a.add_argument("--images", type=positive_int, default=256, help="test images for attention distance")
    add_device_arg(a)
    a.set_defaults(func=cmd_analyze)

    f = sub.add_parser("fewshot", help="few-shot linear evaluation of frozen features")
    f.add_argument("checkpoint")
    f.add_argument("--shots", type=positive_int_list, default=[1, 5, 10, 25], help="default 1,5,10,25")
    f.add_argument("--seeds", type=positive_int, default=3)
    f.add_argument("--dataset", choices=DATASETS, help="default: the one the checkpoint was trained on")
    f.add_argument("--data-dir")
    f.add_argument("--test-images", type=positive_int, default=2000)
    add_device_arg(f)
    f.set_defaults(func=cmd_fewshot)

    s = sub.add_parser("sweep", help="train a grid of model options and tabulate the results")
    add_train_args(s)
    s.add_argument("--grid", nargs="+", help="key=v1,v2 ... (ViT or training options): every combination")
    s.add_argument("--point", nargs="+", action="append",
                   help="key=v ...: one explicit point (repeat --point for more); after the grid's points")
    s.set_defaults(func=cmd_sweep)

    b = sub.add_parser("bench", help="empirical compute cost: throughput and memory vs resolution")
    b.add_argument("what", choices=["model"])
    b.add_argument("--models", type=name_list,
                   default="vit_tiny_patch16_224,vit_small_patch16_224,vit_tiny_patch32_224")
    b.add_argument("--sizes", type=positive_int_list, default="64,128,224", help="input sizes in pixels")
    b.add_argument("--batch-size", type=positive_int, default=8)
    b.add_argument("--budget-gib", type=positive_float, default=1.0)
    b.add_argument("--out")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("convert", help="minivit checkpoint <-> official vit_jax / big_vision .npz "
                                       "(the direction is read off the input)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--layout", choices=["vit_jax", "big_vision"], help="official layout to write (default vit_jax)")
    c.add_argument("--img-size", type=positive_int, help="official -> minivit: interpolate the position embedding")
    c.add_argument("--num-classes", type=nonnegative_int, help="official -> minivit: a new zero-initialised head")
    c.set_defaults(func=cmd_convert)

    k = sub.add_parser("kernels", help="list kernel implementations")
    k.add_argument("op", nargs="?")
    k.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="list the GPU versions with cuda")
    k.set_defaults(func=cmd_kernels)

    m = sub.add_parser("models", help="list named model variants")
    m.add_argument("pattern", nargs="?")
    m.add_argument("--family", choices=["vit", "resnetv2", "hybrid", "axial", "all"], default="vit",
                   help="vit (default): ViTs; resnetv2, hybrid, axial: the paper's other systems; all")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("recipes", help="list named training recipes")
    r.set_defaults(func=cmd_recipes)
    return p


def main(argv=None):
    """Run one command; exit 2 with one line "error: ..." for what a user can cause: a bad value
    (ValueError, which CheckpointError is), a missing or unreadable file (OSError, which
    DataNotFoundError is), a diverged run (FloatingPointError), or too little memory; and
    `--device cuda` without CuPy or a GPU (DeviceUnavailable: one line, "cuda requested but ...").
    Any other exception is a bug in minivit and keeps its traceback."""
    from ..device import DeviceUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except DeviceUnavailable as e:
        if os.environ.get("MINIVIT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, FloatingPointError, MemoryError) as e:
        if os.environ.get("MINIVIT_DEBUG"):
            raise
        message = f"out of memory: {e}" if isinstance(e, MemoryError) else shown(e, limit=10_000)
        print(f"error: {message}\n(set MINIVIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2

