"""Stronger augmentation for training a ViT from scratch on a small dataset, done a batch at a time.

B=batch, H/W=image size, C=channels. Every function takes its randomness from the generator it is
given, so a batch is a function of (seed, epoch, batch index) and a resumed run repeats it exactly.

- `trivial_augment`: TrivialAugment (Mueller & Hutter, ICCV 2021), "wide" magnitudes: each image
  gets ONE operation drawn uniformly from 14, at a magnitude drawn uniformly from 31 bins. No
  search and no schedule; the paper finds it as good as RandAugment and AutoAugment on CIFAR.
  On uint8 (B, H, W, C), before normalisation. The images are grouped by operation, so each
  operation runs once per batch on its group, vectorised (no loop over pixels; equalize loops
  over its images' channels only, for their histograms).
- `random_erase`: Random Erasing (Zhong et al., AAAI 2020): with probability p per image, a
  rectangle of 2% to 1/3 of the area, aspect ratio 0.3 to 3.3 (log-uniform), is replaced by zeros
  (the mean colour, after normalisation) or by standard-normal noise per pixel. On the
  normalised float batch (B, C, H, W).
- `mix_batch`: mixup (Zhang et al., ICLR 2018) or CutMix (Yun et al., ICCV 2019) of each image
  with the batch's mirror image (image b with image B-1-b), as timm does for a whole batch; one
  mixing weight lam per batch. Returns the two label vectors and lam: the loss is
  lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b).

The operations and their magnitude ranges follow the TrivialAugment paper's "wide" space (its
Table 1), the same as torchvision's TrivialAugmentWide; the photometric ones are PIL's
ImageEnhance/ImageOps definitions, which tests/test_augment.py checks them against; geometric ones
sample the nearest source pixel and fill what comes from outside the image with black.
"""
from __future__ import annotations

import numpy as np

BINS = 31  # magnitude bins; a draw picks bin 0..30 uniformly
ERASE_MODES = ("zeros", "pixel")


# --- photometric operations: x is float32 (n, H, W, C) in 0..255, m is (n,) -----------------------

def _blend(degenerate, x, factor):
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), clipped to 0..255."""
    return np.clip(degenerate + factor[:, None, None, None] * (x - degenerate), 0, 255)


def _gray(x):
    """PIL's "L" conversion (ITU-R 601-2 luma), rounded as PIL rounds: (n, H, W, 1)."""
    if x.shape[-1] == 1:
        return x
    return np.floor((x[..., :1] * 299 + x[..., 1:2] * 587 + x[..., 2:3] * 114) / 1000 + 0.5)


def brightness(x, m):
    return _blend(np.zeros_like(x), x, 1 + m)


def color(x, m):
    return _blend(_gray(x), x, 1 + m)


def contrast(x, m):
    mean = np.floor(_gray(x).mean(axis=(1, 2, 3), keepdims=True) + 0.5)  # (n, 1, 1, 1)
    return _blend(mean, x, 1 + m)


def sharpness(x, m):
    """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), border pixels unsmoothed."""
    smooth = x.copy()
    inner = 5 * x[:, 1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                inner = inner + x[:, 1 + dy:x.shape[1] - 1 + dy, 1 + dx:x.shape[2] - 1 + dx]
    smooth[:, 1:-1, 1:-1] = np.floor(inner / 13 + 0.5)
    return _blend(smooth, x, 1 + m)


def posterize(x, bits):
    mask = (0xFF << (8 - bits.astype(np.int64))) & 0xFF                   # (n,)
    return (x.astype(np.uint8) & mask[:, None, None, None].astype(np.uint8)).astype(x.dtype)


def solarize(x, threshold):
    return np.where(x >= threshold[:, None, None, None], 255 - x, x)


def autocontrast(x, m=None):
    """Each channel stretched so its darkest pixel is 0 and its brightest 255 (flat channels kept)."""
    lo = x.min(axis=(1, 2), keepdims=True)                                 # (n, 1, 1, C)
    hi = x.max(axis=(1, 2), keepdims=True)
    scale = np.where(hi > lo, 255 / np.maximum(hi - lo, 1), 1.0)
    out = np.floor((x - lo) * scale + 0.5)
    return np.where(hi > lo, out, x)


def equalize(x, m=None):
    """PIL's ImageOps.equalize, per image and channel: a lookup table from the cumulative histogram."""
    out = x.copy()
    for i in range(x.shape[0]):
        for c in range(x.shape[-1]):
            values = x[i, ..., c].astype(np.int64)
            hist = np.bincount(values.ravel(), minlength=256)
            step = (hist.sum() - hist[np.flatnonzero(hist)[-1]]) // 255
            if step == 0:
                continue
            lut = np.clip((np.concatenate([[0], np.cumsum(hist)[:-1]]) + step // 2) // step, 0, 255)
            out[i, ..., c] = lut[values]
    return out


# --- geometric operations: the inverse map of each output pixel, nearest source pixel ------------

def _warp(x, inverse):
    """x (n, H, W, C); inverse (n, 2, 3): output pixel (col, row, 1) -> source (col, row)."""
    n, H, W, _ = x.shape
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)                      # (H, W) each
    grid = np.stack([cols, rows, np.ones_like(cols)])                       # (3, H, W)
    src = np.einsum("nij,jhw->nihw", inverse, grid)                         # (n, 2, H, W)
    sx, sy = np.floor(src[:, 0] + 0.5).astype(np.int64), np.floor(src[:, 1] + 0.5).astype(np.int64)
    inside = (sx >= 0) & (sx < W) & (sy >= 0) & (sy < H)                    # (n, H, W)
    picked = x[np.arange(n)[:, None, None], np.clip(sy, 0, H - 1), np.clip(sx, 0, W - 1)]
    return np.where(inside[..., None], picked, 0)


def _affine(n, a=0.0, b=0.0, c=0.0, d=0.0, e=0.0, f=0.0):
    """(n, 2, 3) inverse maps [[1+a, b, c], [d, 1+e, f]] from per-image arrays (or scalars)."""
    rows = [[1 + np.asarray(a), b, c], [d, 1 + np.asarray(e), f]]
    return np.stack([np.stack([np.broadcast_to(v, (n,)) for v in row], -1) for row in rows], 1)


def shear_x(x, m):
    return _warp(x, _affine(len(x), b=m))       # source col = col + m * row


def shear_y(x, m):
    return _warp(x, _affine(len(x), d=m))


def translate_x(x, m):
    return _warp(x, _affine(len(x), c=-np.round(m)))   # content moves right by m pixels


def translate_y(x, m):
    return _warp(x, _affine(len(x), f=-np.round(m)))


def rotate(x, degrees):
    """Counter-clockwise by `degrees` about the image centre, as PIL's Image.rotate."""
    n, H, W, _ = x.shape
    t = np.deg2rad(degrees)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    cos, sin = np.cos(t), np.sin(t)
    # inverse of a counter-clockwise turn in image coordinates (rows grow downwards)
    inverse = np.stack([np.stack([cos, -sin, cx - cos * cx + sin * cy], -1),
                        np.stack([sin, cos, cy - sin * cx - cos * cy], -1)], 1)
    return _warp(x, inverse)


def identity(x, m=None):
    return x


# name -> (the operation, its magnitude in bins 0..30 or None, whether a random sign applies);
# trivial_augment draws an index into this table, so its order is part of a run's draws
OPERATIONS = {
    "identity": (identity, None, False),
    "shear_x": (shear_x, np.linspace(0.0, 0.99, BINS), True),          # x' = x + m * y
    "shear_y": (shear_y, np.linspace(0.0, 0.99, BINS), True),
    "translate_x": (translate_x, np.linspace(0.0, 32.0, BINS), True),  # pixels
    "translate_y": (translate_y, np.linspace(0.0, 32.0, BINS), True),
    "rotate": (rotate, np.linspace(0.0, 135.0, BINS), True),           # degrees, about the image centre
    "brightness": (brightness, np.linspace(0.0, 0.99, BINS), True),    # enhance factor 1 + m
    "color": (color, np.linspace(0.0, 0.99, BINS), True),
    "contrast": (contrast, np.linspace(0.0, 0.99, BINS), True),
    "sharpness": (sharpness, np.linspace(0.0, 0.99, BINS), True),
    "posterize": (posterize, 8 - np.round(np.arange(BINS) / ((BINS - 1) / 6)), False),  # bits kept: 8 .. 2
    "solarize": (solarize, np.linspace(255.0, 0.0, BINS), False),      # threshold
    "autocontrast": (autocontrast, None, False),
    "equalize": (equalize, None, False),
}


def trivial_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random operation at a random magnitude per image of a uint8 batch (B, H, W, C).
    Returns a new uint8 (B, H, W, C) array."""
    return apply_trivial_augment(x, *trivial_augment_draws(rng, len(x)))


def trivial_augment_draws(rng: np.random.Generator, B: int):
    """The draws of a batch of B images, in this order: operation (B,), magnitude bin (B,),
    sign (B,). Drawn for a whole batch, so that a process loading some of its rows gives each row
    what one process loading all of them would (index every array with the rows)."""
    ops = rng.integers(0, len(OPERATIONS), size=B)
    bins = rng.integers(0, BINS, size=B)
    signs = np.where(rng.random(B) < 0.5, -1.0, 1.0)
    return ops, bins, signs


def apply_trivial_augment(x, ops, bins, signs):
    """Image i of x gets operation ops[i] at magnitude bin bins[i], signed by signs[i]."""
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"trivial_augment takes uint8 images (B, H, W, C), got {x.dtype} {x.shape}")
    out = x.copy()
    for k, (operation, table, signed) in enumerate(OPERATIONS.values()):
        idx = np.flatnonzero(ops == k)
        if len(idx) == 0 or operation is identity:
            continue
        m = None if table is None else table[bins[idx]] * (signs[idx] if signed else 1.0)
        done = operation(x[idx].astype(np.float32), m)
        out[idx] = np.clip(np.floor(done + 0.5), 0, 255).astype(np.uint8)
    return out


def random_erase(x: np.ndarray, rng: np.random.Generator, p: float = 0.25,
                 area=(0.02, 1 / 3), aspect=(0.3, 3.3), mode: str = "zeros") -> np.ndarray:
    """Random Erasing on a normalised batch (B, C, H, W), in place; returns x."""
    return apply_random_erase(x, *random_erase_draws(rng, x.shape, p, area, aspect, mode))


def random_erase_draws(rng: np.random.Generator, shape, p: float = 0.25, area=(0.02, 1 / 3),
                       aspect=(0.3, 3.3), mode: str = "zeros"):
    """What Random Erasing does to a batch of this (B, C, H, W) shape: (mask (B, H, W), fill).

    Draws, in this order: whether each image is erased (B,), then 10 candidate rectangles per image
    (area fraction, log aspect ratio, then top-left corner) of which the first that fits is used;
    then, for mode "pixel", the noise (B, C, H, W). Index both with the rows a process loads.
    """
    check_erase(p, mode)
    B, C, H, W = shape
    tries = 10
    erase = rng.random(B) < p
    fraction = rng.uniform(area[0], area[1], size=(B, tries))
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]), size=(B, tries)))
    h = np.round(np.sqrt(fraction * H * W * ratio)).astype(np.int64)         # (B, tries)
    w = np.round(np.sqrt(fraction * H * W / ratio)).astype(np.int64)
    top = np.floor(rng.random((B, tries)) * np.maximum(H - h + 1, 1)).astype(np.int64)
    left = np.floor(rng.random((B, tries)) * np.maximum(W - w + 1, 1)).astype(np.int64)
    fits = (h >= 1) & (w >= 1) & (h <= H) & (w <= W)
    first = np.argmax(fits, axis=1)                                         # (B,) first fitting try
    erase &= fits[np.arange(B), first]
    pick = lambda a: a[np.arange(B), first][:, None]                        # (B, 1)
    rows, cols = np.arange(H)[None], np.arange(W)[None]                     # (1, H), (1, W)
    in_rows = (rows >= pick(top)) & (rows < pick(top) + pick(h))            # (B, H)
    in_cols = (cols >= pick(left)) & (cols < pick(left) + pick(w))          # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :]) & erase[:, None, None]  # (B, H, W)
    fill = np.zeros((B, 1, 1, 1), np.float32) if mode == "zeros" else rng.standard_normal(shape, dtype=np.float32)
    return mask, fill


def check_erase(p, mode):
    """ValueError unless p is a probability and mode one of ERASE_MODES."""
    if mode not in ERASE_MODES:
        raise ValueError(f"mode must be one of {ERASE_MODES}, got {mode!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the erasing probability must lie in [0, 1], got {p}")


def apply_random_erase(x, mask, fill):
    """x (B, C, H, W) with the pixels of mask (B, H, W) replaced by fill's, in place; returns x."""
    np.copyto(x, np.broadcast_to(fill, x.shape), where=mask[:, None])
    return x


def mix_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """Mixup or CutMix of a normalised batch x (B, C, H, W) with its mirror image x[::-1].

    With both alphas > 0, each batch is one or the other with probability 1/2. Draws: the choice
    (if both), lam ~ Beta(alpha, alpha), then for CutMix the box centre (row, column).
    Returns (mixed x, y_a = y, y_b = y[::-1], lam), lam being the share of y_a's image.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return x, y, y, 1.0
    cut = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if cut else rng.beta(mixup_alpha, mixup_alpha))
    partner = x[::-1]
    if not cut:
        return (lam * x + (1 - lam) * partner).astype(x.dtype), y, y[::-1], lam
    B, C, H, W = x.shape
    cy, cx = rng.integers(0, H), rng.integers(0, W)
    ch, cw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, H)
    x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, W)
    out = x.copy()
    out[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)  # the share the box really left to image b
    return out, y, y[::-1], float(lam)
