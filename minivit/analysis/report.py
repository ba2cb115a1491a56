"""`minivit analyze`: the paper's Section 4.5 figures for one model, plus their numbers in JSON.

Dosovitskiy et al. 2021, Sec. 4.5 "Inspecting the Vision Transformer" and Appendix D.7/D.8:
embedding filters (Fig. 7 left), position-embedding similarity (Fig. 7 centre, Fig. 10), mean
attention distance (Fig. 7 right, Fig. 11) and attention-rollout maps (Fig. 6, Fig. 14).

Uses only this model API: `model.config.{img_size, patch_size, in_chans, class_token,
global_pool}`, `model.num_prefix_tokens`, `model.grid_size`, `model.state_dict()` (NumPy arrays,
timm names), `model.position_embedding()` ((N, D) or None) and the one forward pass,
`model(x, out=d)`, which fills d["attention"] (L arrays (B, Hh, N, N)) and d["logits"].

Shape letters: B images, C channels, H/W image size, P patch, N tokens (prefix + Np patches),
D width, Hh heads, L blocks.
"""
import json
import os

import numpy as np

from ..autograd import no_grad
from . import measures as analysis
from . import plots


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _similarity_by_distance(sim):
    """Summaries of the position-similarity grid: mean cosine similarity of patch pairs one grid
    step apart vs. further apart (locality), and, among pairs at least two steps apart, of those in
    the same row, the same column, and neither (the paper's row/column structure)."""
    gh, gw = sim.shape[:2]
    dist = analysis.patch_distances((gh, gw), 1.0)              # (Np, Np) in grid steps
    s = sim.reshape(gh * gw, gh * gw)
    r, c = np.divmod(np.arange(gh * gw), gw)
    same_row, same_col = r[:, None] == r[None], c[:, None] == c[None]
    apart = dist >= 2.0

    def mean(mask):
        return float(s[mask].mean()) if mask.any() else None

    return {"neighbours": mean(np.isclose(dist, 1.0)), "non_neighbours": mean(dist > 1.5),
            "same_row_apart": mean(same_row & apart), "same_column_apart": mean(same_col & apart),
            "other_apart": mean(~same_row & ~same_col & apart)}


def _attention_pass(model, x, num_images, distance_images, batch_size, grid, patch, prefix):
    """Batched forward passes: mean attention distance over the first `distance_images` images,
    rollout maps and predictions for the first `num_images`."""
    n_total = min(len(x), max(num_images, distance_images))
    n_dist = min(len(x), distance_images)
    dist_sum, maps, preds = None, [], []
    for start in range(0, n_total, batch_size):
        xb = np.asarray(x[start:start + batch_size], dtype=np.float32)     # (b, C, H, W)
        out = {}
        with no_grad():
            model(xb, out=out)
        attns = [np.asarray(a) for a in out["attention"]]                 # L x (b, Hh, N, N)
        n_d = max(0, min(len(xb), n_dist - start))
        if n_d:
            d = analysis.mean_attention_distance([a[:n_d] for a in attns], grid, patch, prefix)
            dist_sum = d * n_d if dist_sum is None else dist_sum + d * n_d   # (L, Hh)
        n_m = max(0, min(len(xb), num_images - start))
        if n_m:
            roll = analysis.attention_rollout([a[:n_m] for a in attns])       # (n_m, N, N)
            maps.append(analysis.class_token_attention_map(roll, grid, prefix))
            preds.extend(np.argmax(np.asarray(out["logits"])[:n_m], axis=-1).tolist())
    dist = dist_sum / n_dist if dist_sum is not None else np.zeros((0, 0))
    maps = np.concatenate(maps) if maps else np.zeros((0,) + grid)
    return dist, maps, preds, n_dist


def sample_images(ds, n, seed=0):
    """A seeded random subset of n images of a dataset, in random order: image-folder test splits
    are sorted by class, and their first n images would all be airplanes."""
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.subset(idx)


def analyze(model, images, out_dir, num_images=8, distance_images=256, batch_size=32):
    """Write embedding_filters.png, position_similarity.png, attention_distance.png,
    attention_maps.png and analysis.json into out_dir; return {name: path} of what was written.

    images: {"x": normalised float32 (B, C, H, W), "display": uint8 (B, H, W, C)}.
    Without a class token (num_prefix_tokens == 0, global average pooling) the attention map is
    the rollout averaged over all query patches, matching what the pooled feature sees.
    The position figure is skipped (noted in the JSON) when the model has no "pos_embed".
    """
    os.makedirs(out_dir, exist_ok=True)
    cfg = model.config
    grid, patch, prefix = _pair(model.grid_size), int(cfg.patch_size), int(model.num_prefix_tokens)
    img_size = _pair(cfg.img_size)
    sd = model.state_dict()
    paths, report = {}, {"model": {
        "img_size": list(img_size), "patch_size": patch, "in_chans": int(cfg.in_chans),
        "grid_size": list(grid), "num_prefix_tokens": prefix,
        "class_token": bool(cfg.class_token), "global_pool": str(cfg.global_pool)}}

    # Fig. 7 left: principal components of the patch-embedding filters.
    comps, ratio = analysis.patch_embedding_pcs(sd["patch_embed.proj.weight"], k=28)
    paths["embedding_filters"] = os.path.join(out_dir, "embedding_filters.png")
    plots.plot_embedding_filters(comps, paths["embedding_filters"], explained=ratio)
    report["embedding_filters"] = {"num_components": int(len(ratio)),
                                   "explained_variance_ratio": ratio.tolist(),
                                   "cumulative": np.cumsum(ratio).tolist()}

    # Fig. 7 centre: position-embedding similarity of the model's absolute embedding (learned,
    # 2D-learned or sin-cos). It may or may not hold prefix rows, so their count is read off its length.
    pos = model.position_embedding()
    if pos is not None:
        pe = np.asarray(pos).reshape(-1, np.shape(pos)[-1])   # (N, D)
        sim = analysis.position_embedding_similarity(pe, grid, pe.shape[0] - grid[0] * grid[1])
        paths["position_similarity"] = os.path.join(out_dir, "position_similarity.png")
        plots.plot_position_similarity(sim, paths["position_similarity"])
        report["position_similarity"] = {"grid_size": list(grid), **_similarity_by_distance(sim)}
    else:
        report["position_similarity"] = {"skipped": "model has no learned position embedding"}

    # Fig. 7 right and Fig. 6: one batched pass gives attention distance and rollout maps.
    x = images["x"]
    dist, maps, preds, n_dist = _attention_pass(
        model, x, num_images, distance_images, batch_size, grid, patch, prefix)
    paths["attention_distance"] = os.path.join(out_dir, "attention_distance.png")
    plots.plot_attention_distance(dist, patch, img_size, paths["attention_distance"])
    report["attention_distance"] = {"num_images": int(n_dist), "unit": "pixels",
                                    "per_layer_head": dist.tolist(),
                                    "per_layer_mean": dist.mean(axis=1).tolist()}

    display = np.asarray(images.get("display", x))[:len(maps)]
    if display.ndim == 4 and display.shape[1] == cfg.in_chans and display.shape[-1] != cfg.in_chans:
        display = display.transpose(0, 2, 3, 1)                 # (B, C, H, W) -> (B, H, W, C)
    if display.dtype != np.uint8:                               # normalised floats: rescale to view
        display = np.stack([(d - d.min()) / max(d.max() - d.min(), 1e-12) for d in display])
    paths["attention_maps"] = os.path.join(out_dir, "attention_maps.png")
    plots.plot_attention_maps(
        display, maps, paths["attention_maps"],
        titles=[f"pred {p}" for p in preds])
    report["attention_maps"] = {
        "num_images": int(len(maps)), "method": "attention rollout, head mean, 0.5*A + 0.5*I",
        "source": "class token row" if prefix > 0 else "mean over patch rows (no class token)",
        "predictions": preds}

    paths["analysis_json"] = os.path.join(out_dir, "analysis.json")
    with open(paths["analysis_json"], "w") as f:
        json.dump(report, f, indent=2)
    return paths
