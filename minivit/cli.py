"""The `minivit` command: train, eval, predict, demo, analyze, fewshot, kernels, models.

    minivit demo                                     # procedural shapes, ~2 minutes on a laptop CPU
    minivit train --data-dir ../shared/data/cifar10-jpeg --epochs 10 --out runs/cifar
    minivit train --resume --out runs/cifar          # continue exactly where it stopped
    minivit eval runs/cifar/best.npz
    minivit predict runs/cifar/best.npz cat.jpg
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

# ViT options settable from the command line: flag -> (ViTConfig field, type)
_MODEL_FLAGS = {
    "img_size": int, "patch_size": int, "embed_dim": int, "depth": int, "num_heads": int, "mlp_ratio": float,
    "global_pool": str, "pos_embed": str, "pos_embed_at": str, "drop_rate": float, "attn_drop_rate": float,
    "drop_path_rate": float, "representation_size": int,
}


def _add_train_args(p):
    from .train import TrainConfig

    d = TrainConfig()
    p.add_argument("--recipe", help="a named recipe (see `minivit recipes`); explicit flags override it")
    p.add_argument("--model", help=f"model name (see `minivit models`; default {d.model})")
    for name, typ in _MODEL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, help="ViT option (overrides the named model)")
    p.add_argument("--no-class-token", action="store_true", help="no class token (use with --global-pool avg)")
    p.add_argument("--no-qkv-bias", action="store_true")
    p.add_argument("--dataset", choices=["cifar10", "procedural", "folder", "fashion_mnist"],
                   help=f"default {d.dataset}")
    p.add_argument("--data-dir", help="cifar-10-batches-py, an image-folder tree with train/ and test/, "
                                      "or nothing for the cached download")
    for name, typ in [("epochs", int), ("batch_size", int), ("lr", float), ("min_lr", float),
                      ("weight_decay", float), ("warmup_epochs", float), ("label_smoothing", float),
                      ("grad_clip", float), ("seed", int), ("val_size", float), ("num_samples", int),
                      ("save_every", int), ("max_steps", int), ("log_every", int)]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=f"default {getattr(d, name)}")
    p.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    p.add_argument("--schedule", choices=["cosine", "linear", "constant"])
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--no-test", action="store_true", help="do not evaluate on the test split each epoch")
    p.add_argument("--kernels", help="kernel choices, e.g. attention=cpu_v1,layernorm=reference")
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--init-from", help="start from this checkpoint's weights (fine-tuning; position "
                                       "embeddings are interpolated when --img-size differs)")
    p.add_argument("--no-progress", action="store_true")


def train_config_from_args(args):
    """TrainConfig from: defaults < recipe < --resume's saved config < explicit flags."""
    from .train.recipes import get_recipe
    from .train import TrainConfig

    values = asdict(TrainConfig())
    if args.recipe:
        values.update(get_recipe(args.recipe))
    if args.resume:
        if not args.out:
            raise SystemExit("--resume needs --out RUN_FOLDER (the folder holding checkpoint.npz)")
        saved = Path(args.out) / "config.json"
        if not saved.exists():
            raise SystemExit(f"--resume: {saved} not found; is {args.out} a run folder?")
        values.update(json.loads(saved.read_text())["train"])
        values["max_steps"] = None  # a stop point applies to the run that set it, unless given again
    model_kwargs = dict(values.get("model_kwargs") or {})
    for name in _MODEL_FLAGS:
        value = getattr(args, name)
        if value is not None:
            model_kwargs[name] = value
    if args.no_class_token:
        model_kwargs["class_token"] = False
        model_kwargs.setdefault("global_pool", "avg")
    if args.no_qkv_bias:
        model_kwargs["qkv_bias"] = False
    values["model_kwargs"] = model_kwargs
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("model_kwargs",):
            values[f.name] = value
    if args.dataset:
        values["dataset"] = args.dataset
    if args.data_dir:
        values["data_dir"] = args.data_dir
    if args.no_augment:
        values["augment"] = False
    if args.no_test:
        values["eval_test"] = False
    if args.no_progress:
        values["progress"] = False
    if args.out:
        values["out_dir"] = args.out
    elif not args.resume:
        values["out_dir"] = f"runs/{values['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if values["val_size"] and values["val_size"] >= 1:
        values["val_size"] = int(values["val_size"])
    return TrainConfig.from_dict(values)


def cmd_train(args):
    from .train import Trainer

    cfg = train_config_from_args(args)
    trainer = Trainer(cfg, resume=args.resume)
    m = trainer.model
    print(f"model {cfg.model}: {m.num_parameters():,} parameters, {m.config.depth} blocks of width "
          f"{m.config.embed_dim}, {m.num_tokens} tokens; {len(trainer.train_set)} training images; "
          f"run folder {trainer.out}")
    start = time.perf_counter()
    final = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
    print(f"done in {minutes:.1f} min: {summary}\nrun folder: {trainer.out}")
    return 0


def _load_for_inference(path):
    """(model in eval mode, checkpoint meta, (mean, std) of its input normalisation)."""
    from .train.checkpoint import model_from_checkpoint, normalization

    model, ckpt = model_from_checkpoint(path)
    model.eval()
    return model, ckpt["meta"], normalization(ckpt)


def cmd_eval(args):
    from . import data as mdata
    from .train import evaluate

    model, meta, (mean, std) = _load_for_inference(args.checkpoint)
    train_cfg = meta.get("train_config", {})
    dataset = args.dataset or train_cfg.get("dataset", "cifar10")
    data_dir = args.data_dir or train_cfg.get("data_dir")
    ds = mdata.load_dataset(dataset, data_dir, args.split, seed=train_cfg.get("seed", 0))
    loader = mdata.DataLoader(ds, args.batch_size, shuffle=False, augment=False, drop_last=False,
                              mean=mean, std=std)
    start = time.perf_counter()
    loss, acc = evaluate(model, loader)
    rate = len(ds) / (time.perf_counter() - start)
    print(f"{dataset} {args.split}: accuracy {acc:.4f} ({acc * len(ds):.0f}/{len(ds)}), loss {loss:.4f}, "
          f"{rate:.0f} images/s")
    return 0


def load_image(path, img_size, in_chans):
    """An image file as uint8 (H, W, C), converted and resized to the model's input."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if in_chans == 1 else "RGB")
            if im.size != (img_size, img_size):
                im = im.resize((img_size, img_size), Image.BILINEAR)
            return np.asarray(im).reshape(img_size, img_size, in_chans)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise SystemExit(f"cannot read image {path}: {e}")


def cmd_predict(args):
    from .data import normalize
    from .functional import softmax

    model, meta, (mean, std) = _load_for_inference(args.checkpoint)
    cfg = model.config
    images = np.stack([load_image(p, cfg.img_size, cfg.in_chans) for p in args.images])
    x = normalize(images, mean, std)
    from .autograd import no_grad

    with no_grad():
        probs = softmax(model(x)).numpy()
    classes = meta.get("classes") or [str(i) for i in range(cfg.num_classes)]
    k = min(args.top, cfg.num_classes)
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:k]
        print(path)
        for i in top:
            print(f"  {classes[i]:>12s}  {p[i]:.3f}")
    return 0


def cmd_demo(args):
    from .train import Trainer, TrainConfig

    out = args.out or "runs/demo"
    cfg = TrainConfig(model="vit_demo_patch4_32", dataset="procedural", num_samples=args.num_samples,
                      val_size=0, epochs=args.epochs, batch_size=128, lr=2e-3, weight_decay=0.05,
                      warmup_epochs=0.5, label_smoothing=0.0, out_dir=out, seed=args.seed, log_every=10,
                      progress=not args.no_progress)
    print("minivit demo: a small ViT learns to name the shape hidden in each 32x32 image "
          "(procedural data, 10 classes, chance 10%)")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    print(f"model {cfg.model}: {trainer.model.num_parameters():,} parameters; "
          f"{len(trainer.train_set)} training, {len(trainer.test_set)} test images; "
          f"setup {time.perf_counter() - start:.1f} s")
    final = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    print(f"\ntest accuracy {final['test_acc']:.1%} after {cfg.epochs} epochs ({minutes:.1f} min, first step "
          f"done {trainer.time_to_first_step:.1f} s after start); "
          f"curves: {Path(out) / 'curves.png'}; checkpoint: {Path(out) / 'best.npz'}")
    return 0


def cmd_analyze(args):
    from . import data as mdata
    from .analysis.report import analyze, sample_images

    model, meta, (mean, std) = _load_for_inference(args.checkpoint)
    train_cfg = meta.get("train_config", {})
    ds = mdata.load_dataset(train_cfg.get("dataset", "cifar10"), args.data_dir or train_cfg.get("data_dir"),
                            "test", seed=0)
    ds = sample_images(ds, args.images)
    x = mdata.normalize(ds.images, mean, std)
    paths = analyze(model, {"x": x, "display": ds.images}, args.out, distance_images=args.images)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_fewshot(args):
    from . import data as mdata
    from .analysis.fewshot import fewshot_from_checkpoint

    model, meta, (mean, std) = _load_for_inference(args.checkpoint)
    train_cfg = meta.get("train_config", {})
    dataset = args.dataset or train_cfg.get("dataset", "cifar10")
    data_dir = args.data_dir or train_cfg.get("data_dir")
    shots = [int(s) for s in args.shots.split(",")]
    results = fewshot_from_checkpoint(model, (mean, std), mdata.load_dataset(dataset, data_dir, "train"),
                                      mdata.load_dataset(dataset, data_dir, "test"), shots, seeds=args.seeds,
                                      test_images=args.test_images)
    for k, acc in results.items():
        print(f"{k:>3d}-shot linear accuracy: {acc:.4f}")
    return 0


def cmd_kernels(args):
    import kernels

    current = kernels.selection()
    for impl in kernels.available(args.op):
        mark = "*" if current.get(impl.op) == impl.name else " "
        print(f"{mark} {impl.op:22s} {impl.name:12s} {impl.device:4s} {impl.description}")
    print("* = runs now (choose with --kernels op=name or MINIVIT_KERNELS)")
    return 0


def cmd_models(args):
    from .variants import list_models, model_config

    for name in list_models(args.pattern):
        c = model_config(name)
        print(f"{name:28s} img {c.img_size:3d}  patch {c.patch_size:2d}  depth {c.depth:2d}  "
              f"width {c.embed_dim:4d}  heads {c.num_heads:2d}  classes {c.num_classes}")
    return 0


def cmd_recipes(args):
    from .train.recipes import RECIPES

    for name, recipe in RECIPES.items():
        print(f"{name}: {recipe['__doc__']}")
        print("    " + " ".join(f"{k}={v}" for k, v in recipe.items() if k != "__doc__"))
    return 0


def cmd_sweep(args):
    from .train.sweep import parse_grid, parse_point, run_sweep

    if not args.out:
        raise SystemExit("minivit sweep needs --out DIR (the folder for its runs and tables)")
    if args.resume:
        raise SystemExit("a sweep resumes by itself: run the same command again to skip finished points")
    args.out, out = None, args.out
    cfg = train_config_from_args(args)
    if not args.grid and not args.point:
        raise SystemExit("minivit sweep needs --grid key=v1,v2 ... or one or more --point key=v ...")
    try:
        grid = parse_grid(args.grid or [])
        points = [parse_point(p) for p in args.point or []]
    except ValueError as e:
        raise SystemExit(str(e))
    rows = run_sweep(cfg, grid, out, points)
    print((Path(out) / "results.md").read_text() if rows else "no results")
    return 0


def cmd_bench(args):
    import json as _json

    from .analysis.throughput import bench_models, plot_bench

    names = args.models.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = bench_models(names, sizes, args.batch_size, args.budget_gib)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.json").write_text(_json.dumps(rows, indent=1))
        print("plot:", plot_bench(rows, Path(args.out) / "bench.png"))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="minivit", description="A readable, fast Vision Transformer on NumPy.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a ViT")
    _add_train_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy of a checkpoint on a dataset split")
    e.add_argument("checkpoint")
    e.add_argument("--dataset")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test")
    e.add_argument("--batch-size", type=int, default=256)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="top-5 classes of image files")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top", type=int, default=5)
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("demo", help="train a small ViT on procedural data (about two minutes)")
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--num-samples", type=int, default=10000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("analyze", help="the paper's analysis figures for a checkpoint")
    a.add_argument("checkpoint")
    a.add_argument("--out", required=True)
    a.add_argument("--data-dir")
    a.add_argument("--images", type=int, default=256, help="test images for attention distance")
    a.set_defaults(func=cmd_analyze)

    f = sub.add_parser("fewshot", help="few-shot linear evaluation of frozen features")
    f.add_argument("checkpoint")
    f.add_argument("--shots", default="1,5,10,25")
    f.add_argument("--seeds", type=int, default=3)
    f.add_argument("--dataset")
    f.add_argument("--data-dir")
    f.add_argument("--test-images", type=int, default=2000)
    f.set_defaults(func=cmd_fewshot)

    s = sub.add_parser("sweep", help="train a grid of model options and tabulate the results")
    _add_train_args(s)
    s.add_argument("--grid", nargs="+", help="key=v1,v2 ... (ViT or training options): every combination")
    s.add_argument("--point", nargs="+", action="append",
                   help="key=v ...: one explicit point (repeat --point for more); after the grid's points")
    s.set_defaults(func=cmd_sweep)

    b = sub.add_parser("bench", help="empirical compute cost: throughput and memory vs resolution")
    b.add_argument("what", choices=["model"])
    b.add_argument("--models", default="vit_tiny_patch16_224,vit_small_patch16_224,vit_tiny_patch32_224")
    b.add_argument("--sizes", default="64,128,224")
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--budget-gib", type=float, default=1.0)
    b.add_argument("--out")
    b.set_defaults(func=cmd_bench)

    k = sub.add_parser("kernels", help="list kernel implementations")
    k.add_argument("op", nargs="?")
    k.set_defaults(func=cmd_kernels)

    m = sub.add_parser("models", help="list named model variants")
    m.add_argument("pattern", nargs="?")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("recipes", help="list named training recipes")
    r.set_defaults(func=cmd_recipes)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .train.checkpoint import CheckpointError
    from .data import DataNotFoundError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (CheckpointError, DataNotFoundError, FloatingPointError, ValueError, TypeError) as e:
        if os.environ.get("MINIVIT_DEBUG"):
            raise
        print(f"error: {e}\n(set MINIVIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
