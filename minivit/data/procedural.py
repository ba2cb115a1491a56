"""A procedural shape dataset: 32x32 RGB images of 10 shape classes, generated in code.

Used by `minivit demo` and end-to-end tests, so nothing has to be downloaded. Each image holds:
  - a background of smooth colour noise (a random 4x4 colour grid, bilinearly upsampled),
  - one object of its class (circle, square, triangle, ...) at a random place, 8-16 px across,
    with a random aspect jitter, in a random colour on the other side of mid-grey from the
    background (dark on light or light on dark, 50/50),
  - with probability 0.5 a soft Gaussian blob (not a class shape) in an object-like colour,
  - per-pixel noise (uniform, std 0.05 in 0..1 units).
Colour, brightness and position are drawn independently of the class, so the only cue is the
object's shape: a linear model on pixels does poorly, a small conv net or ViT learns it.

Rendering is vectorised: per-image shape coordinates u, v (N, H, W) come from one coordinate
grid, and each class's mask is a formula in (u, v) evaluated for that class's images at once;
10,000 images take about 1 s on one core.
"""
from __future__ import annotations

import numpy as np

from .loader import Dataset

SIZE = 32
DEFAULT_SIZES = {"train": 10_000, "test": 2_000}
# How hard the task is: the object's half-size in pixels, how far its centre may be from the image
# centre (None: anywhere it fits), and how often a distractor blob is drawn. "hard" (the tests' and
# sweeps' default) is a task a small ViT learns slowly; "easy" (big centred shapes, no blob) is
# `minivit demo`'s: a small ViT passes 90% within a few epochs.
DIFFICULTIES = {
    "hard": {"half_size": (4.0, 8.0), "centre_jitter": None, "blob": 0.5},
    "easy": {"half_size": (8.0, 12.0), "centre_jitter": 3.0, "blob": 0.0},
}


# Shapes in normalised coordinates: u (right), v (down), the object spans about [-1, 1]^2.
def _circle(u, v):
    return u * u + v * v <= 1.0


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.45)


def _square(u, v):
    return np.maximum(abs(u), abs(v)) <= 0.85


def _triangle(u, v):  # apex up, base at the bottom
    return (v <= 0.8) & (v >= 2.0 * abs(u) - 1.0)


def _cross(u, v):
    return ((abs(u) <= 0.3) | (abs(v) <= 0.3)) & (np.maximum(abs(u), abs(v)) <= 1.0)


def _bar_h(u, v):
    return (abs(v) <= 0.35) & (abs(u) <= 1.0)


def _bar_v(u, v):
    return (abs(u) <= 0.35) & (abs(v) <= 1.0)


def _diamond(u, v):
    return abs(u) + abs(v) <= 1.0


def _x(u, v):
    return ((abs(u - v) <= 0.45) | (abs(u + v) <= 0.45)) & (np.maximum(abs(u), abs(v)) <= 0.9)


def _l(u, v):
    return (np.maximum(abs(u), abs(v)) <= 1.0) & ((u <= -0.35) | (v >= 0.35))


def _t(u, v):
    return (np.maximum(abs(u), abs(v)) <= 1.0) & ((v <= -0.35) | (abs(u) <= 0.3))


def _hollow_square(u, v):
    m = np.maximum(abs(u), abs(v))
    return (m <= 0.9) & (m >= 0.5)


SHAPES = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross,
          "ring": _ring, "bar_h": _bar_h, "bar_v": _bar_v, "diamond": _diamond, "x": _x, "L": _l,
          "T": _t, "hollow_square": _hollow_square}


def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation weights (align_corners=True)."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _render(rng: np.random.Generator, labels: np.ndarray, names: list[str], style: dict) -> np.ndarray:
    """Images uint8 (n, 32, 32, 3) for the given labels; every draw comes from rng.

    Works channels-first, (n, 3, S, S), so every broadcast runs along contiguous rows of S
    pixels; only the final uint8 array is transposed to (n, S, S, 3).
    """
    n, S, f32 = len(labels), SIZE, np.float32
    dark_bg = rng.random(n) < 0.5                                   # (n,) polarity
    # background: base colour on one side of grey + smooth colour noise
    base = np.where(dark_bg[:, None], 0.1, 0.6) + 0.3 * rng.random((n, 3))       # (n, 3)
    grid = 0.35 * (rng.random((n, 3, 4, 4)) - 0.5)                               # (n, 3, 4, 4)
    # object: colour on the other side of grey, size and place as the style says, aspect jitter
    obj = np.where(dark_bg[:, None], 0.65, 0.05) + 0.3 * rng.random((n, 3))      # (n, 3)
    r = rng.uniform(*style["half_size"], n)                                      # (n,) half-size
    ry, rx = r * rng.uniform(0.85, 1.15, n), r * rng.uniform(0.85, 1.15, n)
    if style["centre_jitter"] is None:                                           # (n,) centre: anywhere inside
        cy, cx = rng.uniform(ry, S - ry), rng.uniform(rx, S - rx)
    else:                                                                        # near the middle
        cy, cx = (S / 2 + rng.uniform(-style["centre_jitter"], style["centre_jitter"], (2, n)))
    # distractor: a soft Gaussian blob (no class shape) in an object-like colour, sometimes
    has_blob = rng.random(n) < style["blob"]
    blob_c = np.where(dark_bg[:, None], 0.65, 0.05) + 0.3 * rng.random((n, 3))  # (n, 3)
    bs = rng.uniform(1.5, 3.0, n)                                                # (n,) blob sigma
    by, bx = rng.uniform(2, S - 2, n), rng.uniform(2, S - 2, n)
    noise = rng.random((n, 3, S, S), dtype=f32)  # (n, 3, S, S) uniform: 3x faster than normal

    # bilinear upsampling of the 4x4 grid as one GEMM with kron(M, M): (n*3, 16) @ (16, S*S)
    M = _upsample_matrix(4, S)                                                   # (S, 4)
    K = np.kron(M, M).T.astype(f32)                                              # (16, S*S)
    img = (grid.reshape(n * 3, 16).astype(f32) @ K).reshape(n, 3, S, S)          # (n, 3, S, S)
    img += base.astype(f32)[:, :, None, None]

    # a Gaussian is separable: exp(-(y^2+x^2)/2s^2) = gy(y) * gx(x), two (n, S) factors
    coords = (np.arange(S) + 0.5).astype(f32)                                    # pixel centres
    inv = (1 / (2 * bs ** 2)).astype(f32)[:, None]                               # (n, 1)
    gy = np.exp(-(coords - by[:, None].astype(f32)) ** 2 * inv) * has_blob[:, None]
    gx = np.exp(-(coords - bx[:, None].astype(f32)) ** 2 * inv)                 # (n, S)
    blob = gy[:, :, None] * gx[:, None, :]                                       # (n, S, S)
    img += (blob_c - base).astype(f32)[:, :, None, None] * blob[:, None]

    yy, xx = coords[None, :, None], coords[None, None, :]                        # (1, S, 1), (1, 1, S)
    mask = np.zeros((n, S, S), bool)
    for k, name in enumerate(names):  # each class's formula on all its images at once
        sel = np.flatnonzero(labels == k)
        u = ((xx - cx[sel, None, None]) / rx[sel, None, None]).astype(f32)      # (m, 1, S)
        v = ((yy - cy[sel, None, None]) / ry[sel, None, None]).astype(f32)      # (m, S, 1)
        mask[sel] = SHAPES[name](*np.broadcast_arrays(u, v))
    np.copyto(img, obj.astype(f32)[:, :, None, None], where=mask[:, None])
    noise -= f32(0.5)
    noise *= f32(0.17)  # uniform on +-0.085: std 0.17/sqrt(12) = 0.05
    img += noise
    img *= f32(255)
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8).transpose(0, 2, 3, 1)                            # (n, S, S, 3)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def make_procedural(split: str = "train", num_samples: int | None = None, seed: int = 0,
                    num_classes: int = 10, chunk: int = 2048, difficulty: str = "hard") -> Dataset:
    """The procedural shapes dataset; "train" and "test" draw from different seeds.

    Labels are balanced (each class n // K or n // K + 1 times) in random order. `difficulty`
    is a key of DIFFICULTIES.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if split not in DEFAULT_SIZES:
        raise ValueError(f"procedural split must be 'train' or 'test', got {split!r}")
    if not (_is_int(num_classes) and 2 <= num_classes <= len(SHAPES)):
        raise ValueError(f"num_classes must be an integer in 2..{len(SHAPES)}, got {num_classes!r}")
    if num_samples is not None and not (_is_int(num_samples) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer (or None for {DEFAULT_SIZES}), got {num_samples!r}")
    if not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
    names = list(SHAPES)[:num_classes]
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)   # (n,) balanced
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(0, n, chunk):  # chunks bound memory; each draws from its own child stream
        sub = np.random.default_rng([seed, {"train": 0, "test": 1}[split], 1 + i // chunk])
        images[i:i + chunk] = _render(sub, labels[i:i + chunk], names, DIFFICULTIES[difficulty])
    name = "procedural" if difficulty == "hard" else f"procedural_{difficulty}"
    return Dataset(images, labels, names, name, {"split": split, "seed": seed, "difficulty": difficulty})
