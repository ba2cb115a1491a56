"""Official ViT checkpoints: the `.npz` files of google-research/vision_transformer ("vit_jax")
and google-research/big_vision, read into minivit's `ViT` and written back from it.

    model = load_vit_jax("ViT-B_16.npz")                   # configuration inferred from the shapes
    model = load_vit_jax("ViT-B_16.npz", img_size=384)     # position embeddings interpolated (Sec. 3.2)
    save_vit_jax(model, "out.npz", layout="big_vision")
    print(convert("run/best.npz", "official.npz"))         # minivit <-> official, by the input's contents

An official checkpoint is a flat archive of '/'-separated parameter paths of the flax model.
Shape letters: P patch, C channels, D width, Hh heads, hd = D / Hh, M MLP width, Np patches,
N tokens, K classes, R representation (pre-logits) width, L depth.

    embedding/{kernel (P, P, C, D), bias (D,)}          a conv, HWIO   -> patch_embed.proj (D, C, P, P)
    cls (1, 1, D)                                                      -> cls_token
    Transformer/encoderblock_{i}/<LN1>/{scale, bias}                   -> blocks.{i}.norm1
      <MHA>/{query, key, value}/kernel (D, Hh, hd), bias (Hh, hd)      -> blocks.{i}.attn.qkv (3D, D) [q; k; v]
      <MHA>/out/kernel (Hh, hd, D), bias (D,)                          -> blocks.{i}.attn.proj
      <LN2>/{scale, bias}                                              -> blocks.{i}.norm2
      <MLP>/Dense_0/kernel (D, M), Dense_1/kernel (M, D), biases       -> blocks.{i}.mlp.fc1, fc2
    Transformer/encoder_norm/{scale, bias}                             -> norm
    pre_logits/{kernel (D, R), bias}  (Dense + tanh, optional)         -> pre_logits.fc
    head/{kernel (D or R, K), bias (K,)}  (absent when K = 0)          -> head

The two layouts differ in three places:
- block names: vit_jax LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3
  (pre-Linen flax names, one counter over a block's sub-modules; big_vision's fix_old_checkpoints
  renames them with flax's convert_pre_linen); big_vision LayerNorm_0,
  MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0 (Linen: one counter per module type).
  Newer big_vision runs may store the blocks "scanned": Transformer/encoderblock/... with a
  leading depth axis L.
- the position embedding: vit_jax's `Transformer/posembed_input/pos_embedding` (1, N, D) is added
  after the class token is concatenated, so it has a class-token row; big_vision's top-level
  `pos_embedding` (1, Np, D) is added to the patches before `cls` is concatenated. minivit adds
  one (1, N, D) table after concatenation, so a big_vision table loads with a zero class-token
  row (exactly equivalent: cls + 0 = cls), and saving in big_vision's layout folds row 0 into
  `cls` (the same sum minivit's forward computes, so the logits stay bit-identical). big_vision's
  posemb="sincos2d" stores no table at all; that loads as minivit's pos_embed="sincos" (same
  formula) and needs img_size=.
- pooling: 'token' (vit_jax classifier, big_vision pool_type 'tok') or 'gap' (no class token,
  mean of the tokens). In both codebases `encoder_norm` normalises every token *before* pooling;
  timm maps gap checkpoints to global_pool='avg' with fc_norm=False for that reason, and so does
  minivit (whose global_pool='avg' otherwise normalises after pooling). big_vision's 'map' (MAPHead_0: attention pooling) has no minivit counterpart,
  and its pool_type '0' (the first token, no class token) has the same parameters as 'gap', so
  it loads as 'gap'.
Both are read with or without the 'params/' (big_vision) or 'opt/target/' (old vit_jax training
state) prefix; entries outside that prefix (optimizer state) are ignored, as both loaders do.

Numerics: flax's nn.gelu defaults to the tanh approximation, while minivit (like timm) uses the
exact erf form, so logits agree with the JAX originals closely but not bitwise.

Sources checked (through the code search, read for their layout; no code copied):
google-research/vision_transformer vit_jax/models_vit.py (AddPositionEmbs, Encoder1DBlock,
Encoder, VisionTransformer: names, the 'token'/'gap' classifier, pre_logits + tanh);
google-research/big_vision big_vision/models/vit.py (_Model, Encoder1DBlock, MAPHead,
get_posemb / posemb_sincos_2d, fix_old_checkpoints, resample_posemb) and big_vision/utils.py
(load_params: 'params/' and 'opt/target/' prefixes); huggingface/pytorch-image-models
timm/models/vision_transformer.py (_load_weights: the q/k/v and out kernel reshapes, prefixes,
scanned blocks; the *_gap_* models' fc_norm=False).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import npz, posemb
from .vit import ViT, ViTConfig

LAYOUTS = ("vit_jax", "big_vision")
PREFIXES = ("", "params/", "opt/target/")
LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon, used by both codebases

# (norm before attention, attention, norm before MLP, MLP) inside one encoder block
BLOCK_NAMES = {
    "vit_jax": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
POS_KEYS = {"vit_jax": "Transformer/posembed_input/pos_embedding", "big_vision": "pos_embedding"}
OLD_POS_KEY = "Transformer/pos_embedding"  # big_vision before 2022 (see its fix_old_checkpoints)
SAVE_PREFIX = {"vit_jax": "", "big_vision": "params/"}  # the prefix timm's loader detects big_vision by
UNSUPPORTED = {  # key prefix -> what it is
    "MAPHead_0/": "an attention-pooling head (big_vision pool_type='map'), which minivit does not have",
    "conv_root/": "a ResNet stem (a hybrid R50+ViT), which minivit does not have",
}
# ViTConfig fields a load may change freely; every other override must agree with the checkpoint
FREE_OVERRIDES = ("img_size", "num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate", "patch_drop_rate")


class InteropError(ValueError):
    """An official checkpoint that is missing, damaged, or holds what minivit cannot represent."""


# ---- reading ------------------------------------------------------------------------------------
def read_npz(path) -> dict:
    """{name: array} of an .npz archive, never unpickling; InteropError for anything else."""
    return npz.read(path, InteropError, "checkpoint")


def _strip_prefix(arrays):
    """(prefix, {path without prefix: array}); entries outside the prefix are training state."""
    for prefix in PREFIXES:
        if prefix + "embedding/kernel" in arrays:
            return prefix, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    shown = ", ".join(sorted(arrays)[:8]) + (", ..." if len(arrays) > 8 else "")
    raise InteropError(f"no 'embedding/kernel' entry (with prefix {', '.join(repr(p) for p in PREFIXES)}): not a "
                       f"vit_jax / big_vision ViT checkpoint (entries: {shown or 'none'})")


def _unscan(params):
    """Split big_vision's scanned blocks, Transformer/encoderblock/... (L, ...), into encoderblock_{i}."""
    scanned = {k: v for k, v in params.items() if k.startswith("Transformer/encoderblock/")}
    if not scanned:
        return params
    depths = {v.shape[0] if v.ndim else 0 for v in scanned.values()}
    if len(depths) != 1 or 0 in depths:
        raise InteropError("scanned blocks (Transformer/encoderblock/...) disagree on the depth axis: "
                           f"{sorted(depths)}")
    out = {k: v for k, v in params.items() if k not in scanned}
    for key, stacked in scanned.items():
        for i in range(stacked.shape[0]):
            out[key.replace("Transformer/encoderblock/", f"Transformer/encoderblock_{i}/")] = stacked[i]
    return out


class _Entries:
    """The checkpoint's arrays, handed out once each, with the expected shape checked."""

    def __init__(self, params):
        self.params = dict(params)

    def take(self, key, shape=None):
        if key not in self.params:
            raise InteropError(f"missing entry {key!r}")
        value = self.params.pop(key)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise InteropError(f"entry {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value

    def check_all_used(self):
        if self.params:
            raise InteropError(f"entries this reader does not understand: {sorted(self.params)}")


def _grid_side(rows, what):
    side = int(round(np.sqrt(rows)))
    if side * side != rows:
        raise InteropError(f"{what} has {rows} rows, which is not a square grid of patches")
    return side


def _mlp_ratio(M, D):
    """A float r with int(D * r) == M (ViTConfig stores the ratio, the checkpoint the width)."""
    r = M / D
    while int(D * r) < M:  # M / D can round down by one ulp
        r = float(np.nextafter(r, np.inf))
    return r


def from_official_arrays(arrays, *, dtype=np.float32, **overrides):
    """A ViT holding an official checkpoint's parameters ({path: array}, as in the .npz);
    returns (model, layout). `overrides` are ViTConfig fields; see load_vit_jax."""
    _prefix, params = _strip_prefix(arrays)
    for start, what in UNSUPPORTED.items():
        if any(k.startswith(start) for k in params):
            raise InteropError(f"the checkpoint holds {what} ({start}...)")
    for key, value in params.items():
        if value.dtype.kind != "f":
            raise InteropError(f"entry {key!r} has dtype {value.dtype}, not a float type (bfloat16 saved as raw "
                               "bytes shows as |V2: convert such a checkpoint to float32 first)")
    params = _unscan(params)
    layout = next((name for name, (_, mha, _, _) in BLOCK_NAMES.items()
                   if f"Transformer/encoderblock_0/{mha}/query/kernel" in params), None)
    if layout is None:
        raise InteropError("missing entry 'Transformer/encoderblock_0/MultiHeadDotProductAttention_{0,1}/query/"
                           "kernel': no encoder blocks in a layout this reader knows")
    e = _Entries(params)
    config, pos = _infer_config(e, layout, overrides)
    model = ViT(config=config, dtype=dtype)
    state = _state_dict(e, layout, config, pos)
    e.check_all_used()
    own = model.state_dict()
    if config.num_classes != state.get("head.weight", np.zeros((0, 0))).shape[0]:  # new classes: a fresh head
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        state.update({k: v for k, v in own.items() if k.startswith("head.")})
    if set(state) != set(own):
        raise InteropError(f"parameters do not fit this minivit model: missing {sorted(set(own) - set(state))}, "
                           f"unexpected {sorted(set(state) - set(own))} (minivit's ViTConfig may lack an option "
                           "this checkpoint needs)")
    model.load_state_dict(state)
    return model, layout


def _infer_config(e, layout, overrides):
    """ViTConfig from the shapes (consuming nothing but peeking), merged with `overrides`."""
    p = e.params
    kernel = p["embedding/kernel"]  # (P, P, C, D)
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise InteropError(f"entry 'embedding/kernel' has shape {kernel.shape}, expected square patches (P, P, C, D)")
    P, _, C, D = kernel.shape
    blocks = sorted({int(m.group(1)) for k in p if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    if blocks != list(range(len(blocks))):
        raise InteropError(f"encoder blocks are not numbered 0..L-1: found {blocks}")
    _, mha, _, mlp = BLOCK_NAMES[layout]
    q = p[f"Transformer/encoderblock_0/{mha}/query/kernel"]  # (D, Hh, hd)
    if q.ndim != 3 or q.shape[0] != D or q.shape[1] * q.shape[2] != D:
        raise InteropError(f"query kernel has shape {q.shape}, expected (D, Hh, hd) with D = Hh * hd = {D}")
    fc1 = p.get(f"Transformer/encoderblock_0/{mlp}/Dense_0/kernel")  # (D, M)
    if fc1 is None or fc1.ndim != 2 or fc1.shape[0] != D:
        raise InteropError(f"MLP kernel {mlp}/Dense_0/kernel is missing or not (D={D}, M)")
    pre, head = p.get("pre_logits/kernel"), p.get("head/kernel")  # (D, R), (D or R, K)
    class_token = "cls" in p
    inferred = dict(patch_size=int(P), in_chans=int(C), embed_dim=int(D), depth=len(blocks),
                    num_heads=int(q.shape[1]), mlp_ratio=_mlp_ratio(fc1.shape[1], D), qkv_bias=True,
                    class_token=class_token, global_pool="token" if class_token else "avg",
                    representation_size=int(pre.shape[1]) if pre is not None and pre.ndim == 2 else None,
                    num_classes=int(head.shape[1]) if head is not None and head.ndim == 2 else 0,
                    pos_embed_at="input", norm_eps=LN_EPS)
    if not class_token:
        inferred["fc_norm"] = False  # encoder_norm normalises every token before pooling (timm: fc_norm=False)
    pos_keys = [k for k in (POS_KEYS["vit_jax"], POS_KEYS["big_vision"], OLD_POS_KEY) if k in p]
    if len(pos_keys) > 1:
        raise InteropError(f"more than one position embedding: {pos_keys}")
    pos = p[pos_keys[0]] if pos_keys else None
    if pos is not None:
        if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != D:
            raise InteropError(f"entry {pos_keys[0]!r} has shape {pos.shape}, expected (1, N, D={D})")
        rows = pos.shape[1]
        has_cls_row = class_token and _is_square(rows - 1)
        side = _grid_side(rows - has_cls_row, repr(pos_keys[0]))
        inferred.update(pos_embed="learn", img_size=int(side * P))
    else:  # big_vision's posemb="sincos2d" stores no table; pos_embed="none" says there was none
        kind = overrides.get("pos_embed", "sincos" if layout == "big_vision" else None)
        tableless = [name for name, k in posemb.KINDS.items() if not k.learned]  # a kind with weights needs its table
        if kind not in tableless:
            raise InteropError(f"missing entry {POS_KEYS[layout]!r} (for a checkpoint without a learned position "
                               f"embedding pass pos_embed= one of {tableless}, and img_size=)")
        if "img_size" not in overrides:
            raise InteropError("the checkpoint holds no position embedding (big_vision posemb='sincos2d'), so its "
                               "image size is unknown: pass img_size=")
        inferred["pos_embed"] = kind
    for key, value in overrides.items():
        if key in FREE_OVERRIDES or key not in inferred:
            continue
        same = (int(D * value) == fc1.shape[1]) if key == "mlp_ratio" else value == inferred[key]
        if not same:
            raise InteropError(f"override {key}={value!r} contradicts the checkpoint, which holds "
                               f"{key}={inferred[key]!r}")
    config = {**inferred, **{k: v for k, v in overrides.items() if k in FREE_OVERRIDES or k not in inferred}}
    return ViTConfig.from_dict(config), (pos_keys[0] if pos_keys else None, inferred.get("img_size"))


def _is_square(n):
    return n > 0 and int(round(np.sqrt(n))) ** 2 == n


def _state_dict(e, layout, cfg, pos):
    """Consume the checkpoint's entries into minivit (timm) names and layouts."""
    D, Hh, M = cfg.embed_dim, cfg.num_heads, int(cfg.embed_dim * cfg.mlp_ratio)
    hd, P, C = D // Hh, cfg.patch_size, cfg.in_chans
    sd = {"patch_embed.proj.weight": e.take("embedding/kernel", (P, P, C, D)).transpose(3, 2, 0, 1),  # (D, C, P, P)
          "patch_embed.proj.bias": e.take("embedding/bias", (D,))}
    if cfg.class_token:
        sd["cls_token"] = e.take("cls", (1, 1, D))
    pos_key, saved_img = pos
    if pos_key is not None:
        sd["pos_embed"] = _pos_embed(e.take(pos_key), cfg, saved_img)
    ln1, mha, ln2, mlp = BLOCK_NAMES[layout]
    for i in range(cfg.depth):
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        sd[t + "norm1.weight"], sd[t + "norm1.bias"] = e.take(b + ln1 + "/scale", (D,)), e.take(b + ln1 + "/bias", (D,))
        # each (D_in, Hh, hd) kernel is a (D_in, D_out) matrix with outputs ordered head by head
        sd[t + "attn.qkv.weight"] = np.concatenate(
            [e.take(f"{b}{mha}/{n}/kernel", (D, Hh, hd)).reshape(D, D).T for n in ("query", "key", "value")])
        sd[t + "attn.qkv.bias"] = np.concatenate(
            [e.take(f"{b}{mha}/{n}/bias", (Hh, hd)).reshape(D) for n in ("query", "key", "value")])
        sd[t + "attn.proj.weight"] = e.take(f"{b}{mha}/out/kernel", (Hh, hd, D)).reshape(D, D).T
        sd[t + "attn.proj.bias"] = e.take(f"{b}{mha}/out/bias", (D,))
        sd[t + "norm2.weight"], sd[t + "norm2.bias"] = e.take(b + ln2 + "/scale", (D,)), e.take(b + ln2 + "/bias", (D,))
        sd[t + "mlp.fc1.weight"] = e.take(f"{b}{mlp}/Dense_0/kernel", (D, M)).T
        sd[t + "mlp.fc1.bias"] = e.take(f"{b}{mlp}/Dense_0/bias", (M,))
        sd[t + "mlp.fc2.weight"] = e.take(f"{b}{mlp}/Dense_1/kernel", (M, D)).T
        sd[t + "mlp.fc2.bias"] = e.take(f"{b}{mlp}/Dense_1/bias", (D,))
    sd["norm.weight"] = e.take("Transformer/encoder_norm/scale", (D,))
    sd["norm.bias"] = e.take("Transformer/encoder_norm/bias", (D,))
    R = cfg.representation_size
    if R:
        sd["pre_logits.fc.weight"] = e.take("pre_logits/kernel", (D, R)).T
        sd["pre_logits.fc.bias"] = e.take("pre_logits/bias", (R,))
    if "head/kernel" in e.params or "head/bias" in e.params:
        K = e.params.get("head/kernel", np.zeros((0, 0))).shape[-1]
        sd["head.weight"] = e.take("head/kernel", (R or D, K)).T
        sd["head.bias"] = e.take("head/bias", (K,))
    return sd


def _pos_embed(table, cfg, saved_img):
    """(1, N or Np, D) official table -> minivit's (1, N, D): a zero class-token row where the
    table has none (big_vision), and the patch grid interpolated when img_size changed."""
    prefix = table[0, :1] if cfg.class_token and _is_square(table.shape[1] - 1) else None
    grid = table[0, 1:] if prefix is not None else table[0]  # (Np, D)
    if cfg.class_token and prefix is None:
        prefix = np.zeros((1, table.shape[2]), dtype=table.dtype)  # big_vision adds posemb before cls
    old, new = (saved_img // cfg.patch_size,) * 2, cfg.grid_size
    if tuple(old) != tuple(new):
        grid = posemb.interpolate_grid(grid, old, new)
    rows = [grid] if prefix is None else [prefix, grid]
    return np.concatenate(rows, axis=0)[None]


def load_vit_jax(path, *, dtype=np.float32, **overrides) -> ViT:
    """Read a vit_jax or big_vision ViT checkpoint (.npz) into a ViT whose configuration is
    inferred from the parameter shapes. Overrides: img_size (position embeddings interpolated to
    the new patch grid), num_classes (a new zero-initialised head when it differs), dropout
    rates; any other ViTConfig field must agree with the checkpoint. Raises InteropError (a
    ValueError) naming what does not fit."""
    arrays = read_npz(path)
    try:
        return from_official_arrays(arrays, dtype=dtype, **overrides)[0]
    except InteropError as e:
        raise InteropError(f"{path}: {e}") from e


# ---- writing ------------------------------------------------------------------------------------
def to_official_arrays(model, layout="vit_jax") -> dict:
    """{path: array} of `model` in the official `layout`; InteropError when the model has parts
    that layout cannot hold."""
    if layout not in LAYOUTS:
        raise InteropError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    cfg = model.config
    sd = {k: np.asarray(v if isinstance(v, np.ndarray) else v.get()) for k, v in model.state_dict().items()}
    allowed_pos = tuple(name for name, kind in posemb.KINDS.items() if layout in kind.official_layouts)
    problems = [
        (cfg.pos_embed in allowed_pos and cfg.pos_embed_at == "input",
         f"pos_embed={cfg.pos_embed!r} at {cfg.pos_embed_at!r} (the {layout} layout holds "
         f"{' or '.join(allowed_pos)} position embeddings added at the input)"),
        (cfg.qkv_bias, "qkv_bias=False (official attention layers have biases)"),
        (cfg.norm_eps == LN_EPS, f"norm_eps={cfg.norm_eps} (official LayerNorms use {LN_EPS})"),
        (cfg.class_token == (cfg.global_pool == "token"),
         "global_pool='avg' with a class token (official 'gap' models have none)"),
        ("fc_norm.weight" not in sd, "a norm after pooling (fc_norm); official 'gap' models normalise every token "
                                     "before pooling (ViTConfig fc_norm=False)"),
    ]
    bad = [message for ok, message in problems if not ok]
    if bad:
        raise InteropError("this model cannot be written in the official layout: " + "; ".join(bad))
    D, Hh = cfg.embed_dim, cfg.num_heads
    hd = D // Hh
    out = {"embedding/kernel": sd.pop("patch_embed.proj.weight").transpose(2, 3, 1, 0),  # (P, P, C, D)
           "embedding/bias": sd.pop("patch_embed.proj.bias")}
    if cfg.class_token:
        out["cls"] = sd.pop("cls_token")
    if cfg.pos_embed == "learn":
        table = sd.pop("pos_embed")  # (1, N, D)
        if layout == "big_vision" and cfg.class_token:  # patches only; the class row moves into cls
            out["cls"] = out["cls"] + table[:, :1]
            table = table[:, 1:]
        out[POS_KEYS[layout]] = table
    ln1, mha, ln2, mlp = BLOCK_NAMES[layout]
    for i in range(cfg.depth):
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        out[b + ln1 + "/scale"], out[b + ln1 + "/bias"] = sd.pop(t + "norm1.weight"), sd.pop(t + "norm1.bias")
        w, bias = sd.pop(t + "attn.qkv.weight"), sd.pop(t + "attn.qkv.bias")  # (3D, D), (3D,)
        for j, n in enumerate(("query", "key", "value")):
            out[f"{b}{mha}/{n}/kernel"] = w[j * D:(j + 1) * D].T.reshape(D, Hh, hd)
            out[f"{b}{mha}/{n}/bias"] = bias[j * D:(j + 1) * D].reshape(Hh, hd)
        out[f"{b}{mha}/out/kernel"] = sd.pop(t + "attn.proj.weight").T.reshape(Hh, hd, D)
        out[f"{b}{mha}/out/bias"] = sd.pop(t + "attn.proj.bias")
        out[b + ln2 + "/scale"], out[b + ln2 + "/bias"] = sd.pop(t + "norm2.weight"), sd.pop(t + "norm2.bias")
        for j, fc in enumerate(("fc1", "fc2")):
            out[f"{b}{mlp}/Dense_{j}/kernel"] = sd.pop(f"{t}mlp.{fc}.weight").T
            out[f"{b}{mlp}/Dense_{j}/bias"] = sd.pop(f"{t}mlp.{fc}.bias")
    out["Transformer/encoder_norm/scale"] = sd.pop("norm.weight")
    out["Transformer/encoder_norm/bias"] = sd.pop("norm.bias")
    for name, key in (("pre_logits", "pre_logits.fc"), ("head", "head")):
        if key + ".weight" in sd:
            out[name + "/kernel"], out[name + "/bias"] = sd.pop(key + ".weight").T, sd.pop(key + ".bias")
    if sd:
        raise InteropError(f"this model cannot be written in the official layout: parameters {sorted(sd)} have no "
                           "place in it")
    prefix = SAVE_PREFIX[layout]
    return {prefix + k: np.array(v, order="C") for k, v in out.items()}  # copies, never the live parameters


def save_vit_jax(model, path, layout="vit_jax") -> Path:
    """Write `model` as an official checkpoint (.npz) in `layout`, atomically (minivit.npz.write)."""
    return npz.write(path, to_official_arrays(model, layout))


# ---- minivit checkpoint <-> official checkpoint -------------------------------------------------
def describe(model) -> str:
    """One line naming the model's shape, for convert's summary."""
    c = model.config
    pool = "class-token pooling" if c.global_pool == "token" else "average pooling"
    pre = f", pre-logits {c.representation_size}" if c.representation_size else ""
    return (f"ViT {c.img_size}px patch {c.patch_size}, width {c.embed_dim}, depth {c.depth}, {c.num_heads} heads, "
            f"MLP {int(c.embed_dim * c.mlp_ratio)}, {c.num_classes} classes, {pool}{pre}")


def convert(in_path, out_path, *, layout=None, dtype=np.float32, **overrides) -> str:
    """`minivit convert IN OUT`: a minivit checkpoint (it has meta.json) becomes an official one
    in `layout` (default vit_jax); an official one becomes a minivit checkpoint (with
    `overrides` as in load_vit_jax). Returns a one-line summary."""
    from .train.checkpoint import model_from_checkpoint, save_checkpoint

    arrays = read_npz(in_path)
    if "meta.json" in arrays:
        if overrides:
            raise InteropError(f"options {sorted(overrides)} apply when reading an official checkpoint; "
                               f"{in_path} is a minivit checkpoint")
        model, _ = model_from_checkpoint(in_path)
        layout = layout or "vit_jax"
        save_vit_jax(model, out_path, layout)
        return f"minivit checkpoint {in_path} -> {layout} checkpoint {out_path}: {describe(model)}"
    if layout is not None:
        raise InteropError(f"layout= applies when writing an official checkpoint; {in_path} is already one")
    try:
        model, found = from_official_arrays(arrays, dtype=dtype, **overrides)
    except InteropError as e:
        raise InteropError(f"{in_path}: {e}") from e
    save_checkpoint(out_path, model, source=str(in_path), source_format=found)
    return f"{found} checkpoint {in_path} -> minivit checkpoint {out_path}: {describe(model)}"
