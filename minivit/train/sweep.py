"""Small experiment sweeps: train one model per point of a grid of options and tabulate results.

    minivit sweep --grid pos_embed=none,learn,learn_2d,sincos,relative_1d,relative_bias_2d --epochs 3 \\
        --data-dir ../shared/data/cifar10-jpeg --out experiments/pos_embed

(posemb.KINDS lists the position embeddings; "relative_1d" is the paper's relative attention,
"relative_bias_2d" a learned 2D offset bias, which earlier sweeps called "relative".)

Every grid key is a ViT option (`pos_embed`, `global_pool`, `depth`, `embed_dim`, `patch_size`,
...) or a training option (`lr`, `epochs`, ...). Each point trains in its own run folder under
--out; `results.jsonl` gains a row per finished point (so a stopped sweep resumes by skipping
them), and `results.md` and `results.png` are rewritten after every point.

Comparisons that are not a product of options (depth against width at an equal budget) list
their points one by one instead, each a set of options trained together:

    minivit sweep --point depth=8 embed_dim=64 num_heads=2 --point depth=2 embed_dim=128 num_heads=4 ...
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

from ..vit import ViTConfig
from .trainer import TrainConfig, Trainer

_VIT_KEYS = {f.name for f in fields(ViTConfig)}
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def parse_grid(items):
    """["pos_embed=none,learn", "depth=2,4"] -> {"pos_embed": ["none", "learn"], "depth": [2, 4]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"grid entry {item!r} should look like key=v1,v2")
        if key not in _VIT_KEYS | _TRAIN_KEYS:
            raise ValueError(f"unknown sweep key {key!r}; use a ViT option ({', '.join(sorted(_VIT_KEYS))}) "
                             "or a training option")
        grid[key] = [_parse_value(v) for v in values.split(",")]
    return grid


def parse_point(items):
    """["depth=8", "embed_dim=64"] -> {"depth": 8, "embed_dim": 64}: one explicit sweep point."""
    point = {}
    for key, values in parse_grid(items).items():
        if len(values) != 1:
            raise ValueError(f"a --point gives one value per option, got {key}={','.join(map(str, values))}; "
                             "use --grid for a product of values")
        point[key] = values[0]
    return point


def _parse_value(text):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def grid_points(grid):
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point):
    return "-".join(f"{k}={v}" for k, v in point.items())


def run_sweep(base: TrainConfig, grid, out_dir, points=()):
    """Train every point of the grid, then every explicit point (each a dict of options),
    skipping finished ones; returns the result rows."""
    points = (grid_points(grid) if grid else []) + [dict(p) for p in points]
    if not points:
        raise ValueError("a sweep needs a --grid or at least one --point")
    keys = list(dict.fromkeys(k for p in points for k in p))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[row["point"]] = row
    for point in points:
        name = point_name(point)
        if name in done:
            print(f"[sweep] {name}: done already, skipping")
            continue
        values = asdict(base)
        values["model_kwargs"] = {**base.model_kwargs, **{k: v for k, v in point.items() if k in _VIT_KEYS}}
        values.update({k: v for k, v in point.items() if k not in _VIT_KEYS})
        values["out_dir"] = str(out / name)
        cfg = TrainConfig.from_dict(values)
        print(f"[sweep] {name}")
        start = time.perf_counter()
        trainer = Trainer(cfg)
        final = trainer.fit()
        row = {"point": name, **point, "params": trainer.model.num_parameters(),
               "minutes": (time.perf_counter() - start) / 60,
               **{k: final[k] for k in ("val_acc", "test_acc", "train_acc", "images_per_s") if k in final}}
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[name] = row
        write_tables(list(done.values()), keys, out)
    return list(done.values())


def write_tables(rows, keys, out):
    """results.md (a Markdown table) and results.png (test accuracy per point)."""
    from ..analysis.plots import plot_sweep

    cols = keys + [c for c in ("params", "val_acc", "test_acc", "train_acc", "images_per_s", "minutes")
                   if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    y_key = "test_acc" if any("test_acc" in r for r in rows) else "val_acc"
    plot_rows = [r for r in rows if y_key in r]
    if not plot_rows:
        return
    if all(k in r for r in plot_rows for k in keys[:2]):  # a product grid: x the first key, series the second
        plot_sweep(plot_rows, keys[0], y_key, out / "results.png", label_key=keys[1] if len(keys) > 1 else None)
    else:  # explicit points with different keys: one bar per point
        plot_sweep(plot_rows, "point", y_key, out / "results.png")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4f}" if v < 10 else f"{v:.1f}"
    return "" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
