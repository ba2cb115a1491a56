"""Argument types and checks for the `minivit` command: each number is checked while the
arguments are parsed (argparse's usage message names what was expected and what was given), and
the options of a training run are assembled and checked here before anything is built."""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

# The tables themselves, not copies of their names: building the parser imports TrainConfig, and
# with it minivit.data and minivit.optim, in any case.
from ..data import DATASETS


# ---- argument types: each parses one string or raises argparse's error naming what it expected
def _checked(cast, expected, ok):
    """An argparse type: cast(text), finite, and ok(value), else "expected <expected>, got '<text>'"."""
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_INT64 = 2**63  # integers beyond what NumPy holds are nonsense for every option
positive_int = _checked(int, "a positive integer", lambda v: 1 <= v < _INT64)
nonnegative_int = _checked(int, "an integer >= 0", lambda v: 0 <= v < _INT64)
positive_float = _checked(float, "a finite number > 0", lambda v: v > 0)
nonnegative_float = _checked(float, "a finite number >= 0", lambda v: v >= 0)
fraction = _checked(float, "a number in [0, 1)", lambda v: 0 <= v < 1)  # dropout, label smoothing


def val_size(text):
    """A fraction in [0, 1) of the training images, or a whole count of them."""
    value = _checked(float, "a fraction in [0, 1) or a whole number of images",
                     lambda v: 0 <= v < 1 or v == int(v))(text)
    return int(value) if value >= 1 else value


def positive_int_list(text):
    """"1,5,10" -> [1, 5, 10]: comma-separated positive integers."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(1 <= v < _INT64 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,5,10, got {text!r}")
    return values


def name_list(text):
    """"a,b" -> ["a", "b"]: comma-separated non-empty names."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


# ViT and training options settable from the command line: field -> argparse type
_MODEL_FLAGS = {
    "img_size": positive_int, "patch_size": positive_int, "embed_dim": positive_int, "depth": positive_int,
    "num_heads": positive_int, "mlp_ratio": positive_float, "global_pool": str, "pos_embed": str,
    "pos_embed_at": str, "drop_rate": fraction, "attn_drop_rate": fraction, "drop_path_rate": fraction,
    "patch_drop_rate": fraction, "representation_size": positive_int,
}
_TRAIN_FLAGS = {  # TrainConfig checks these too; here they fail with argparse's usage message
    "epochs": positive_int, "batch_size": positive_int, "lr": positive_float, "min_lr": nonnegative_float,
    "weight_decay": nonnegative_float, "momentum": fraction, "warmup_epochs": nonnegative_float,
    "label_smoothing": fraction,
    "grad_clip": nonnegative_float, "seed": nonnegative_int, "val_size": val_size, "num_samples": positive_int,
    "save_every": nonnegative_int, "max_steps": positive_int, "log_every": positive_int,
    "time_limit": positive_float, "ema_decay": fraction, "low_res_size": nonnegative_int, "low_res_fraction": fraction,
    "random_erase": fraction, "mixup_alpha": nonnegative_float, "cutmix_alpha": nonnegative_float,
}
_TRAIN_HELP = {
    "grad_clip": "; 0: no clipping",
    "momentum": "; --optimizer sgd only",
    "time_limit": "; seconds of training in total (a resumed run's earlier time included), then a checkpoint "
                  "and an evaluation",
    "ema_decay": "; 0: off; else evaluate and keep (best.npz) an exponential moving average of the weights, "
                 "e.g. 0.999",
    "low_res_size": "; train on images area-averaged to this size first (progressive resizing), e.g. 16; 0: off",
    "low_res_fraction": "; the fraction of the budget (steps, or --time-limit with --schedule-by time) spent at "
                        "--low-res-size",
    "random_erase": "; the probability that an image has a random rectangle erased (Random Erasing), e.g. 0.25",
    "mixup_alpha": "; mixup each batch with its mirror image, lam ~ Beta(alpha, alpha), e.g. 0.8; 0: off",
    "cutmix_alpha": "; CutMix likewise, e.g. 1.0 (with --mixup-alpha: one or the other per batch); 0: off",
}


def add_device_arg(p):
    """--device cpu|cuda: where the model runs (cuda: an NVIDIA GPU through CuPy, the [gpu] extra)."""
    p.add_argument("--device", choices=["cpu", "cuda"], help="cpu (default) or cuda: an NVIDIA GPU through CuPy "
                   "(pip install -e '.[gpu]')")


def add_train_args(p):
    from ..data.augment import ERASE_MODES
    from ..data.transforms import PADDING_MODES
    from ..optim import OPTIMIZERS, SCHEDULES
    from ..train import TrainConfig
    from ..train.config import EVAL_TEST, INITS, SCHEDULE_BY

    d = TrainConfig()
    p.add_argument("--recipe", help="a named recipe (see `minivit recipes`); explicit flags override it")
    p.add_argument("--model", help=f"model name (see `minivit models`; default {d.model})")
    for name, typ in _MODEL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, help="ViT option (overrides the named model)",
                       choices=("token", "avg") if name == "global_pool" else None)
    p.add_argument("--no-class-token", action="store_true", help="no class token (use with --global-pool avg)")
    p.add_argument("--no-qkv-bias", action="store_true")
    p.add_argument("--dataset", choices=list(DATASETS), help=f"default {d.dataset}")
    p.add_argument("--data-dir", help="cifar-10-batches-py, an image-folder tree with train/ and test/, "
                                      "or nothing for the cached download")
    for name, typ in _TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ,
                       help=f"default {getattr(d, name)}" + _TRAIN_HELP.get(name, ""))
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"default {d.optimizer}")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="--optimizer sgd: Nesterov momentum (default), or plain momentum (--no-nesterov)")
    p.add_argument("--schedule", choices=list(SCHEDULES), help=f"default {d.schedule}")
    p.add_argument("--schedule-by", choices=list(SCHEDULE_BY), help="the schedule spans --epochs (steps, the "
                   "default) or --time-limit seconds (time): the learning rate reaches --min-lr when time is up")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--crop-padding", choices=list(PADDING_MODES), help="what the random crop pads with "
                   f"(default {d.crop_padding})")
    p.add_argument("--trivial-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="TrivialAugment: one random photometric or geometric operation per image (default: off)")
    p.add_argument("--random-erase-mode", choices=list(ERASE_MODES), help="what fills an erased rectangle: "
                   f"standard-normal noise (pixel) or the mean colour (zeros) (default {d.random_erase_mode})")
    p.add_argument("--no-test", action="store_true", help="do not evaluate on the test split (--eval-test never)")
    p.add_argument("--eval-test", choices=list(EVAL_TEST), help="evaluate the test split every epoch "
                   f"(epoch), only after the last (end), or never (default {d.eval_test})")
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None, help="evaluate on the mean "
                   "logits of each image and its mirror image (default: off)")
    p.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="EMA decay min(ema_decay, 1 - step^-3/4) (default), or a constant one (--no-ema-warmup)")
    p.add_argument("--init", choices=list(INITS), help=f"weight init (default {d.init}): timm's, or mimetic "
                   "attention (Trockman & Kolter 2023)")
    p.add_argument("--kernels", help="kernel choices, e.g. attention=cpu_v1,layernorm=reference")
    add_device_arg(p)
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--init-from", help="start from this checkpoint's weights (fine-tuning; position "
                                       "embeddings are interpolated when --img-size differs)")
    p.add_argument("--no-progress", action="store_true")


def train_config_from_args(args, cls=None):
    """TrainConfig (or its subclass `cls`, e.g. PretrainConfig) from: defaults < recipe < --resume's
    saved config < explicit flags; the model it names is built as a config (no weights) to check
    its options and its size first."""
    from ..train.recipes import get_recipe
    from ..train import TrainConfig

    cls = cls or TrainConfig
    values = asdict(cls())
    if args.recipe:
        values.update(get_recipe(args.recipe))
    if args.resume:
        if not args.out:
            raise SystemExit("--resume needs --out RUN_FOLDER (the folder holding checkpoint.npz)")
        saved = Path(args.out) / "config.json"
        if not saved.exists():
            raise SystemExit(f"--resume: {saved} not found; is {args.out} a run folder?")
        values.update(_saved_train_values(saved))
        values["max_steps"] = None  # a stop point applies to the run that set it, unless given again
    model_kwargs = values.get("model_kwargs") or {}
    if not isinstance(model_kwargs, dict):
        raise ValueError(f"model_kwargs should be a dict of ViT options, got {model_kwargs!r:.80}")
    model_kwargs = dict(model_kwargs)
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
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("model_kwargs",):
            values[f.name] = value
    if args.grad_clip == 0:
        values["grad_clip"] = None  # TrainConfig's "no clipping"
    if args.low_res_size == 0:  # no low-resolution phase, whatever the recipe says
        values["low_res_size"], values["low_res_fraction"] = None, 0.0
    if args.dataset:
        values["dataset"] = args.dataset
    if args.data_dir:
        values["data_dir"] = args.data_dir
    if args.no_augment:
        values["augment"] = False
    if args.no_test:
        values["eval_test"] = "never"
    if args.no_progress:
        values["progress"] = False
    if args.out:
        values["out_dir"] = args.out
    elif not args.resume:
        values["out_dir"] = f"runs/{values['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = checked_config(cls.from_dict, values, "training options")
    check_model_options(cfg.model, cfg.model_kwargs)
    return cfg


def checked_config(build, values, what):
    """build(values); its TypeError (a wrong type, an unknown key: from a recipe, a sweep grid or a
    run's config.json) or ValueError becomes a ValueError saying `what`, which main() reports."""
    try:
        return build(values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from e


def check_model_options(model: str, model_kwargs: dict, what: str | None = None, training: bool = True):
    """ValueError for a model name or ViT options that do not make a model, or make one whose float32
    weights (for training also gradients and AdamW's two moments) exceed this machine's memory:
    refused in a moment instead of allocating for minutes."""
    from ..variants import model_config
    from ..vit import physical_memory

    config = checked_config(lambda kw: model_config(model, **kw), model_kwargs, what or f"model {model!r}")
    params = config.num_parameters()
    need, ram = 4 * params * (4 if training else 1), physical_memory()
    if ram and need > ram:
        raise ValueError(f"{what or 'model ' + model} with depth={config.depth}, embed_dim={config.embed_dim}, "
                         f"mlp_ratio={config.mlp_ratio}, img_size={config.img_size}, patch_size={config.patch_size} "
                         f"has {params:.3g} parameters: {'training needs' if training else 'its weights need'} "
                         f"{need / 2**30:,.1f} GiB, this machine has {ram / 2**30:,.1f} GiB")
    return config


def _saved_train_values(path: Path) -> dict:
    """The "train" object of a run folder's config.json; ValueError naming the file otherwise."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"--resume: {path} is not valid JSON ({e})") from e
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise ValueError(f"--resume: {path} is not a minivit run config (no \"train\" object)")
    return saved["train"]


def shown(value, limit=200) -> str:
    """repr-like text safe to print: at most `limit` characters, odd file names escaped."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


# ---- several processes (`minivit train --backend jax`): minivit/train/distributed.py ----------------
def add_distributed_args(p):
    """The options of one process among several (one per host: a TPU pod slice, a GPU cluster);
    distributed.initialize checks the address (no JAX import while the arguments are parsed)."""
    g = p.add_argument_group(
        "several processes (--backend jax)",
        "Start the same command once per host, each with its --process-id: all three of --coordinator-address, "
        "--num-processes and --process-id, or none where JAX finds them itself (TPU pod slices, SLURM, Open MPI). "
        "--devices N is then each process's count of CPU devices. --out must be on a file system every process "
        "reads (to --resume). A process lost for --heartbeat-timeout seconds stops the others.")
    g.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's host and a free port there")
    g.add_argument("--num-processes", type=positive_int, metavar="N", help="how many processes (1: just this one)")
    g.add_argument("--process-id", type=nonnegative_int, metavar="I", help="this process's index, 0..N-1")
    g.add_argument("--init-timeout", type=positive_int, default=300, metavar="S",
                   help="seconds to wait for every process to join (default 300)")
    g.add_argument("--heartbeat-timeout", type=positive_int, default=60, metavar="S",
                   help="seconds without a sign of life after which a process counts as lost (default 60)")
