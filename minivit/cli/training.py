"""`minivit train`, `minivit pretrain`, `minivit demo` and `minivit sweep`."""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path

from .args import check_model_options, checked_config, train_config_from_args


def cmd_train(args):
    cfg = train_config_from_args(args)
    if args.backend == "jax" and cfg.device != "cpu":
        raise SystemExit("--device is the NumPy/CuPy backend's; with --backend jax, JAX picks its devices "
                         "(--devices N; its GPU build for a GPU)")
    say = print  # with several processes, only the first one prints
    if args.backend == "jax":
        try:
            from ..train import distributed
            from ..train.jax_trainer import JaxTrainer, request_host_devices
        except ImportError as e:
            raise SystemExit(f"--backend jax needs JAX ({e}): pip install 'minivit[jax]'")
        _join_processes(args, distributed)  # before JAX computes anything
        request_host_devices(args.devices)  # likewise; with several processes, this process's CPU devices
        processes = distributed.processes()
        trainer = JaxTrainer(cfg, resume=args.resume, devices=args.devices if processes.count == 1 else None)
        say = print if processes.first else (lambda *a, **k: None)
        of = f" of {processes.count} processes" if processes.count > 1 else ""
        say(f"JAX on {trainer.mesh.size} device(s){of}: {', '.join(str(d) for d in trainer.mesh.devices.flat)}")
    else:
        if args.devices is not None:
            raise SystemExit("--devices needs --backend jax")
        if _several_processes_asked(args):
            raise SystemExit("--coordinator-address, --num-processes and --process-id need --backend jax")
        from ..train import Trainer

        trainer = Trainer(cfg, resume=args.resume)
    m = trainer.model
    say(f"model {cfg.model}: {m.num_parameters():,} parameters, {m.config.depth} blocks of width "
        f"{m.config.embed_dim}, {m.num_tokens} tokens; {len(trainer.train_set)} training images; "
        f"run folder {trainer.out}")
    start = time.perf_counter()
    final = trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
    say(f"done in {minutes:.1f} min: {summary}\nrun folder: {trainer.out}")
    return 0


def _several_processes_asked(args):
    return any(v is not None for v in (args.coordinator_address, args.num_processes, args.process_id))


def _join_processes(args, distributed):
    """distributed.initialize from the flags (none of them: JAX looks for a cluster itself); says
    first how long it will wait, since a process that never joins ends this one in JAX's C++."""
    if None not in (args.coordinator_address, args.num_processes, args.process_id) and args.num_processes > 1:
        print(f"process {args.process_id} of {args.num_processes}: joining through {args.coordinator_address} "
              f"(waiting up to {args.init_timeout} s for every process; one lost for {args.heartbeat_timeout} s "
              "stops the others)", flush=True)
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           init_timeout_s=args.init_timeout, heartbeat_timeout_s=args.heartbeat_timeout)


def cmd_pretrain(args):
    """Masked patch prediction (train/pretrain.py): the run folder gets encoder.npz, the ViT without
    its [mask] embedding and colour head, for `minivit train --init-from`."""
    from ..train.pretrain import PretrainConfig, PretrainTrainer

    if args.device not in (None, "cpu"):
        raise SystemExit("minivit pretrain runs on the CPU (its corruption and targets are NumPy arrays)")
    cfg = train_config_from_args(args, cls=PretrainConfig)
    trainer = PretrainTrainer(cfg, resume=args.resume)
    c = trainer.model.config
    print(f"pre-training {cfg.model} by masked patch prediction: {trainer.model.num_parameters():,} parameters, "
          f"{cfg.mask_ratio:.0%} of each image's {c.grid_size[0] * c.grid_size[1]} patches corrupted, "
          f"{c.num_classes} colour classes; {len(trainer.train_set)} training images (labels unused); "
          f"run folder {trainer.out}")
    start = time.perf_counter()
    final = trainer.fit()
    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min: {summary}\n"
          f"encoder for fine-tuning: {trainer.out / 'encoder.npz'}\n"
          f"next: minivit train --model {cfg.model} --init-from {trainer.out / 'encoder.npz'} ...")
    return 0


def cmd_demo(args):
    """A learner's first run: a small ViT (vit_nano_patch8_32, 16 patches of 8x8, 3 blocks) learns
    to name the shape in each image of procedural_easy (big centred shapes; 10 classes) in about
    a minute of a 2-core CPU, then says what it learned class by class and where the plots are."""
    from ..device import require
    from ..train import Trainer, TrainConfig
    from ..train.evaluation import confusion_matrix

    require(args.device or "cpu")  # before anything is printed or built
    out = Path(args.out or "runs/demo")
    cfg = TrainConfig(model="vit_nano_patch8_32", dataset="procedural_easy", num_samples=args.num_samples,
                      val_size=0, epochs=args.epochs, batch_size=64, lr=3e-3, weight_decay=0.05,
                      warmup_epochs=0.5, label_smoothing=0.0, augment=False, out_dir=str(out), seed=args.seed,
                      log_every=20, progress=not args.no_progress, device=args.device or "cpu")
    print("minivit demo: a small ViT learns to name the shape in each 32x32 image "
          "(procedural shapes, 10 classes, chance 10%)")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    print(f"model {cfg.model}: {trainer.model.num_parameters():,} parameters, {trainer.model.num_tokens} tokens; "
          f"{len(trainer.train_set)} training, {len(trainer.test_set)} test images; "
          f"setup {time.perf_counter() - start:.1f} s")
    final = trainer.fit()
    seconds = time.perf_counter() - start
    classes = list(trainer.test_set.classes)
    counts = confusion_matrix(trainer.model, trainer.test_loader, len(classes))
    print(f"\ntest accuracy {final['test_acc']:.1%} after {cfg.epochs} epochs ({seconds:.0f} s, first step "
          f"done {trainer.time_to_first_step:.1f} s after start)")
    print(_per_class_report(counts, classes))
    print(f"curves: {out / 'curves.png'}\ncheckpoint: {out / 'best.npz'}\n"
          f"next: minivit analyze {out / 'best.npz'} --out {out / 'analysis'}   (attention maps, position "
          "embeddings)")
    return 0


def _per_class_report(counts, classes, pairs=3):
    """Accuracy of each class and the most frequent confusions, from a confusion matrix."""
    width = max(len(c) for c in classes)
    lines = ["per class (test images right / seen):"]
    for i, name in enumerate(classes):
        seen = int(counts[i].sum())
        lines.append(f"  {name:<{width}}  {counts[i, i] / max(seen, 1):6.1%}  ({counts[i, i]}/{seen})")
    mistakes = sorted(((int(counts[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
                       if i != j and counts[i, j]), reverse=True)[:pairs]
    if mistakes:
        lines.append("most confused: " + "; ".join(f"{classes[i]} taken for {classes[j]} {n}x" for n, i, j in mistakes))
    else:
        lines.append("no test image was confused")
    return "\n".join(lines)


def cmd_sweep(args):
    from ..train import TrainConfig
    from ..train.sweep import grid_points, parse_grid, parse_point, run_sweep
    from ..vit import ViTConfig

    vit_keys = {f.name for f in fields(ViTConfig)}

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
    for point in grid_points(grid) + points:  # every point's options checked before the first one trains
        values = {**asdict(cfg), **{k: v for k, v in point.items() if k not in vit_keys}}
        values["model_kwargs"] = {**cfg.model_kwargs, **{k: v for k, v in point.items() if k in vit_keys}}
        point_cfg = checked_config(TrainConfig.from_dict, values, f"sweep point {point}")
        check_model_options(point_cfg.model, point_cfg.model_kwargs, f"sweep point {point}")
    rows = run_sweep(cfg, grid, out, points)
    print((Path(out) / "results.md").read_text() if rows else "no results")
    return 0
