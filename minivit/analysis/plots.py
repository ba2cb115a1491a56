"""Figures for the paper's analysis (Sec. 4.5, Figs. 6, 7, 10, 11) and for training runs.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words". Every function takes plain arrays (the
numbers come from `minivit.analysis`) and returns the figure; given a `path`, it also writes the
figure there as a PNG (the CLI and the trainer do). Figures are `Figure` below, a
`matplotlib.figure.Figure` built directly (no pyplot global state, no display needed) that shows
itself as an image when it is a notebook cell's result.
Shape letters: B batch, H/W image size, C channels, gh/gw patch grid, L layers, Hh heads, k PCs.
"""
import io
import math
import os

import numpy as np
from matplotlib import figure as _mpl_figure

from .measures import upsample_map

DPI = 100


class Figure(_mpl_figure.Figure):
    """A matplotlib Figure that Jupyter (IPython) draws inline as a PNG when a cell returns it or
    `display(fig)` is called, whether or not pyplot was ever imported."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, dpi=DPI, format="png")
        return buf.getvalue()


def save(fig, path, dpi=DPI):
    """Write `fig` to `path` as a PNG (folders made as needed); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _done(fig, path):
    """The figure, saved first when a path is given."""
    if path is not None:
        save(fig, path)
    return fig


def _minmax(a):
    """Scale to [0, 1]; a constant array becomes 0.5 (mid-grey)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return np.full_like(a, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def _as_hwc_float(img):
    """(H, W), (H, W, 1) or (H, W, 3) image, uint8 or float, -> float (H, W, C) in [0, 1]."""
    img = np.asarray(img)
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    return np.clip(img, 0.0, 1.0)


def _show(ax, img):
    """imshow an (H, W, C) float image: grey for C=1, RGB for C=3, channel mean otherwise."""
    if img.shape[-1] == 3:
        ax.imshow(img)
    else:
        ax.imshow(img.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------
# Fig. 7 left
# ---------------------------------------------------------------------------------------------
def plot_embedding_filters(components, path=None, explained=None, ncols=7):
    """Grid of the top-k principal components of the patch-embedding filters (Fig. 7 left).

    components (k, P, P, C); each is min-max normalised on its own; C=1 is drawn in grey.
    explained (k,) optional explained-variance ratios shown above each component.
    """
    comps = np.asarray(components, dtype=np.float64)            # (k, P, P, C)
    if comps.ndim == 3:
        comps = comps[..., None]
    k = comps.shape[0]
    ncols = max(1, min(ncols, k))
    nrows = max(1, math.ceil(k / ncols))
    fig = Figure(figsize=(1.1 * ncols, 1.1 * nrows + 0.5))
    fig.suptitle("RGB embedding filters (first %d principal components)" % k, fontsize=9)
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if i >= k:
            ax.axis("off")
            continue
        _show(ax, _minmax(comps[i]))
        if explained is not None:
            ax.set_title("%.1f%%" % (100 * explained[i]), fontsize=6, pad=2)
    return _done(fig, path)


# ---------------------------------------------------------------------------------------------
# Fig. 7 centre / Fig. 10
# ---------------------------------------------------------------------------------------------
def plot_position_similarity(sim, path=None):
    """gh x gw grid of small (gh, gw) cosine-similarity maps (Fig. 7 centre, Fig. 10).

    sim (gh, gw, gh, gw) from `position_embedding_similarity`. The maps are tiled into one image
    with a one-pixel blank gutter, so a 14x14 grid is one imshow, not 196 axes.
    """
    sim = np.asarray(sim, dtype=np.float64)                     # (gh, gw, gh, gw)
    gh, gw = sim.shape[:2]
    mosaic = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
    for i in range(gh):
        for j in range(gw):
            r, c = i * (gh + 1), j * (gw + 1)
            mosaic[r:r + gh, c:c + gw] = sim[i, j]
    size = min(8.0, 2.0 + 0.45 * max(gh, gw))
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(mosaic), cmap="viridis", vmin=-1.0, vmax=1.0,
                   interpolation="nearest")
    ax.set_xticks(np.arange(gw) * (gw + 1) + (gw - 1) / 2, [str(j + 1) for j in range(gw)])
    ax.set_yticks(np.arange(gh) * (gh + 1) + (gh - 1) / 2, [str(i + 1) for i in range(gh)])
    ax.tick_params(length=0, labelsize=7)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_title("Position embedding similarity")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Cosine similarity")
    return _done(fig, path)


# ---------------------------------------------------------------------------------------------
# Fig. 7 right / Fig. 11
# ---------------------------------------------------------------------------------------------
def plot_attention_distance(dist, patch_size, img_size, path=None):
    """Every head's mean attention distance (pixels) against network depth (Fig. 7 right).

    dist (L, Hh) from `mean_attention_distance` (a single layer (Hh,) is drawn as L=1).
    The y-axis runs to the largest possible distance between patch centres.
    """
    d = np.atleast_2d(np.asarray(dist, dtype=np.float64))       # (L, Hh)
    L, Hh = d.shape
    H, W = (img_size, img_size) if np.isscalar(img_size) else img_size
    gh, gw = H // patch_size, W // patch_size
    top = patch_size * math.hypot(gh - 1, gw - 1)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    layers = np.arange(1, L + 1)
    for h in range(Hh):
        ax.scatter(layers, d[:, h], s=14, alpha=0.8, label=f"Head {h + 1}")
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_title(f"ViT patch {patch_size}, {H}x{W} input")
    ax.set_xlim(0.5, L + 0.5)
    ax.set_ylim(0, max(top, float(np.nanmax(d)) if d.size else 0.0) * 1.05 + 1e-9)
    ax.set_xticks(layers if L <= 16 else np.linspace(1, L, 8).round().astype(int))
    if Hh <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    return _done(fig, path)


# ---------------------------------------------------------------------------------------------
# Fig. 6 / Fig. 14
# ---------------------------------------------------------------------------------------------
def plot_attention_maps(images, maps, path=None, titles=None, pairs_per_row=4):
    """Pairs of input / input x attention map, like Fig. 6.

    images (B, H, W, C) uint8 or float in [0, 1]; maps (B, gh, gw) (e.g. from
    `class_token_attention_map`), upsampled bilinearly to (H, W) and multiplied into the image.
    """
    imgs = [_as_hwc_float(im) for im in images]
    maps = np.asarray(maps, dtype=np.float64)                   # (B, gh, gw)
    B = len(imgs)
    per_row = max(1, min(pairs_per_row, B))
    nrows = max(1, math.ceil(B / per_row))
    fig = Figure(figsize=(2.2 * per_row, 1.25 * nrows + 0.3))
    for b in range(nrows * per_row):
        ax_in = fig.add_subplot(nrows, 2 * per_row, 2 * b + 1)
        ax_at = fig.add_subplot(nrows, 2 * per_row, 2 * b + 2)
        if b >= B:
            ax_in.axis("off")
            ax_at.axis("off")
            continue
        img = imgs[b]                                           # (H, W, C)
        m = upsample_map(maps[b], img.shape[:2])               # (H, W)
        m = np.clip(m / m.max() if m.max() > 0 else m, 0.0, 1.0)
        _show(ax_in, img)
        _show(ax_at, img * m[..., None])
        ax_in.set_title(titles[b] if titles is not None else "Input", fontsize=7)
        ax_at.set_title("Attention", fontsize=7)
    fig.tight_layout()
    return _done(fig, path)


# ---------------------------------------------------------------------------------------------
# Training runs and experiment tables
# ---------------------------------------------------------------------------------------------
def _series(records, y_key, x_keys):
    """(x, y) arrays of rows with a finite numeric y_key; x is the first of x_keys all those rows
    have, else the row's position in the log."""
    rows = [(i, r) for i, r in enumerate(records) if _is_num(r.get(y_key))]
    if not rows:
        return None
    y = np.array([r[y_key] for _, r in rows], dtype=np.float64)
    for xk in x_keys:
        if all(_is_num(r.get(xk)) for _, r in rows):
            return np.array([r[xk] for _, r in rows], dtype=np.float64), y, xk
    return np.array([i for i, _ in rows], dtype=np.float64), y, "record"


def _is_num(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


def _panel(ax, records, keys, x_keys, ylabel):
    xlabel = None
    for key in keys:
        s = _series(records, key, x_keys)
        if s is not None:
            x, y, xlabel = s
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=key)
    if xlabel is None:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        xlabel = x_keys[0]
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return xlabel


def plot_training_curves(records, path=None):
    """Loss against step (left, with the learning rate on a twin axis) and accuracy against epoch
    (right) from metrics JSON-lines rows; keys missing from some or all rows are skipped."""
    records = [r for r in records if isinstance(r, dict)]
    fig = Figure(figsize=(10, 4))
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_acc = fig.add_subplot(1, 2, 2)
    loss_keys = ["train_loss", "val_loss", "test_loss"]
    acc_keys = ["train_acc", "val_acc", "test_acc"]
    loss_x = _panel(ax_loss, records, loss_keys, ["step", "epoch"], "loss")
    lr = _series(records, "lr", [loss_x, "step", "epoch"])
    if lr is not None:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(lr[0], lr[1], color="grey", ls="--", lw=1)
        ax_lr.set_ylabel("learning rate (dashed)", color="grey")
        ax_loss.set_zorder(ax_lr.get_zorder() + 1)              # keep the loss legend on top
        ax_loss.patch.set_visible(False)
    _panel(ax_acc, records, acc_keys, ["epoch", "step"], "accuracy")
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")
    fig.tight_layout()
    return _done(fig, path)


def plot_sweep(rows, x_key, y_key, path=None, label_key=None):
    """Chart of y_key against x_key over experiment rows (list of dicts), one series per
    label_key value: lines when every x is numeric, grouped bars otherwise."""
    rows = [r for r in rows if x_key in r and _is_num(r.get(y_key))]
    groups = {}
    for r in rows:
        groups.setdefault(r.get(label_key) if label_key else None, []).append(r)
    numeric_x = bool(rows) and all(_is_num(r[x_key]) for r in rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    if numeric_x:
        for label, rs in groups.items():
            rs = sorted(rs, key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in rs], [r[y_key] for r in rs], marker="o",
                    label=None if label is None else str(label))
    elif rows:
        xs = list(dict.fromkeys(str(r[x_key]) for r in rows))  # first-seen order
        width = 0.8 / len(groups)
        for g, (label, rs) in enumerate(groups.items()):
            vals = {str(r[x_key]): r[y_key] for r in rs}
            pos = [i + (g - (len(groups) - 1) / 2) * width for i, x in enumerate(xs) if x in vals]
            ax.bar(pos, [vals[x] for x in xs if x in vals], width=width,
                   label=None if label is None else str(label))
        tilt = len(xs) > 4
        ax.set_xticks(range(len(xs)), xs, rotation=30 if tilt else 0,
                      ha="right" if tilt else "center")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if label_key and rows:
        ax.legend(title=label_key, fontsize=8)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _done(fig, path)
