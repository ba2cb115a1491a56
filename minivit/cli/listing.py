"""Commands that list or measure: `minivit kernels`, `models`, `recipes` and `bench model`."""
from __future__ import annotations

import sys
from pathlib import Path

from .args import check_model_options


def cmd_kernels(args):
    import kernels

    device = "gpu" if getattr(args, "device", "cpu") == "cuda" else "cpu"
    current = kernels.selection(device)
    for impl in kernels.available(args.op, device=device):
        mark = "*" if current.get(impl.op) == impl.name else " "
        default = "(default)" if kernels.DEFAULTS.get(impl.device, {}).get(impl.op) == impl.name else ""
        print(f"{mark} {impl.op:22s} {impl.name:12s} {impl.device:4s} {default:9s} {impl.description}")
    print("* = runs now (choose with --kernels op=name, MINIVIT_KERNELS, or MINIVIT_KERNELS=reference for "
          "plain NumPy everywhere); defaults: kernels/registry.py DEFAULTS")
    for device, error in kernels.backend_errors().items():
        print(f"warning: the {device} kernels failed to import ({type(error).__name__}: {error}); "
              "their ops run the NumPy reference", file=sys.stderr)
    return 0


def cmd_models(args):
    from ..variants import family_of, list_models, model_config

    family = None if args.family == "all" else args.family
    names = list_models(args.pattern, family=family)
    if not names:
        among = "" if family is None else f" among the {family} models"
        print(f"no model name matches {args.pattern!r}{among}; `minivit models --family all` lists them all",
              file=sys.stderr)
        return 1
    for name in names:
        c = model_config(name)
        if family_of(name) == "vit":
            print(f"{name:28s} img {c.img_size:3d}  patch {c.patch_size:2d}  depth {c.depth:2d}  "
                  f"width {c.embed_dim:4d}  heads {c.num_heads:2d}  classes {c.num_classes}")
        else:  # the options where the variant differs from its family's defaults
            defaults = type(c)().to_dict()
            options = "  ".join(f"{k} {v}" for k, v in c.to_dict().items() if k != "arch" and defaults.get(k) != v)
            print(f"{name:28s} {family_of(name)}: " + (options or "the family's defaults"))
    return 0


def cmd_recipes(args):
    from ..train.recipes import RECIPES

    for name, recipe in RECIPES.items():
        print(f"{name}: {recipe['__doc__']}")
        print("    " + " ".join(f"{k}={v}" for k, v in recipe.items() if k != "__doc__"))
    return 0


def cmd_bench(args):
    import json as _json

    from ..analysis.throughput import bench_models, plot_bench
    from ..variants import model_config

    patches = {name: model_config(name).patch_size for name in args.models}  # ValueError for unknown names
    measured = [(n, size) for n, p in patches.items() for size in args.sizes if size % p == 0]
    if not measured:
        raise ValueError(f"no size in --sizes {args.sizes} is a multiple of a patch size of "
                         f"{', '.join(f'{n} ({p})' for n, p in patches.items())}: nothing to measure")
    for name, size in measured:  # a 10**5-pixel input would allocate its position table for minutes
        check_model_options(name, {"img_size": size}, f"{name} at {size}x{size}", training=False)
    rows = bench_models(args.models, args.sizes, args.batch_size, args.budget_gib)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.json").write_text(_json.dumps(rows, indent=1))
        print("plot:", plot_bench(rows, Path(args.out) / "bench.png"))
    return 0
