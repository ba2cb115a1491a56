"""The GPU launchers' arithmetic and entry checks, on the CPU (no CuPy, no GPU):

- grids: every launch of attention v2/v3 (heads over grid y) and of the matmul.cu kernels (row
  tiles over grid y, the batch over z) stays within CUDA's limits (x <= 2^31 - 1, y and z <=
  65,535), and the launches cover every head, every (matrix, row), exactly once: B * Hh above
  65,535 (8192 images x 12 heads) and M above 65,535 row tiles used to be one refused launch.
- end to end with stand-in kernels: NumPy arrays pass through the real launchers into Python
  kernels that read what a CUDA kernel reads (a bare pointer walked with the strides passed, the
  grid's blocks), with the grid limit lowered to 2 so that the chunking runs on small shapes; the
  outputs equal NumPy's and every output element is written once.
- entry checks: the raw kernels' entry points refuse mixed float dtypes (float32 x with float64 w
  would read the wrong bits), wrong shapes and strided arrays they write in place, with the op,
  what was expected and what was given in the message, before any launch; arrays they only read
  are made contiguous (a strided view used to be read as its base buffer).
- no copies of q, k, v: attention v2 and v3 hand the kernels unbind's strided views themselves,
  with their strides (the stand-ins read through them), and keep the views, not copies, for the
  backward; only operands a kernel cannot read in place are copied.

tests/test_gpu_cards.py tests what each launch takes from the card (tiles, block sizes);
tests/test_gpu.py runs the kernels themselves on a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from kernels.gpu import attention as gatt
from kernels.gpu import dense as gdense
from kernels.gpu import loss as gloss
from kernels.gpu import normact as gnorm
from kernels.gpu import optim as goptim
from kernels.gpu import runtime

X_MAX, YZ_MAX = 2**31 - 1, 65535
H100 = 232448  # an H100's shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin)


def _within_limits(grid):
    return 1 <= len(grid) <= 3 and 1 <= grid[0] <= X_MAX and all(1 <= g <= YZ_MAX for g in grid[1:])


# ---------------------------------------------------------------- pure launch arithmetic
def test_check_grid_accepts_cuda_limits_and_refuses_one_past_them():
    assert runtime.check_grid((X_MAX, YZ_MAX, YZ_MAX)) == (X_MAX, YZ_MAX, YZ_MAX)
    for bad in ((X_MAX + 1,), (1, YZ_MAX + 1), (1, 1, YZ_MAX + 1), (0, 1), (1, 0)):
        with pytest.raises(ValueError, match="outside CUDA's limits"):
            runtime.check_grid(bad)


@pytest.mark.parametrize("n", [0, 1, 5, 65534, 65535, 65536, 3 * 65535 + 1, 98304])
@pytest.mark.parametrize("most", [None, 1, 7, 65535])
def test_chunks_cover_range_n_in_order_exactly_once_each_within_the_limit(n, most):
    parts = runtime.chunks(n, most)
    limit = YZ_MAX if most is None else most
    assert all(0 < b - a <= limit for a, b in parts)
    assert [a for a, _ in parts] == ([0] + [b for _, b in parts[:-1]])[:len(parts)]  # each where the last stopped
    assert (parts[-1][1] if parts else 0) == n
    assert len(parts) == -(-n // limit)


@pytest.mark.parametrize("BH", [1, 12, 65535, 65536, 8192 * 12, 3 * 65535 + 1])
@pytest.mark.parametrize("N, rows", [(1, 4), (65, 4), (1024, 4), (65, 64), (197, 64), (4096, 64)])
def test_attention_launches_stay_within_grid_limits_and_cover_every_head_once(BH, N, rows):
    launches = gatt.head_launches(BH, N, rows)
    assert all(_within_limits(g) for g, _, _ in launches)
    assert all(g == (-(-N // rows), h1 - h0) for g, h0, h1 in launches)
    heads = np.zeros(BH, np.int64)
    for _, h0, h1 in launches:
        heads[h0:h1] += 1
    assert (heads == 1).all()
    if BH > YZ_MAX:  # what the launch was before: one grid (ceil(N / rows), B * Hh), refused by CUDA
        assert len(launches) > 1 and not _within_limits((-(-N // rows), BH))


@pytest.mark.parametrize("L, M, N", [(1, 1, 1), (1, 8192 * 65, 192), (1, 8192 * 197, 768), (7, 600_000, 10),
                                     (70_000, 64, 64), (1, 2**27, 3), (2, 65535 * 8 + 1, 1)])
@pytest.mark.parametrize("name", ["matmul_v1", "matmul_v2", "matmul_v3"])
def test_matmul_launches_stay_within_grid_limits_and_cover_every_row_of_every_matrix_once(L, M, N, name):
    _, tn, tm = gdense._BLOCKS[name]
    launches = gdense.matmul_launches(L, M, N, tm, tn)
    assert all(_within_limits(g) for g, *_ in launches)
    assert all(g[0] * tn >= N for g, *_ in launches)
    if len(launches) == 1 and launches[0][1] is None:  # every matrix (z, grid-stride) and every row
        (grid, _, m0, m1), = launches
        assert (m0, m1) == (0, M) and grid[1] * tm >= M and grid[2] == min(L, YZ_MAX)
        assert -(-M // tm) <= YZ_MAX
    else:
        assert -(-M // tm) > YZ_MAX  # chunked only where one launch would be refused
        rows = {}
        for grid, l, m0, m1 in launches:
            assert grid[1] * tm >= m1 - m0 and grid[2] == 1
            rows.setdefault(l, []).append((m0, m1))
        assert sorted(rows) == list(range(L))
        for parts in rows.values():  # per matrix: slabs in order, back to back, 0 .. M
            assert parts[0][0] == 0 and parts[-1][1] == M
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


# ---------------------------------------------------------------- stand-in kernels
def _raw(a, shape, strides=None):
    """What a CUDA kernel sees of an argument: its first element's address, walked as `shape` with
    `strides` in elements (dense row-major when None), whatever a's own layout is."""
    item = a.itemsize
    if strides is None:
        strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    return as_strided(a, shape=tuple(shape), strides=tuple(s * item for s in strides))


class Written:
    """Addresses written by the stand-in kernels: each output element must be written once."""

    def __init__(self):
        self.addresses = []

    def add(self, view):
        base = view.__array_interface__["data"][0]
        idx = np.indices(view.shape).reshape(view.ndim, -1)
        self.addresses.append(base + (np.asarray(view.strides)[:, None] * idx).sum(axis=0))

    def once(self, *outs):
        """Every element of these C-contiguous outputs written exactly once, and nothing else."""
        got = np.sort(np.concatenate(self.addresses)) if self.addresses else np.zeros(0)
        want = np.sort(np.concatenate([out.__array_interface__["data"][0] + np.arange(out.size) * out.itemsize
                                       for out in outs]))
        return got.size == want.size and (got == want).all()


def _fake_matmul(written, tm, tn):
    def kernel(grid, block, args):
        runtime.check_grid(grid)
        A, B, C, bias, has_bias, L, M, N, K, sab, sam, sak, sbb, sbk, sbn = args
        L, M, N, K = int(L), int(M), int(N), int(K)
        a = _raw(A, (L, M, K), (int(sab), int(sam), int(sak)))
        b = _raw(B, (L, K, N), (int(sbb), int(sbk), int(sbn)))
        c = _raw(C, (L, M, N))
        for z in range(grid[2]):
            for l in range(z, L, grid[2]):  # matmul.cu's grid-stride loop over the batch
                for by in range(grid[1]):
                    for bx in range(grid[0]):
                        rows, cols = slice(by * tm, min((by + 1) * tm, M)), slice(bx * tn, min((bx + 1) * tn, N))
                        if rows.start >= M or cols.start >= N:
                            continue
                        tile = a[l, rows] @ b[l, :, cols]
                        if has_bias:
                            tile = tile + _raw(bias, (N,))[cols]
                        c[l, rows, cols] = tile
                        written.add(c[l, rows, cols])
    return kernel


@pytest.fixture
def small_grid(monkeypatch):
    """Grid y and z limited to 2 blocks, so the chunked launches run on shapes a CPU can simulate."""
    monkeypatch.setattr(runtime, "MAX_GRID_YZ", 2)


@pytest.mark.parametrize("name", ["matmul_v1", "matmul_v2", "matmul_v3"])
@pytest.mark.parametrize("a_shape, b_shape, transpose_b", [
    ((3, 2, 70, 9), (9, 11), False),    # rows chunked per matrix (70 > 2 tiles of v1 and v2); b broadcast
    ((5, 4, 6), (5, 6, 7), True),       # 5 matrices, 2 in z: the kernel's grid-stride loop; b a transpose
    ((300, 5), (5, 130), False)])       # 2-D: v3's 128-row tiles, 3 of them
def test_kernel_product_with_chunked_launches_equals_numpy_and_writes_every_element_once(
        name, a_shape, b_shape, transpose_b, small_grid, monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape)
    b = rng.standard_normal(b_shape[:-2] + b_shape[:-3:-1]).swapaxes(-1, -2) if transpose_b else \
        rng.standard_normal(b_shape)
    bias = rng.standard_normal(b.shape[-1])
    _, tn, tm = gdense._BLOCKS[name]
    written = Written()
    monkeypatch.setattr(runtime, "function", lambda file, kname, shared=0: _fake_matmul(written, tm, tn))
    out = gdense.kernel_product(name, a, b, bias=bias)
    np.testing.assert_allclose(out, np.matmul(a, b) + bias, rtol=1e-12, atol=1e-12)
    assert written.once(out)


# attention: stand-ins that compute, per head bh0 + blockIdx.y of their grid, what attention.cu's
# kernels compute, reading q, k, v (and dO) as attention.cu does, through the element strides
# passed, and writing dense outputs
def _heads_in(X, Hh, strides, bh0, H, N, hd):
    """Heads bh0 .. bh0 + H - 1 of an input read in place: [(N, hd) view per head]."""
    sb, sh, sn = (int(x) for x in strides)
    B = (bh0 + H - 1) // Hh + 1
    x = _raw(X, (B, int(Hh), N, hd), (sb, sh, sn, 1))
    return [x[bh // Hh, bh % Hh] for bh in range(bh0, bh0 + H)]


def _fake_attention(written, seen=None):
    def forward(grid, block, args, shared_mem=0):
        runtime.check_grid(grid)
        Q, K, V, O, LSE, N, hd, scale, Hh, sb, sh, sn, bh0 = args
        H, N, hd, bh0 = grid[1], int(N), int(hd), int(bh0)
        if seen is not None:
            seen.append(args)
        q, k, v = (_heads_in(x, Hh, (sb, sh, sn), bh0, H, N, hd) for x in (Q, K, V))
        o, lse = _raw(O, (bh0 + H, N, hd))[bh0:], _raw(LSE, (bh0 + H, N))[bh0:]
        for h in range(H):
            s = scale * q[h] @ k[h].T
            m = s.max(axis=1, keepdims=True)
            p = np.exp(s - m)
            o[h] = (p / p.sum(axis=1, keepdims=True)) @ v[h]
            lse[h] = (m + np.log(p.sum(axis=1, keepdims=True)))[:, 0]
            written.add(o[h])

    def rowdot(grid, block, args, shared_mem=0):
        runtime.check_grid(grid)
        A, Bd, OUT, rows, N, hd, Hh, sb, sh, sn = args
        N, hd = int(N), int(hd)
        a = np.stack(_heads_in(A, Hh, (sb, sh, sn), 0, int(rows) // N, N, hd))
        _raw(OUT, (int(rows),))[:] = (a.reshape(-1, hd) * _raw(Bd, (int(rows), hd))).sum(axis=1)

    def backward(grid, block, args, shared_mem=0):
        runtime.check_grid(grid)
        Q, K, V, G, LSE, D, *outs, N, hd, scale, Hh, sb, sh, sn, gb, gh, gn, bh0 = args
        H, N, hd, bh0 = grid[1], int(N), int(hd), int(bh0)
        q, k, v = (_heads_in(x, Hh, (sb, sh, sn), bh0, H, N, hd) for x in (Q, K, V))
        g = _heads_in(G, Hh, (gb, gh, gn), bh0, H, N, hd)
        lse, d = _raw(LSE, (bh0 + H, N))[bh0:], _raw(D, (bh0 + H, N))[bh0:]
        outs = [_raw(x, (bh0 + H, N, hd))[bh0:] for x in outs]
        for h in range(H):
            p = np.exp(scale * q[h] @ k[h].T - lse[h][:, None])
            ds = p * (g[h] @ v[h].T - d[h][:, None])
            if len(outs) == 1:
                outs[0][h] = scale * ds @ k[h]
            else:
                outs[0][h], outs[1][h] = scale * ds.T @ q[h], p.T @ g[h]
            for x in outs:
                written.add(x[h])

    def function(file, name, shared=0, names=None):
        if name.startswith(("attn_fwd_v2", "flash_fwd_v3")):
            return forward
        if name.startswith("attn_rowdot"):
            return rowdot
        return backward

    return function


def _qkv(B=3, Hh=3, N=5, hd=4, seed=0):
    """q, k, v as unbind gives them: strided views of one (B, N, 3, Hh, hd) array; and a gradient
    as the transpose before the output projection gives it, a (B, Hh, N, hd) view of (B, N, Hh, hd)."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, N, 3, Hh, hd)).transpose(2, 0, 3, 1, 4)  # (3, B, Hh, N, hd), a view
    return qkv[0], qkv[1], qkv[2], rng.standard_normal((B, N, Hh, hd)).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_attention_over_head_chunks_from_strided_views_equals_the_reference(version, small_grid, monkeypatch):
    """9 heads in launches of at most 2, q, k, v and the gradient strided views (unbind's, a
    transpose's) read in place through their strides: forward and backward equal the float64
    reference, and each output element is written once."""
    from kernels.reference import attention as ref

    q, k, v, g = _qkv()
    assert not q.flags.c_contiguous and not g.flags.c_contiguous
    written = Written()
    monkeypatch.setattr(runtime, "function", _fake_attention(written))
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: H100)
    fwd, bwd = getattr(gatt, f"{version}_forward"), getattr(gatt, f"{version}_backward")
    out, cache = fwd(q, k, v, 0.5)
    assert written.once(out)
    written.addresses = []
    grads = bwd(g, cache)
    assert written.once(*grads)
    want, rcache = ref.attention_forward(q, k, v, 0.5)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    for got, exp in zip(grads, ref.attention_backward(g, rcache)):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_attention_forward_hands_the_kernel_unbinds_views_without_copying_them(version, monkeypatch):
    """The kernel's q, k, v are the views themselves (their first elements, one buffer, the strides
    of the (B, N, 3, Hh, hd) layout), and the cache keeps those views for the backward: no copy."""
    q, k, v, _ = _qkv(B=2, Hh=3, N=7, hd=4)
    seen = []
    monkeypatch.setattr(runtime, "function", _fake_attention(Written(), seen))
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: H100)
    out, cache = getattr(gatt, f"{version}_forward")(q, k, v, 0.5)
    (Q, K, V, *_, Hh, sb, sh, sn, bh0), = seen
    assert (Q, K, V) == (q, k, v) and all(x is y for x, y in zip((Q, K, V), (q, k, v)))
    assert (int(Hh), int(sb), int(sh), int(sn)) == (3, 7 * 3 * 3 * 4, 4, 3 * 3 * 4)
    assert all(x is y for x, y in zip(cache[:3], (q, k, v)))
    assert out.flags.c_contiguous and not np.shares_memory(out, q.base)


def test_operands_the_kernels_cannot_read_in_place_are_copied_and_the_rest_are_not():
    q, k, v, g = _qkv()
    same = gatt._operands("t", q, k, v, g)
    assert all(a is b for a, b in zip(same, (q, k, v, g)))
    mixed = gatt._operands("t", q, np.ascontiguousarray(k), v, g)  # strides differ: one layout for all three
    assert all(a.flags.c_contiguous for a in mixed[:3]) and mixed[3] is g
    fortran = np.asfortranarray(np.ones((2, 3, 5, 4)))  # hd not dense: copied
    assert gatt.head_strides(fortran) is None and gatt.head_strides(q) == (5 * 3 * 3 * 4, 4, 3 * 3 * 4)
    assert all(a.flags.c_contiguous for a in gatt._operands("t", fortran, fortran, fortran)[:3])


# ---------------------------------------------------------------- entry checks
def test_check_operands_names_the_op_what_was_expected_and_what_was_given():
    x32, w64 = np.zeros((4, 8), np.float32), np.zeros(8, np.float64)
    with pytest.raises(TypeError, match=r"layernorm: w is float64, expected float32 \(the dtype of x\)"):
        runtime.check_operands("layernorm", {"x": x32, "w": w64})
    with pytest.raises(TypeError, match="gelu: x must be float32 or float64, got int64"):
        runtime.check_operands("gelu", {"x": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match=r"layernorm: w has shape \(7,\), expected \(8,\)"):
        runtime.check_operands("layernorm", {"x": x32, "w": np.zeros(7, np.float32)}, shapes={"w": (8,)})
    with pytest.raises(ValueError, match="adamw: p is written in place and must be C-contiguous"):
        runtime.check_operands("adamw", {"p": np.zeros((8, 4), np.float32).T}, written=("p",))
    assert runtime.check_operands("ok", {"x": x32, "absent": None, "y": x32.T}, shapes={"absent": (1,)}) == np.float32


def test_contiguous_copies_only_what_is_strided():
    a = np.arange(12.0).reshape(3, 4)
    same, copied, none = runtime.contiguous(a, a.T, None)
    assert same is a and none is None
    assert copied.flags.c_contiguous and (copied == a.T).all() and not np.shares_memory(copied, a)


@pytest.fixture
def no_launch(monkeypatch):
    """runtime.function raises: an entry check must refuse before any kernel is fetched."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched with operands the entry check should have refused")
    monkeypatch.setattr(runtime, "function", refuse)


def _f(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


@pytest.mark.parametrize("call, error, says", [
    (lambda: gnorm.layernorm_v2_forward(_f(4, 8), _f(8, dtype=np.float64), _f(8)), TypeError,
     "layernorm gpu_v2 forward: w is float64, expected float32"),
    (lambda: gnorm.layernorm_v2_forward(_f(4, 8), _f(7), _f(8)), ValueError, r"w has shape \(7,\), expected \(8,\)"),
    (lambda: gnorm.layernorm_v2_backward(_f(4, 8, dtype=np.float64), (_f(4, 8), _f(8), _f(4), _f(4))), TypeError,
     "layernorm gpu_v2 backward: grad is float64, expected float32"),
    (lambda: gnorm.gelu_v2_backward(_f(4, 7), (_f(4, 8),)), ValueError, r"gelu gpu_v2 backward: grad has shape"),
    (lambda: gnorm.softmax_rows_backward(_f(8, 4), _f(8, 4), out=_f(4, 8).T), ValueError,
     "softmax gpu_v2 backward: out is written in place and must be C-contiguous"),
    (lambda: gatt.v3_forward(_f(1, 2, 5, 4), _f(1, 2, 5, 4, dtype=np.float64), _f(1, 2, 5, 4), 0.5), TypeError,
     "attention gpu_v3 forward: k is float64, expected float32"),
    (lambda: gatt.v2_forward(_f(1, 2, 5, 4, dtype=np.float16), _f(1, 2, 5, 4, dtype=np.float16),
                             _f(1, 2, 5, 4, dtype=np.float16), 0.5), TypeError, "must be float32 or float64"),
    (lambda: gatt.v3_backward(_f(1, 2, 5, 4, dtype=np.float64), (_f(1, 2, 5, 4), _f(1, 2, 5, 4), _f(1, 2, 5, 4),
                                                                 _f(1, 2, 5, 4), _f(1, 2, 5), 0.5)),
     TypeError, "attention gpu_v3 backward: grad is float64"),
    (lambda: gatt.rowdot(_f(1, 1, 2, 3), _f(1, 1, 2, 4)), ValueError,
     r"attention rowdot: o has shape \(1, 1, 2, 4\), expected \(1, 1, 2, 3\)"),
    (lambda: gdense.kernel_product("matmul_v3", _f(3, 4), _f(4, 5, dtype=np.float64)), TypeError,
     r"matmul \(matmul_v3\): b is float64, expected float32"),
    (lambda: gdense.kernel_product("matmul_v3", _f(3, 4), _f(4, 5), bias=_f(4)), ValueError,
     r"bias has shape \(4,\), expected \(5,\)"),
    (lambda: gloss.sce_v2_forward(_f(4, 10), np.zeros(5, np.int64)), ValueError,
     r"softmax_cross_entropy gpu_v2: labels has shape \(5,\), expected \(4,\)"),
    (lambda: gloss.sce_v2_forward(_f(4, 10, dtype=np.int32), np.zeros(4, np.int64)), TypeError,
     "logits must be float32 or float64"),
    (lambda: goptim.adamw_v2(_f(8, 4).T, _f(4, 8), _f(4, 8), _f(4, 8), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1), ValueError,
     "adamw_update gpu_v2: p is written in place and must be C-contiguous"),
    (lambda: goptim.adamw_v2(_f(4, 8), _f(4, 8, dtype=np.float64), _f(4, 8), _f(4, 8), 1e-3, 0.9, 0.999, 1e-8,
                             0.0, 1), TypeError, "adamw_update gpu_v2: g is float64, expected float32"),
    (lambda: goptim.adamw_v2(_f(4, 8), _f(8), _f(4, 8), _f(4, 8), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1), ValueError,
     r"g has shape \(8,\), expected \(4, 8\)"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_raw_kernel_entry_points_refuse_bad_operands_before_any_launch(call, error, says, no_launch):
    with pytest.raises(error, match=says):
        call()


def test_adamw_foreach_check_refuses_mixed_dtypes_shapes_and_list_lengths():
    p = [_f(3), _f(2, 2)]
    goptim.check_foreach(p, [_f(3), _f(2, 2)], [_f(3), _f(2, 2)], [_f(3), _f(2, 2)])  # fine
    with pytest.raises(ValueError, match=r"array 1: p, g, m, v have shapes \(2, 2\), \(4,\)"):
        goptim.check_foreach(p, [_f(3), _f(4)], [_f(3), _f(2, 2)], [_f(3), _f(2, 2)])
    with pytest.raises(TypeError, match="one float dtype"):
        goptim.check_foreach(p, [_f(3), _f(2, 2, dtype=np.float64)], [_f(3), _f(2, 2)], [_f(3), _f(2, 2)])
    with pytest.raises(ValueError, match="different lengths"):
        goptim.check_foreach(p, [_f(3)], [_f(3), _f(2, 2)], [_f(3), _f(2, 2)])


def test_strided_inputs_reach_the_kernel_contiguous(monkeypatch):
    """gelu and layernorm given a transposed x: the stand-in kernel, which reads a bare pointer as
    dense rows, sees x's values (a strided view used to be read as its base buffer)."""
    seen = {}

    def function(file, name, shared=0):
        def kernel(grid, block, args, shared_mem=0):
            n = int(args[-1]) if name.startswith("gelu") else None
            seen[name.split("<")[0]] = _raw(args[0], (n,)).copy() if n else args[0]
        return kernel

    monkeypatch.setattr(runtime, "function", function)
    x = np.arange(12.0).reshape(3, 4).T  # (4, 3), strided
    gnorm.gelu_v2_forward(x)
    np.testing.assert_array_equal(seen["gelu_fwd_v2"], x.reshape(-1))
    gnorm.layernorm_v2_forward(x, np.ones(3), np.zeros(3))
    assert seen["layernorm_fwd_v2"].flags.c_contiguous and (seen["layernorm_fwd_v2"] == x).all()
