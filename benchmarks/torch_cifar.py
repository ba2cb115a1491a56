"""A `minivit train` recipe run in PyTorch on timm's VisionTransformer: the peer of a minivit
training run (issue 12: 80% CIFAR-10 test accuracy in an hour on 2 cores, plain ViT).

It takes minivit train's flags (--recipe, --epochs, --time-limit, --ema-decay, ...) and follows
the TrainConfig they make with as much of minivit as a PyTorch run can share:
    initial weights  minivit builds the model (its seed, its init: timm-style or mimetic) and
                     timm's VisionTransformer loads them (the state-dict names agree)
    batches          minivit.data's loader: the same split, order, crops, padding, flips and
                     normalisation; low resolution by the same area average
    optimizer        torch.optim.AdamW (betas 0.9/0.999, eps 1e-8) over the groups of
                     minivit.train.param_groups (no decay for biases, norms, tokens, pos_embed)
    schedule         the same objects set torch's learning rates: minivit.optim.WarmupSchedule,
                     or train.budget.TimeBudgetSchedule for --schedule-by time
    the rest         label smoothing, gradient clipping, the weight EMA (train.ema's decay rule),
                     flip TTA, the test set every epoch / at the end, the switch to full
                     resolution (pos_embed and its AdamW moments resampled with
                     posemb.resize_pos_embed), a time limit that counts evaluations
What differs: dropout's random numbers, float summation orders, PyTorch's kernels. No --resume.

    PYTHONPATH=. /work/timm-venv/bin/python benchmarks/torch_cifar.py --recipe cifar10-hour-all \\
        --data-dir ../shared/data/cifar10-jpeg --out runs/torch-hour-all
    PYTHONPATH=. /work/timm-venv/bin/python benchmarks/torch_cifar.py --recipe cifar10-hour-all \\
        --dataset procedural --num-samples 512 --max-steps 5 --out /tmp/torch-smoke     # a smoke test

Prints a line per epoch (images/s of training, losses, accuracies) and writes metrics.json (the
config, the versions and threads, every epoch's record and the final one) into --out. A run that
stops early (--max-steps, --time-limit) is evaluated where it stops.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import timm
from timm.models.vision_transformer import VisionTransformer

from minivit import data as mdata
from minivit import posemb, rng
from minivit.cli.args import add_train_args, train_config_from_args
from minivit.data.transforms import area_resize
from minivit.optim import WarmupSchedule
from minivit.posemb import resize_pos_embed
from minivit.train import param_groups
from minivit.train.budget import TimeBudgetSchedule
from minivit.train import runinfo
from minivit.train.ema import ema_decay_at
from minivit.variants import create_model
from minivit.vit import mimetic_init


# ---- the model: minivit's initial weights in timm's VisionTransformer ------------------------------
def build_model(cfg, num_classes, in_chans):
    """(timm model, minivit model) starting from the weights minivit's Trainer would start from."""
    rng.manual_seed(cfg.seed)
    mv = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs)
    if cfg.init == "mimetic":
        mimetic_init(mv, rng.generator())
    c = mv.config
    if c.pos_embed not in ("learn", "sincos") or c.pos_embed_at != "input" or c.representation_size:
        raise SystemExit(f"torch_cifar.py runs plain ViTs (pos_embed learn or sincos, added at the input); "
                         f"{cfg.model} has pos_embed={c.pos_embed!r}, pos_embed_at={c.pos_embed_at!r}")
    model = VisionTransformer(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans,
                              num_classes=c.num_classes, global_pool=c.global_pool, embed_dim=c.embed_dim,
                              depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                              class_token=c.class_token, fc_norm=c.fc_norm, pos_drop_rate=c.drop_rate,
                              proj_drop_rate=c.drop_rate, attn_drop_rate=c.attn_drop_rate,
                              drop_path_rate=c.drop_path_rate, patch_drop_rate=c.patch_drop_rate)
    state = {k: torch.from_numpy(v.copy()) for k, v in mv.state_dict().items()}
    if c.pos_embed == "sincos":  # a fixed table: timm holds it in pos_embed, frozen
        state["pos_embed"] = torch.from_numpy(mv.position_embedding()[None].copy())
        model.pos_embed.requires_grad_(False)
    model.load_state_dict(state)
    model.patch_embed.strict_img_size = False  # any multiple of the patch: low resolution first
    return model, mv


def optimizer_groups(model, mv, weight_decay):
    """minivit.train.param_groups's groups, in its order, as the timm model's parameters."""
    own = dict(model.named_parameters())
    name = {id(p): n for n, p in mv.named_parameters()}
    return [{"params": [own[name[id(p)]] for p in g["params"] if own[name[id(p)]].requires_grad],
             "weight_decay": g["weight_decay"]} for g in param_groups(mv, weight_decay)]


# ---- resolution ------------------------------------------------------------------------------------
def pos_embed_at(mv_config, table, img_size):
    """The position embedding `table` (1, N, D) resampled to img_size (sincos: recomputed)."""
    P, prefix = mv_config.patch_size, 1 if mv_config.class_token else 0
    grid = (img_size // P,) * 2
    if mv_config.pos_embed == "sincos":
        fixed = np.zeros((1, prefix + grid[0] * grid[1], mv_config.embed_dim), np.float32)
        fixed[0, prefix:] = posemb.sincos_2d(grid, mv_config.embed_dim)
        return torch.from_numpy(fixed)
    old = int(round(((table.shape[1] - prefix) ** 0.5)))
    return torch.from_numpy(resize_pos_embed(table.detach().cpu().numpy(), (old, old), grid, prefix))


def switch_resolution(model, mv_config, optimizer, ema, img_size):
    """pos_embed, its AdamW moments and its EMA resampled to img_size (as train/resolution.py)."""
    pe = model.pos_embed
    pe.data = pos_embed_at(mv_config, pe.data, img_size)
    if mv_config.pos_embed == "learn":
        state = optimizer.state.get(pe, {})
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() == 3:
                state[key] = pos_embed_at(mv_config, value, img_size)
        if ema is not None:
            ema["pos_embed"] = pos_embed_at(mv_config, ema["pos_embed"], img_size)


@contextmanager
def swapped(model, arrays):
    """The model's parameters replaced by `arrays` ({name: tensor}) within the block."""
    kept = {}
    for name, p in model.named_parameters():
        if arrays and name in arrays:
            kept[name], p.data = p.data, arrays[name]
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            if name in kept:
                p.data = kept[name]


# ---- evaluation ------------------------------------------------------------------------------------
def evaluate(model, loader, flip_tta):
    """(mean loss, accuracy); with flip_tta on the mean logits of each image and its mirror image."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader.epoch(0):
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits = model(x)
            if flip_tta:
                logits = (logits + model(x.flip(-1))) / 2
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    model.train()
    return total / max(count, 1), correct / max(count, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(parser)
    args = parser.parse_args(argv)
    if args.resume:
        raise SystemExit("torch_cifar.py does not resume: start a new run")
    cfg = train_config_from_args(args)
    if cfg.optimizer != "adamw":
        raise SystemExit("torch_cifar.py runs AdamW (minivit's recipes' optimizer)")
    if cfg.mixup_alpha or cfg.cutmix_alpha:
        raise SystemExit("torch_cifar.py does not mix images (mixup/CutMix): run without --mixup-alpha/--cutmix-alpha")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = runinfo.describe()

    # data: as minivit's Trainer builds it
    full = mdata.load_dataset(cfg.dataset, cfg.data_dir, "train", num_samples=cfg.num_samples, seed=cfg.seed)
    test_set = (mdata.load_dataset(cfg.dataset, cfg.data_dir, "test", seed=cfg.seed)
                if cfg.eval_test != "never" else None)
    train_set, val_set = (mdata.split_train_val(full, cfg.val_size, seed=cfg.seed) if cfg.val_size
                          else (full, None))
    mean, std = mdata.stats_for(full)
    common = dict(mean=mean, std=std, seed=cfg.seed)
    train_loader = mdata.DataLoader(train_set, cfg.batch_size, shuffle=True, augment=cfg.augment, drop_last=True,
                                    crop_padding=cfg.crop_padding, trivial_augment=cfg.trivial_augment,
                                    random_erase=cfg.random_erase, random_erase_mode=cfg.random_erase_mode, **common)
    eval_kw = dict(shuffle=False, augment=False, drop_last=False, **common)
    val_loader = mdata.DataLoader(val_set, 256, **eval_kw) if val_set is not None else None
    test_loader = mdata.DataLoader(test_set, 256, **eval_kw) if test_set is not None else None

    torch.manual_seed(cfg.seed)
    model, mv = build_model(cfg, train_set.num_classes, train_set.images.shape[-1])
    full_size, mc = mv.config.img_size, mv.config
    optimizer = torch.optim.AdamW(optimizer_groups(model, mv, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                                  eps=1e-8)
    steps_per_epoch = len(train_loader)
    total_steps, warmup = cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))
    schedule = (TimeBudgetSchedule(optimizer, cfg.time_limit, warmup, cfg.schedule, cfg.min_lr)
                if cfg.schedule_by == "time" else
                WarmupSchedule(optimizer, total_steps, warmup, cfg.schedule, cfg.min_lr))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ema = None  # {name: tensor} once the first step is done
    print(f"timm {timm.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{cfg.model}: {sum(p.numel() for p in model.parameters()):,} parameters; {len(train_set)} training images")

    def evaluate_all(record, test):
        """Validation (and test) of the weights kept (the EMA when on), at the full size."""
        resized = size != full_size
        kept_pe = model.pos_embed.data
        ema_full = None if ema is None else {
            n: pos_embed_at(mc, e, full_size) if n == "pos_embed" and resized else e for n, e in ema.items()}
        model.pos_embed.data = pos_embed_at(mc, kept_pe, full_size) if resized else kept_pe
        with swapped(model, ema_full):
            for name, loader in (("val", val_loader), ("test", test_loader if test else None)):
                if loader is not None:
                    record[f"{name}_loss"], record[f"{name}_acc"] = evaluate(model, loader, cfg.flip_tta)
        model.pos_embed.data = kept_pe
        record["seconds"] = time.perf_counter() - start
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()),
              flush=True)
        return record

    records, step, size, stop = [], 0, full_size, None
    low_steps = int(round(cfg.low_res_fraction * total_steps))
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        seen, loss_sum, hits, train_seconds = 0, 0.0, 0, 0.0
        for x, y in train_loader.epoch(epoch):
            t0 = time.perf_counter()
            elapsed = t0 - start
            if cfg.low_res_size:
                low = (elapsed < cfg.low_res_fraction * cfg.time_limit if cfg.schedule_by == "time"
                       else step < low_steps)
                want = cfg.low_res_size if low else full_size
                if want != size:
                    switch_resolution(model, mc, optimizer, ema, want)
                    size = want
                x = area_resize(x, size) if x.shape[-1] != size else x
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            with torch.no_grad():
                if cfg.ema_decay:
                    d = ema_decay_at(step, cfg.ema_decay, cfg.ema_warmup)
                    named = {n: p for n, p in model.named_parameters() if p.requires_grad}  # as minivit: the
                    if ema is None:  # optimizer's parameters, not a fixed sin-cos table
                        ema = {n: p.detach().clone() for n, p in named.items()}
                    else:
                        for n, e in ema.items():
                            e.lerp_(named[n].detach(), 1.0 - d)
            if isinstance(schedule, TimeBudgetSchedule):
                schedule.set_elapsed(time.perf_counter() - start)
            seen, loss_sum = seen + len(y), loss_sum + float(loss.detach()) * len(y)
            hits += int((logits.argmax(1) == y).sum())
            train_seconds += time.perf_counter() - t0
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop = "max_steps"
            elif cfg.time_limit is not None and time.perf_counter() - start > cfg.time_limit:
                stop = "time_limit"
            if stop:
                break
        record = {"epoch": epoch + (seen / cfg.batch_size) / steps_per_epoch if stop else epoch + 1, "step": step,
                  "train_loss": loss_sum / max(seen, 1), "train_acc": hits / max(seen, 1),
                  "images_per_s": seen / train_seconds if train_seconds else 0.0, "img_size": size,
                  "lr": optimizer.param_groups[0]["lr"]}
        last = stop is not None or epoch + 1 == cfg.epochs
        records.append(evaluate_all(record, cfg.eval_test == "epoch" or (last and cfg.eval_test == "end")))
        if stop:
            records[-1]["stopped"] = stop
            break
    result = {"config": asdict(cfg), "run": runinfo.finish(run), "torch": torch.__version__, "timm": timm.__version__,
              "threads": torch.get_num_threads(),
              # minivit's malloc settings (kernels/cpu/memory.py) apply only once its CPU kernels load
              "glibc_keeps_freed_memory": bool(sys.modules.get("kernels.cpu.memory")
                                               and sys.modules["kernels.cpu.memory"].keeping_freed_memory()),
              "epochs": records, "final": records[-1] if records else {}}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'metrics.json'}")
    return result


if __name__ == "__main__":
    main()
