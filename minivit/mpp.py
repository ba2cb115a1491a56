"""Masked patch prediction (ViT paper, Sec. 4.6 and Appendix B.1.2): self-supervised pre-training in
the manner of BERT's masked language modelling, on patches instead of words.

    1. corrupt 50% of the patch embeddings x_p^i E of each image: of the corrupted ones,
       80% are replaced by a learnable [mask] embedding, 10% by the embedding of another patch
       (drawn at random from the whole batch), 10% are kept as they are
    2. run the ViT as usual (class token, position embeddings, Eq. 1-4)
    3. predict each corrupted patch's 3-bit mean colour (per channel the patch's mean pixel value
       quantised to 8 levels: 8^3 = 512 classes) from its final token, with a linear head;
       cross-entropy over the corrupted patches only

The targets come from the images' pixels as stored (uint8, 0..255), not from the normalised
inputs the model sees: `pixels_from_normalized` undoes the loader's normalisation exactly. The
level of a channel is floor(mean / 32), its top 3 bits, computed in integers so that a mean on
a level boundary is never rounded to the level below. Pre-training then fine-tuning:
minivit/train/pretrain.py (`minivit pretrain --objective mpp`, then `minivit train --init-from`).

Shape letters: B batch, C channels, H/W image size, P patch, Np patches, N tokens, D width,
K = 2^(3C) colour classes (512 for RGB); M corrupted patches in a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import nn
from .autograd import Tensor
from .vit import PatchEmbed, ViT, ViTConfig, _keep


# ---- targets ---------------------------------------------------------------------------------

def pixels_from_normalized(x, mean, std):
    """The uint8 pixels (B, C, H, W) behind a loader batch x = (pixels / 255 - mean) / std: the
    inverse of data.transforms.normalize, rounded back to the integers it started from."""
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    mean = np.asarray(mean, np.float64).reshape(-1, 1, 1)  # (C, 1, 1)
    std = np.asarray(std, np.float64).reshape(-1, 1, 1)
    return np.clip(np.rint((x * std + mean) * 255.0), 0, 255).astype(np.uint8)


def mean_colour_targets(pixels, patch_size, bits=3):
    """uint8 pixels (B, C, H, W) -> (B, Np) colour classes in [0, 2^(bits*C)): each channel's mean
    over the patch quantised to its top `bits` bits, level = floor(mean * 2^bits / 256), and the
    levels read as one number, channel 0 most significant (RGB: r*64 + g*8 + b for bits=3)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f"mean-colour targets are computed from uint8 pixels, got {pixels.dtype}")
    B, C, H, W = pixels.shape
    P = patch_size
    gh, gw = H // P, W // P
    patches = pixels.reshape(B, C, gh, P, gw, P).astype(np.int64)  # (B, C, gh, P, gw, P)
    sums = patches.sum(axis=(3, 5)).reshape(B, C, gh * gw)  # (B, C, Np), exact integers
    levels = sums * (1 << bits) // (256 * P * P)  # floor(mean * 2^bits / 256), in [0, 2^bits)
    weights = (1 << bits) ** np.arange(C - 1, -1, -1)  # (C,): channel 0 most significant
    return (levels * weights[None, :, None]).sum(axis=1)  # (B, Np)


# ---- corruption ------------------------------------------------------------------------------

@dataclass
class Corruption:
    """Which patch embeddings of a batch are corrupted, and how; all (B, Np)."""

    corrupted: np.ndarray  # bool: predicted (masked, randomised or kept)
    masked: np.ndarray  # bool: replaced by the [mask] embedding
    randomised: np.ndarray  # bool: replaced by the embedding of patch `source`
    source: np.ndarray  # int: flat index b * Np + i of another patch of the batch


def draw_corruption(B, Np, rng, ratio=0.5, mask_prob=0.8, random_prob=0.1) -> Corruption:
    """Corrupt round(ratio * Np) patches of each image, chosen at random; each corrupted patch is
    masked with probability mask_prob, replaced by a random other patch of the batch with
    probability random_prob, and otherwise kept unchanged (BERT's 80/10/10)."""
    if not (0 < ratio <= 1 and 0 <= mask_prob and 0 <= random_prob and mask_prob + random_prob <= 1):
        raise ValueError(f"need 0 < ratio <= 1 and mask_prob + random_prob <= 1, got {ratio}, {mask_prob}, "
                         f"{random_prob}")
    n = int(round(ratio * Np))
    order = rng.permuted(np.tile(np.arange(Np), (B, 1)), axis=1)  # (B, Np): a permutation per image
    corrupted = np.zeros((B, Np), dtype=bool)
    corrupted[np.arange(B)[:, None], order[:, :n]] = True
    u = rng.random((B, Np))
    masked = corrupted & (u < mask_prob)
    randomised = corrupted & (u >= mask_prob) & (u < mask_prob + random_prob) & (B * Np > 1)  # 1 patch: no other
    own = np.arange(B * Np).reshape(B, Np)
    source = rng.integers(0, max(B * Np - 1, 1), size=(B, Np))  # uniform over the other B*Np - 1
    source = source + (source >= own)
    return Corruption(corrupted, masked, randomised, np.where(randomised, source, own))


def corrupt(tokens, mask_token, c: Corruption) -> Tensor:
    """tokens (B, Np, D) with c's patches replaced: composed from primitives, so the gradient
    reaches the [mask] embedding and the patches whose embeddings were copied."""
    B, Np, D = tokens.shape
    dtype = tokens.dtype
    keep = (~(c.masked | c.randomised)).astype(dtype)[..., None]  # (B, Np, 1)
    copied = tokens.reshape(B * Np, D)[c.source.reshape(-1)].reshape(B, Np, D)  # (B, Np, D)
    return (tokens * keep + mask_token * c.masked.astype(dtype)[..., None]
            + copied * c.randomised.astype(dtype)[..., None])


# ---- the model -------------------------------------------------------------------------------

@dataclass
class MPPConfig(ViTConfig):
    """A ViTConfig whose head predicts 2^(bits * in_chans) colour classes for every patch."""

    arch: str = "mpp"
    num_classes: int | None = None  # None: the colour classes, 2^(mpp_bits * in_chans) (512 for RGB)
    mpp_bits: int = 3

    def __post_init__(self):
        if self.arch != "mpp":
            raise ValueError(f"an MPPConfig has arch='mpp', got {self.arch!r}")
        if not isinstance(self.mpp_bits, int) or not 1 <= self.mpp_bits <= 8:
            raise ValueError(f"mpp_bits must be an integer in 1..8, got {self.mpp_bits!r}")
        if self.patch_drop_rate:
            raise ValueError("masked patch prediction predicts a colour for every patch token; patch_drop_rate "
                             f"would remove some of them (got {self.patch_drop_rate}; use 0: --patch-drop-rate 0 "
                             "after a recipe that sets it)")
        classes = 2 ** (self.mpp_bits * self.in_chans)
        if self.num_classes is None:
            self.num_classes = classes
        if self.num_classes != classes:
            raise ValueError(f"num_classes must be the number of colour classes 2^(mpp_bits * in_chans) = "
                             f"{classes}, got {self.num_classes}")
        super().__post_init__()

    def num_parameters(self) -> int:
        return super().num_parameters() + self.embed_dim  # the ViT's, and the [mask] embedding

    def encoder(self) -> ViTConfig:
        """The ViT being pre-trained, without the colour head (num_classes=0)."""
        keep = {k: v for k, v in self.to_dict().items() if k not in ("arch", "mpp_bits")}
        return ViTConfig.from_dict({**keep, "num_classes": 0})


class MaskedPatchEmbed(PatchEmbed):
    """The ViT's patch embedding (same `proj`), whose output the corruption of the forward pass in
    progress rewrites: MaskedPatchPrediction.forward sets `pending` around its call."""

    pending = None  # (mask_token, Corruption) while a corrupted forward runs

    def forward(self, x):
        tokens = self.proj(x)  # (B, Np, D)
        return tokens if self.pending is None else corrupt(tokens, *self.pending)


class MaskedPatchPrediction(ViT):
    """A ViT for masked patch prediction: the [mask] embedding `mask_token` (1, 1, D) and the colour
    head `head` (K, D), applied to every patch token. Everything else, names included, is the ViT's,
    so its weights fine-tune as a ViT (minivit/train/pretrain.py)."""

    def __init__(self, config: MPPConfig | None = None, dtype="float32", **kwargs):
        if config is None:
            config = MPPConfig.from_dict(kwargs)
        elif kwargs:
            raise TypeError("pass either config= or keyword options, not both")
        super().__init__(config=config, dtype=dtype)
        self.patch_embed = MaskedPatchEmbed(self.config, dtype)
        self.mask_token = nn.Parameter(nn.trunc_normal((1, 1, self.config.embed_dim), dtype=dtype))  # (1, 1, D)

    def forward(self, x, corruption: Corruption | None = None, out=None):
        """Images (B, C, H, W) -> colour logits (B, Np, K) for every patch; with a Corruption, the
        embeddings of its patches are replaced first (the ones to score: corruption.corrupted)."""
        self.patch_embed.pending = None if corruption is None else (self.mask_token, corruption)
        try:
            tokens = self.forward_features(x, out)  # (B, N, D): the ViT's Eq. 1-4 on corrupted embeddings
        finally:
            self.patch_embed.pending = None
        logits = self.head(tokens[:, self.num_prefix_tokens:])  # (B, Np, K)
        _keep(out, "logits", logits)
        return logits


def mpp_loss(logits, targets, c: Corruption):
    """(mean cross-entropy over the corrupted patches, how many of them were predicted right)."""
    rows, cols = np.nonzero(c.corrupted)  # M corrupted patches
    picked = logits[rows, cols]  # (M, K)
    wanted = np.asarray(targets)[rows, cols]  # (M,)
    correct = int((picked.data.argmax(axis=1) == wanted).sum())
    return F.cross_entropy(picked, wanted), correct
