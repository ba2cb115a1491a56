"""TrainConfig: every option of a training run (`minivit train`'s flags, minivit/cli/args.py), each
checked when the config is made, and the list of those that change a run's trajectory, which a
resumed run may not change. The names an option chooses from are defined once, beside what
they name: optimizers and schedules in optim.OPTIMIZERS and optim.SCHEDULES, datasets in
minivit.data.DATASETS, the rest below (EVAL_TEST, SCHEDULE_BY, INITS); the CLI offers their keys.

The options of the CIFAR-10-in-an-hour recipes each switch one trick on, in the trainer:
    ema_decay, ema_warmup        an exponential moving average of the weights (train/ema.py)
    flip_tta                     evaluation on the mean logits of each image and its mirror image
    eval_test                    the test set every epoch, only at the end, or never
    schedule_by, time_limit      the learning-rate decay spread over a time budget (train/budget.py)
    init                         mimetic initialisation of attention (vit.mimetic_init)
    low_res_size, low_res_fraction   low resolution first (train/resolution.py)
    crop_padding                 reflect padding for the random crop (data/transforms.py)
and the stronger augmentation of the 85%-in-an-hour work (data/augment.py):
    trivial_augment              one random photometric or geometric operation per image
    random_erase, random_erase_mode   a random rectangle of the image erased, with this probability
    mixup_alpha, cutmix_alpha    each batch mixed with its mirror image (mixup, or CutMix), the loss likewise
and one option of the model (model_kwargs, `--patch-drop-rate`):
    patch_drop_rate              each training image keeps a random subset of its patch tokens
                                 (functional.patch_dropout): cheaper steps, and a regulariser
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .. import device as _device
from .. import optim
from ..data import DATASETS
from ..data.augment import ERASE_MODES
from ..data.transforms import PADDING_MODES
from ..vit import config_from_dict

EVAL_TEST = ("epoch", "end", "never")  # when the test split is scored: every epoch, after the last, never
SCHEDULE_BY = ("steps", "time")
INITS = ("timm", "mimetic")


@dataclass
class TrainConfig:
    model: str = "vit_cifar_patch4_32"
    model_kwargs: dict = field(default_factory=dict)  # ViT overrides, e.g. {"depth": 4}
    dataset: str = "cifar10"
    data_dir: str | None = None
    num_samples: int | None = None  # a subset of the training set (procedural: how many to generate)
    val_size: float = 5000  # images carved from train for validation: a count (>= 1), a fraction (< 1), or 0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"  # a key of optim.OPTIMIZERS: adamw | adam | sgd
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only: Nesterov momentum (timm's "sgd" too); False: plain (heavy-ball) momentum
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # a key of optim.SCHEDULES: cosine | linear | constant
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    augment: bool = True
    seed: int = 0
    out_dir: str = "runs/run"
    kernels: str = ""  # e.g. "attention=cpu_v1,layernorm=reference", or "reference" for every op
    log_every: int = 20
    # When the test split is scored: "epoch" (every epoch), "end" (after the last one only) or "never"
    # (no test set is loaded). True and False, which configs saved before held, read as "epoch" and "never".
    eval_test: str = "epoch"
    save_every: int = 0  # also checkpoint every this many steps (0: at epoch ends only)
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    init_from: str | None = None  # start from these weights (fine-tuning); see finetune.py
    progress: bool = True
    device: str = "cpu"  # "cpu" or "cuda" (minivit.device)
    # Seconds of training in total, a resumed run's earlier time included (evaluations count,
    # building the data and the model do not): stop, saved and evaluated, at the first step past it.
    time_limit: float | None = None
    schedule_by: str = "steps"  # the lr decay spans the `epochs` ("steps") or `time_limit` seconds ("time")
    # Weight EMA: 0 is off; else evaluation, best.npz and the final result use the average.
    ema_decay: float = 0.0
    ema_warmup: bool = True  # decay after step n: min(ema_decay, 1 - n^(-3/4)) (timm's ModelEmaV3 warm-up)
    flip_tta: bool = False  # evaluate on the mean logits of each image and its horizontal flip
    init: str = "timm"  # "timm": trunc-normal weights; "mimetic": attention as Trockman & Kolter 2023
    low_res_size: int | None = None  # train on images area-averaged to this size first (e.g. 16)
    low_res_fraction: float = 0.0  # ... for this fraction of the budget (of the steps, or of time_limit by time)
    crop_padding: str = "zeros"  # what the random crop pads with: "zeros" | "reflect"
    trivial_augment: bool = False  # TrivialAugment (wide): one random operation per image, after the crop
    random_erase: float = 0.0  # probability that an image has a random rectangle erased (0: off)
    random_erase_mode: str = "pixel"  # what fills it: "pixel" (standard-normal noise) | "zeros" (the mean colour)
    mixup_alpha: float = 0.0  # mixup with lam ~ Beta(alpha, alpha) (0: off; 0.8 in DeiT)
    cutmix_alpha: float = 0.0  # CutMix likewise (0: off; 1.0 in DeiT); with both, one or the other per batch

    def __post_init__(self):
        integers = {"epochs": 1, "batch_size": 1, "log_every": 1, "save_every": 0, "seed": 0}
        for name, low in integers.items():
            _check(name, getattr(self, name), integer=True, low=low)
        for name in ("num_samples", "max_steps", "low_res_size"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), integer=True, low=1)
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "val_size"):
            _check(name, getattr(self, name), low=0)
        _check("momentum", self.momentum, low=0, high=1)
        _check("label_smoothing", self.label_smoothing, low=0, high=1, high_closed=True)
        _check("ema_decay", self.ema_decay, low=0, high=1)
        _check("low_res_fraction", self.low_res_fraction, low=0, high=1)
        _check("random_erase", self.random_erase, low=0, high=1, high_closed=True)
        _check("mixup_alpha", self.mixup_alpha, low=0)
        _check("cutmix_alpha", self.cutmix_alpha, low=0)
        _choice("random_erase_mode", self.random_erase_mode, ERASE_MODES)
        if self.grad_clip is not None:
            _check("grad_clip", self.grad_clip, low=0, low_open=True)
        if self.val_size >= 1:  # a count: 5000 and 5000.0 both mean 5000 images
            if self.val_size != int(self.val_size):
                raise ValueError(f"val_size is a count of images (>= 1) or a fraction (< 1), got {self.val_size}")
            self.val_size = int(self.val_size)
        _choice("optimizer", self.optimizer, optim.OPTIMIZERS)
        _choice("schedule", self.schedule, optim.SCHEDULES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("schedule_by", self.schedule_by, SCHEDULE_BY)
        _choice("init", self.init, INITS)
        _choice("crop_padding", self.crop_padding, PADDING_MODES)
        for name in ("ema_warmup", "flip_tta", "nesterov", "trivial_augment"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self.eval_test = eval_test_from(self.eval_test)
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0 (or set nesterov=False for plain SGD)")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict of ViT options, got {self.model_kwargs!r}")
        _device.resolve(self.device)  # a ValueError for an unknown name; availability is checked by the Trainer
        if self.time_limit is not None:
            _check("time_limit", self.time_limit, low=0, low_open=True)
        if self.schedule_by == "time" and self.time_limit is None:
            raise ValueError("schedule_by='time' spreads the schedule over time_limit seconds: set time_limit")
        if (self.low_res_size is None) != (self.low_res_fraction == 0):
            raise ValueError("low_res_size and low_res_fraction go together: a size to train at first and the fraction "
                             f"of the budget spent there (got {self.low_res_size}, {self.low_res_fraction})")
        if self.init == "mimetic" and self.init_from:
            raise ValueError("init='mimetic' initialises a model from scratch; init_from loads trained weights")

    @classmethod
    def from_dict(cls, d):
        return config_from_dict(cls, d, "training")

    def trajectory_keys(self):
        """The options a resumed run must share with the run it resumes (CheckpointError otherwise)."""
        return _TRAJECTORY_KEYS + (("time_limit",) if self.schedule_by == "time" else ())


# Settings that change the loss trajectory, or (ema_*) the weights a run evaluates and keeps: a
# resumed run must use the same ones. time_limit joins them when the schedule follows it.
_TRAJECTORY_KEYS = ("model", "model_kwargs", "dataset", "num_samples", "val_size", "epochs", "batch_size",
                    "optimizer", "lr", "min_lr", "weight_decay", "momentum", "nesterov", "warmup_epochs", "schedule",
                    "label_smoothing", "grad_clip", "augment", "seed", "schedule_by", "ema_decay", "ema_warmup",
                    "init", "low_res_size", "low_res_fraction", "crop_padding", "trivial_augment", "random_erase",
                    "random_erase_mode", "mixup_alpha", "cutmix_alpha")


def eval_test_from(value) -> str:
    """TrainConfig.eval_test as one of EVAL_TEST; True and False (the values of configs and
    checkpoints saved before it was a string) become "epoch" and "never". The one place that
    converts them."""
    if isinstance(value, bool):
        return "epoch" if value else "never"
    _choice("eval_test", value, EVAL_TEST)
    return value


def _choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check(name, value, integer=False, low=None, high=None, low_open=False, high_closed=False):
    """A TypeError or ValueError naming the option, what it must be, and what it got."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value > high if high_closed else value >= high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<=' if high_closed else '<'} {high}"
        raise ValueError(f"{name} must be {' and '.join(filter(None, (lo, hi)))}, got {value!r}")
