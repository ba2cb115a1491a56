"""Self-supervised pre-training by masked patch prediction (ViT paper, Sec. 4.6, Appendix B.1.2;
the model and the objective are minivit/mpp.py), then fine-tuning as for any checkpoint:

    from minivit.train.pretrain import PretrainConfig, PretrainTrainer
    PretrainTrainer(PretrainConfig(model="vit_mini_patch4_32", out_dir="runs/mpp")).fit()
    Trainer(TrainConfig(model="vit_mini_patch4_32", init_from="runs/mpp/encoder.npz")).fit()

`PretrainTrainer` is the Trainer with three things changed: the model is the MaskedPatchPrediction
of the ViT that `model` names (PretrainConfig adds {"arch": "mpp", ...} to model_kwargs, so the
Trainer's own `create_model` builds it, and optimizer, schedule and resume need nothing new); each
step corrupts half of every image's patch embeddings and scores the 3-bit mean colour of each
corrupted patch (the labels are not used); `evaluate`, which the Trainer calls at the end of an
epoch, scores that on the validation images (a fixed corruption), so that "val_loss" and
"val_acc" are masked patch prediction's. "train_acc" and "val_acc" are the fraction of corrupted
patches whose colour class was predicted right. CPU only: the corruption and the targets are
NumPy arrays.

A run folder holds what a training run's holds (checkpoint.npz, resumable, with the [mask]
embedding and the colour head), and encoder.npz: the ViT alone, without the [mask] embedding and
without any head, a checkpoint that `minivit train --init-from` (init_from_checkpoint) loads into
a classifier whose new zero head it keeps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import rng
from ..autograd import no_grad
from ..mpp import draw_corruption, mean_colour_targets, mpp_loss, pixels_from_normalized
from ..vit import ViT
from .checkpoint import save_checkpoint
from .trainer import TrainConfig, Trainer

OBJECTIVES = ("mpp",)


@dataclass
class PretrainConfig(TrainConfig):
    objective: str = "mpp"
    mask_ratio: float = 0.5  # fraction of each image's patches corrupted
    mask_token_prob: float = 0.8  # of those: replaced by the [mask] embedding
    random_patch_prob: float = 0.1  # ... by another patch's embedding (the rest kept as they are)
    mpp_bits: int = 3  # bits per channel of the colour target: 2^(3 bits) = 512 classes for RGB
    eval_test: str = "never"  # the test labels mean nothing to the pre-training objective

    def __post_init__(self):
        from ..variants import family_of

        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.init_from:
            raise ValueError("pre-training starts from scratch; init_from is for fine-tuning")
        if self.mixup_alpha or self.cutmix_alpha or self.random_erase:
            raise ValueError("mixup_alpha, cutmix_alpha and random_erase mix or hide the pixels that masked patch "
                             "prediction's targets are made of; leave them at 0 for pre-training")
        if family_of(self.model) != "vit":
            raise ValueError(f"masked patch prediction pre-trains a ViT; {self.model!r} is a {family_of(self.model)}")
        draw_corruption(1, 2, np.random.default_rng(0), self.mask_ratio, self.mask_token_prob,
                        self.random_patch_prob)  # a ValueError now for probabilities that do not add up
        # the ViT built as its masked patch predictor (variants.create_model), the head of the colour classes
        self.model_kwargs = {**self.model_kwargs, "arch": "mpp", "mpp_bits": self.mpp_bits, "num_classes": None}


class PretrainTrainer(Trainer):
    """The Trainer, pre-training the ViT that `cfg.model` names by masked patch prediction."""

    def train_step(self, x, y):
        """One step of masked patch prediction; returns (loss, corrupted patches predicted right,
        counted in images' worth so that the epoch's accuracy is a fraction of patches)."""
        cfg = self.cfg
        targets = self.targets(x)  # (B, Np) from the un-normalised pixels
        plan = draw_corruption(*targets.shape, rng.generator(), cfg.mask_ratio, cfg.mask_token_prob,
                               cfg.random_patch_prob)
        loss, correct = mpp_loss(self.model(x, plan), targets, plan)
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {self.step}; lower --lr or raise --warmup-epochs")
        self.update(loss)
        per_image = plan.corrupted.sum() / len(x)
        return value, float(correct / per_image)

    def targets(self, x):
        """(B, Np) colour classes of a loader batch, from the pixels behind its normalisation."""
        pixels = pixels_from_normalized(x, self.mean, self.std)  # uint8 (B, C, H, W)
        return mean_colour_targets(pixels, self.model.config.patch_size, self.cfg.mpp_bits)

    def evaluate(self, loader):
        """(loss, accuracy) of masked patch prediction over a loader (the Trainer's hook, so that
        val_loss and val_acc are these), each batch corrupted as drawn from a fixed seed: the same
        patches every epoch."""
        was_training, cfg = self.model.training, self.cfg
        self.model.eval()
        gen = np.random.default_rng([cfg.seed, 4242])
        total, right, count = 0.0, 0, 0
        with no_grad():
            for x, _ in loader.epoch(0):
                targets = self.targets(x)
                plan = draw_corruption(*targets.shape, gen, cfg.mask_ratio, cfg.mask_token_prob, cfg.random_patch_prob)
                loss, correct = mpp_loss(self.model(x, plan), targets, plan)
                n = int(plan.corrupted.sum())
                total, right, count = total + float(loss.item()) * n, right + correct, count + n
        self.model.train(was_training)
        return total / max(count, 1), right / max(count, 1)

    def save(self, path=None):
        saved = super().save(path)
        if path is None:  # the run's checkpoint: export the encoder beside it
            self.export_encoder(self.out / "encoder.npz")
        return saved

    def export_encoder(self, path):
        """The pre-trained ViT alone (no [mask] embedding, no head) as a checkpoint for fine-tuning."""
        encoder = ViT(config=self.model.config.encoder(), dtype=self.model.dtype)
        own = encoder.state_dict()
        encoder.load_state_dict({k: v for k, v in self.model.state_dict().items() if k in own})
        return save_checkpoint(Path(path), encoder, None, classes=list(self.train_set.classes),
                               normalization={"mean": list(self.mean), "std": list(self.std)},
                               pretraining={"objective": self.cfg.objective, "step": self.step})
