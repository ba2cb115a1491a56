"""Looking inside a trained ViT: the numbers behind the paper's analysis figures.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Section 4.5 "Inspecting the Vision
Transformer" and Appendix D.7/D.8:
- Fig. 7 left: principal components of the patch-embedding filters -> `patch_embedding_pcs`
- Fig. 7 centre, Fig. 10: position-embedding cosine similarity    -> `position_embedding_similarity`
- Fig. 7 right, Fig. 11: mean attention distance per head, layer  -> `mean_attention_distance`
- Fig. 6, Fig. 14: attention rollout (Abnar & Zuidema 2020)       -> `attention_rollout`,
  `class_token_attention_map`, `upsample_map`

Pure NumPy, no plotting (see `minivit.analysis.plots`), float64 inside.
Shape letters: B batch, C channels, P patch, D width, Hh heads, L layers, N tokens
(prefix + patches), Np = gh*gw patches, K classes.
"""
import numpy as np


def _grid(grid):
    """(gh, gw) from an int or a pair."""
    return (int(grid), int(grid)) if np.isscalar(grid) else (int(grid[0]), int(grid[1]))


def _safe_div(a, b):
    """a / b with 0 where b == 0 (e.g. all-zero attention rows or filters)."""
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


# ---------------------------------------------------------------------------------------------
# Fig. 7 left: patch-embedding filters
# ---------------------------------------------------------------------------------------------
def patch_embedding_pcs(weight, k=28):
    """Top-k principal components of the D patch-embedding filters (Sec. 4.5, Fig. 7 left).

    Each filter (C, P, P) is flattened to C*P*P, the D filters are centred, and the right singular
    vectors are the components. Each component's sign is fixed so that its largest-magnitude
    entry is positive (SVD signs are arbitrary). k is clipped to min(D, C*P*P).
    Returns (components (k, P, P, C) unit-norm, explained_variance_ratio (k,)).
    """
    w = np.asarray(weight, dtype=np.float64)                    # (D, C, P, P)
    D, C, P, Q = w.shape
    X = w.reshape(D, C * P * Q)                                 # (D, C*P*P)
    X = X - X.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(X, full_matrices=False)            # vt (r, C*P*P), r = min(D, CPP)
    k = min(int(k), vt.shape[0])
    var = s ** 2
    ratio = _safe_div(var[:k], var.sum())                       # (k,)
    comps = vt[:k]                                              # (k, C*P*P)
    idx = np.argmax(np.abs(comps), axis=1)
    comps = comps * np.sign(comps[np.arange(k), idx])[:, None]
    comps = comps.reshape(k, C, P, Q).transpose(0, 2, 3, 1)     # (k, P, P, C)
    return comps, ratio


# ---------------------------------------------------------------------------------------------
# Fig. 7 centre / Fig. 10: position embeddings
# ---------------------------------------------------------------------------------------------
def position_embedding_similarity(pos_embed, grid, num_prefix_tokens=1):
    """Cosine similarity of the position embeddings of all patch pairs (Fig. 7 centre, Fig. 10).

    pos_embed (1, N, D) or (N, D) with N = num_prefix_tokens + gh*gw; the prefix (class token)
    rows are dropped. Returns sim (gh, gw, gh, gw): sim[i, j] is the (gh, gw) map of how similar
    patch (i, j)'s embedding is to every patch's.
    """
    gh, gw = _grid(grid)
    E = np.asarray(pos_embed, dtype=np.float64)
    if E.ndim == 3:
        E = E[0]                                                # (N, D)
    E = E[num_prefix_tokens:]                                   # (Np, D)
    if E.shape[0] != gh * gw:
        raise ValueError(f"pos_embed has {E.shape[0]} patch rows after dropping "
                         f"{num_prefix_tokens} prefix rows, grid {gh}x{gw} needs {gh * gw}")
    E = _safe_div(E, np.linalg.norm(E, axis=1, keepdims=True))
    return (E @ E.T).reshape(gh, gw, gh, gw)                    # (gh, gw, gh, gw)


# ---------------------------------------------------------------------------------------------
# Fig. 7 right / Fig. 11: mean attention distance
# ---------------------------------------------------------------------------------------------
def patch_distances(grid, patch_size):
    """(Np, Np) Euclidean distance in pixels between patch centres, patches in row-major order."""
    gh, gw = _grid(grid)
    rows, cols = np.divmod(np.arange(gh * gw), gw)              # (Np,), (Np,)
    dr = rows[:, None] - rows[None, :]
    dc = cols[:, None] - cols[None, :]
    return float(patch_size) * np.sqrt(dr ** 2 + dc ** 2)       # (Np, Np)


def _layer_attention_distance(attn, dist, num_prefix_tokens):
    a = np.asarray(attn, dtype=np.float64)                      # (B, Hh, N, N)
    if a.ndim != 4:
        raise ValueError(f"attention must be (B, Hh, N, N), got shape {a.shape}")
    p = num_prefix_tokens
    a = a[:, :, p:, p:]                                         # (B, Hh, Np, Np) patch->patch
    if a.shape[-1] != dist.shape[0]:
        raise ValueError(f"attention has {a.shape[-1]} patch tokens, grid has {dist.shape[0]}")
    a = _safe_div(a, a.sum(axis=-1, keepdims=True))             # renormalise without the prefix
    per_query = np.einsum("bhqk,qk->bhq", a, dist)              # (B, Hh, Np)
    return per_query.mean(axis=(0, 2))                          # (Hh,)


def mean_attention_distance(attn, grid, patch_size, num_prefix_tokens=1):
    """Attention-weighted mean query-key patch distance in pixels (Fig. 7 right, Fig. 11).

    For each head: sum_k a[q, k] * ||centre(q) - centre(k)||, averaged over query patches and
    images. Prefix tokens are dropped as queries and keys and each query's patch weights are
    renormalised to sum to 1 (the class token has no position in the image). This is the
    patch-level version of the paper's pixel-level "attention distance" (a CNN's receptive field).
    attn: one layer (B, Hh, N, N) -> (Hh,), or a list / (L, B, Hh, N, N) stack -> (L, Hh).
    """
    dist = patch_distances(grid, patch_size)                    # (Np, Np)
    if isinstance(attn, (list, tuple)) or np.ndim(attn) == 5:
        return np.stack([_layer_attention_distance(a, dist, num_prefix_tokens) for a in attn])
    return _layer_attention_distance(attn, dist, num_prefix_tokens)


# ---------------------------------------------------------------------------------------------
# Fig. 6 / Fig. 14: attention rollout
# ---------------------------------------------------------------------------------------------
_FUSIONS = {"mean": np.mean, "max": np.max, "min": np.min}


def attention_rollout(attns, head_fusion="mean", add_residual=True):
    """Attention rollout (Abnar & Zuidema 2020), as used in the paper's Appendix D.8.

    Per layer l: fuse heads, A_l = fuse_h(attn_l) (B, N, N); model the residual connection as
    A_l <- 0.5 * A_l + 0.5 * I; renormalise rows. Then rollout = A_L @ ... @ A_2 @ A_1, so
    rollout[b, i, j] is how much output token i draws on input token j.
    attns: list of L arrays (B, Hh, N, N) or an (L, B, Hh, N, N) stack. Returns (B, N, N).
    """
    if head_fusion not in _FUSIONS:
        raise ValueError(f"head_fusion must be one of {sorted(_FUSIONS)}, got {head_fusion!r}")
    rollout = None
    for attn in attns:
        a = np.asarray(attn, dtype=np.float64)                  # (B, Hh, N, N)
        if a.ndim != 4:
            raise ValueError(f"each layer's attention must be (B, Hh, N, N), got {a.shape}")
        A = _FUSIONS[head_fusion](a, axis=1)                    # (B, N, N)
        if add_residual:
            A = 0.5 * A + 0.5 * np.eye(A.shape[-1])
        A = _safe_div(A, A.sum(axis=-1, keepdims=True))
        rollout = A if rollout is None else A @ rollout         # (B, N, N)
    if rollout is None:
        raise ValueError("attention_rollout needs at least one layer")
    return rollout


def class_token_attention_map(rollout, grid, num_prefix_tokens=1):
    """Where the prediction looks: (B, gh, gw) map, normalised so each image's max is 1.

    With a class token: row 0 of the rollout (the class token's output) over the patch columns.
    Without one (num_prefix_tokens=0, global average pooling), the pooled output is the mean of
    all patch outputs, so the map is the mean of the rollout rows over all query patches.
    """
    gh, gw = _grid(grid)
    r = np.asarray(rollout, dtype=np.float64)                   # (B, N, N)
    p = num_prefix_tokens
    m = r[:, 0, p:] if p > 0 else r[:, p:, p:].mean(axis=1)     # (B, Np)
    if m.shape[-1] != gh * gw:
        raise ValueError(f"rollout has {m.shape[-1]} patch columns, grid {gh}x{gw} needs {gh * gw}")
    m = _safe_div(m, m.max(axis=1, keepdims=True))
    return m.reshape(-1, gh, gw)                                # (B, gh, gw)


def _interp_matrix(n_out, n_in, mode):
    """(n_out, n_in) matrix mapping n_in samples to n_out (half-pixel centres, edges clamped)."""
    M = np.zeros((n_out, n_in))
    centre = (np.arange(n_out) + 0.5) * n_in / n_out            # output centres in input units
    if mode == "nearest":
        M[np.arange(n_out), np.minimum(np.floor(centre).astype(int), n_in - 1)] = 1.0
        return M
    src = np.clip(centre - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    np.add.at(M, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(M, (np.arange(n_out), hi), frac)
    return M


def upsample_map(map, img_size, mode="bilinear"):
    """Resize a (gh, gw) or (B, gh, gw) map to img_size (int or (H, W)); "nearest" or "bilinear".

    Separable: out = R @ map @ C^T with small interpolation matrices R (H, gh), C (W, gw).
    """
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    H, W = _grid(img_size)
    m = np.asarray(map, dtype=np.float64)                       # (..., gh, gw)
    R = _interp_matrix(H, m.shape[-2], mode)                    # (H, gh)
    Cm = _interp_matrix(W, m.shape[-1], mode)                   # (W, gw)
    return np.einsum("hi,...ij,wj->...hw", R, m, Cm)            # (..., H, W)
