"""What the GPU launches take from the card, on the CPU (no CuPy, no GPU), with the numbers an
H100, an A100 and an L4 (or RTX 4090) report:

- flash attention v3's tile rows, chosen from the shared memory a block may opt in to
  (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227, 163 and 99 KiB) for every head width 16-128 in
  float32 and float64: the chosen tile fits and is the largest that does, its instantiation is
  declared (tests/test_gpu_sources.py compiles each card's set with NVRTC), every kernel above
  48 KiB is opted in to its shared memory through runtime.function's real code, and v3 refuses,
  naming gpu_v2, where not even 16 rows fit.
- LayerNorm backward's block size, from the card's shared memory, registers, threads and block
  slots per multiprocessor: within every limit, more warps resident than the old fixed launch,
  and dx, dw, db equal to the reference through a stand-in kernel that walks rows as the CUDA
  kernel does with the blocks and warps chosen.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernels.gpu import attention as gatt
from kernels.gpu import normact as gnorm
from kernels.gpu import runtime
from kernels.reference import normact as ref_norm

# cudaDevAttrMaxSharedMemoryPerBlockOptin of an H100 (227 KiB), an A100 (163 KiB), an L4 or RTX 4090 (99 KiB)
H100, A100, L4 = 232448, 166912, 101376
CARDS = {"H100": H100, "A100": A100, "L4": L4}


@pytest.fixture
def no_launch(monkeypatch):
    """runtime.function raises: a refusal must come before any kernel is fetched."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was fetched where the launch should have been refused")
    monkeypatch.setattr(runtime, "function", refuse)


# ---------------------------------------------------------------- flash v3's tiles


def test_v3_shared_memory_formula_counts_attention_cu_s_arrays():
    """Counted off attention.cu's pointer layout, for tiles of F rows: the dk/dv kernel has K, V,
    Q, dO tiles of F x (HD + 1), P^T and dS^T of F x (F + 1), lse and D of F; the issue's figure,
    200,704 B in float64 at hd 64 with F = 64; the forward Q, K, V tiles and P; the dq kernel Q,
    dO, K, V tiles and dS."""
    assert gatt.v3_shared_bytes("flash_bwd_dkdv_v3", np.float64, 64) == 200_704
    assert gatt.v3_shared_bytes("flash_bwd_dkdv_v3", np.float32, 80) == (4 * 64 * 81 + 2 * 64 * 65 + 2 * 64) * 4
    assert gatt.v3_shared_bytes("flash_fwd_v3", np.float32, 60) == (3 * 64 * 65 + 64 * 65) * 4  # 60 -> 64
    assert gatt.v3_shared_bytes("flash_bwd_dq_v3", np.float64, 128) == (4 * 64 * 129 + 64 * 65) * 8
    assert gatt.v3_shared_bytes("flash_bwd_dkdv_v3", np.float64, 64, rows=32) == (4 * 32 * 65 + 2 * 32 * 33 + 64) * 8
    assert gatt.v3_shared_bytes("flash_fwd_v3", np.float64, 128, rows=16) == (3 * 16 * 129 + 16 * 17) * 8


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_v3_takes_the_largest_tile_that_fits_each_card_at_every_head_width(card, dtype):
    """Every kernel, every hd from 16 to 128: a tile is chosen (v3 runs on the H100, the A100 and
    the L4 alike), its shared memory fits the card, the next larger tile would not, and its
    instantiation is declared and in the module this card compiles."""
    limit = CARDS[card]
    compiled = set(gatt.compiled_names(limit))
    assert compiled <= set(gatt.DECLARED["attention.cu"])
    for name in gatt.V3_KERNELS:
        for hd in range(16, 129):
            rows = gatt.v3_tile(name, dtype, hd, limit)
            assert rows in gatt.TILES, (card, name, hd)
            assert gatt.v3_shared_bytes(name, dtype, hd, rows) <= limit
            if rows < 64:
                assert gatt.v3_shared_bytes(name, dtype, hd, 2 * rows) > limit
            assert gatt.v3_instance(name, dtype, hd, rows) in compiled


def test_the_tiles_the_issue_named_are_smaller_where_the_64_row_tile_does_not_fit():
    """The float64 backward at hd 64 (200,704 B with 64 rows) runs with 64 rows on the H100, 32 on
    the A100 and the L4; float32 at hd 128 backward with 32 rows on the L4."""
    dkdv = "flash_bwd_dkdv_v3"
    assert [gatt.v3_tile(dkdv, np.float64, 64, limit) for limit in (H100, A100, L4)] == [64, 32, 32]
    assert gatt.v3_tile(dkdv, np.float32, 128, L4) == 32 and gatt.v3_tile(dkdv, np.float32, 128, A100) == 64
    assert gatt.v3_instance(dkdv, np.float64, 60, 32) == "flash_bwd_dkdv_v3<double, 64, 32>"


def test_declared_tiles_are_what_a_card_with_48_kib_or_more_can_choose():
    """DECLARED, which the compile tests build, holds every tile some limit from 48 KiB to an
    H100's 227 KiB chooses, and nothing else (a 16-row float32 tile at hd 16 is never needed: 64
    rows fit everywhere; a 64-row float64 dk/dv tile at hd 128 fits nowhere)."""
    chosen = set()
    for limit in range(48 * 1024, H100 + 1, 256):
        chosen |= set(gatt.compiled_names(limit))
    assert chosen == set(gatt.DECLARED["attention.cu"])
    assert "flash_fwd_v3<float, 16, 16>" not in chosen and "flash_bwd_dkdv_v3<double, 128, 64>" not in chosen
    assert "flash_bwd_dkdv_v3<double, 128, 16>" in chosen


class _Kernel:
    """A stand-in RawKernel: records its dynamic shared-memory opt-in and the launches."""

    def __init__(self, name):
        self.name, self.max_dynamic_shared_size_bytes, self.launches = name, 0, []
        self.num_regs = 48

    def __call__(self, grid, block, args, shared_mem=0):
        self.launches.append(shared_mem)


@pytest.fixture
def fake_module(monkeypatch):
    """runtime.module's and runtime.function's real code over a stand-in cupy (one device, a
    RawModule that records what it was given): {kernel name: _Kernel}, and "_modules", the
    (code, options, name_expressions) of every module compiled."""
    made, modules = {}, []

    class RawModule:
        def __init__(self, code, options, name_expressions):
            modules.append((code, options, tuple(name_expressions)))

        def get_function(self, name):
            return made.setdefault(name, _Kernel(name))

    class Cupy:
        RawModule = None

        class cuda:
            class runtime:
                getDevice = staticmethod(lambda: 0)

    Cupy.RawModule = RawModule
    monkeypatch.setattr(runtime, "_cupy", Cupy)
    monkeypatch.setattr(runtime, "_FUNCTIONS", {})
    monkeypatch.setattr(runtime, "_MODULES", {})
    made["_modules"] = modules
    return made


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_v3_kernel_above_48_kib_is_opted_in_to_its_shared_memory(card, dtype, fake_module, monkeypatch):
    """Through runtime.function's real opt-in (RawKernel.max_dynamic_shared_size_bytes, CUDA's
    cudaFuncAttributeMaxDynamicSharedMemorySize): every launch of every v3 kernel at hd 64 and 128
    asks for no more shared memory than its kernel is opted in to (48 KiB without one), within the
    card's limit; attention.cu is compiled once, with this card's tiles."""
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: CARDS[card])
    monkeypatch.setattr(gatt, "rowdot", lambda g, o: np.zeros(g.shape[:3], g.dtype))
    for hd in (64, 128):
        x = np.zeros((1, 2, 70, hd), dtype)
        out, cache = gatt.v3_forward(x, x, x, 0.1)
        gatt.v3_backward(x, cache)
    kernels = [k for name, k in fake_module.items() if name.startswith("flash")]
    assert len(kernels) == 6 and all(k.launches for k in kernels)
    for k in kernels:
        assert max(k.launches) <= max(k.max_dynamic_shared_size_bytes, 48 * 1024) <= CARDS[card], k.name
    assert any(k.max_dynamic_shared_size_bytes > 48 * 1024 for k in kernels)  # hd 128 needs more everywhere
    (code, options, names), = fake_module["_modules"]  # one compile of attention.cu, with this card's tiles
    assert names == gatt.compiled_names(CARDS[card]) and code == runtime.source("attention.cu")
    assert options == runtime.OPTIONS + runtime.INCLUDE


def test_runtime_function_opts_in_only_above_48_kib_and_refuses_beyond_the_card(fake_module, monkeypatch):
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: L4)
    small = runtime.function("loss.cu", "sce_fwd_v2<float>", 40_000)
    assert small.max_dynamic_shared_size_bytes == 0
    big = runtime.function("loss.cu", "sce_fwd_v2<double>", 90_000)
    assert big.max_dynamic_shared_size_bytes == 90_000
    with pytest.raises(ValueError, match="needs 120000 bytes of shared memory per block, this GPU allows 101376"):
        runtime.function("loss.cu", "sce_fwd_v2<double>", 120_000)
    with pytest.raises(ValueError, match="not among the instantiations"):
        runtime.function("loss.cu", "sce_fwd_v2<half>")


def test_v3_refuses_clearly_where_not_even_16_rows_fit(monkeypatch, no_launch):
    """float64 at hd 128 needs 70,656 B in the dk/dv kernel with 16-row tiles: more than a 48 KiB
    card (Pascal) allows; the message names the alternatives."""
    monkeypatch.setattr(runtime, "max_shared_bytes", lambda: 48 * 1024)
    x = np.ones((1, 1, 3, 128))
    cache = (x, x, x, x, np.zeros((1, 1, 3)), 0.125)
    monkeypatch.setattr(gatt, "rowdot", lambda g, o: np.zeros(g.shape[:3]))
    with pytest.raises(ValueError, match=r"gpu_v3 \(flash_bwd_dkdv_v3\) needs 70656 bytes .* float64 at hd=128 even "
                                         r"with 16-row tiles, this GPU allows 49152.*gpu_v2"):
        gatt.v3_backward(x, cache)


# ---------------------------------------------------------------- LayerNorm backward's block size
# The numbers each card reports (runtime.card()): multiprocessors, shared memory per multiprocessor
# and per block (opt-in), threads, registers and blocks per multiprocessor
CARD_NUMBERS = {"H100": runtime.Card(132, 233472, H100, 2048, 65536, 32),
                "A100": runtime.Card(108, 167936, A100, 2048, 65536, 32),
                "L4": runtime.Card(58, 102400, L4, 1536, 65536, 24)}
REGS = {4: 48, 8: 56}  # layernorm_bwd_v2's registers a thread, float32 and float64 (ptxas, sm_90)


def _resident_warps(card, warps, shared, regs):
    """Warps a multiprocessor holds with blocks of `warps` warps, by CUDA's limits: shared memory
    (plus 1 KiB CUDA keeps per block), registers (allocated per warp, 256 at a time), threads and
    block slots."""
    warp_regs = -(-regs * 32 // 256) * 256
    blocks = min(card.shared_per_sm // (shared + 1024), card.regs_per_sm // (warps * warp_regs),
                 card.threads_per_sm // (32 * warps), card.blocks_per_sm)
    return blocks * warps


@pytest.mark.parametrize("card", CARD_NUMBERS)
@pytest.mark.parametrize("itemsize", [4, 8])
def test_layernorm_backward_launch_fits_every_limit_and_takes_the_most_warps(card, itemsize):
    card_ = CARD_NUMBERS[card]
    for D in (1, 48, 192, 384, 768, 1024, 1025, 1280, 4096):
        for M in (1, 7, 8320, 10**6):
            blocks, warps, shared = gnorm.layernorm_bwd_launch(M, D, itemsize, card_, REGS[itemsize])
            assert warps in (1, 2, 4, 8, 16, 32) and shared == warps * 2 * D * itemsize <= card_.shared_per_block
            held = _resident_warps(card_, warps, shared, REGS[itemsize])
            assert held >= warps, (D, M)  # at least one block fits a multiprocessor
            assert 1 <= blocks <= min(card_.sms * held // warps, -(-M // warps))  # one wave, no idle warps
            others = {w: _resident_warps(card_, w, w * 2 * D * itemsize, REGS[itemsize])
                      for w in (1, 2, 4, 8, 16, 32) if w * 2 * D * itemsize <= card_.shared_per_block}
            assert max(others.values()) < 1.25 * held, (D, others)  # no block size holds a quarter more
            assert all(others[w] < held for w in others if w > warps), (D, others)  # nor a larger one as many


@pytest.mark.parametrize("card", CARD_NUMBERS)
def test_layernorm_backward_holds_at_least_twice_the_warps_of_the_old_launch_at_vit_widths(card):
    """The old launch: blocks of 4 warps, at most 2 per multiprocessor, so at most 8 warps."""
    for D in (192, 384, 768):
        _, warps, shared = gnorm.layernorm_bwd_launch(8320, D, 4, CARD_NUMBERS[card], REGS[4])
        assert _resident_warps(CARD_NUMBERS[card], warps, shared, REGS[4]) >= 16, D
    _, warps, shared = gnorm.layernorm_bwd_launch(8320, 192, 4, CARD_NUMBERS[card], REGS[4])
    assert _resident_warps(CARD_NUMBERS[card], warps, shared, REGS[4]) == 40  # the register limit: 42


def test_layernorm_backward_refuses_a_width_whose_sums_do_not_fit_naming_gpu_v1():
    with pytest.raises(ValueError, match=r"D=8192 needs 131072 bytes, this GPU allows 101376 per block.*gpu_v1"):
        gnorm.layernorm_bwd_launch(10, 8192, 8, CARD_NUMBERS["L4"], REGS[8])


def _fake_layernorm_bwd(launches):
    """layernorm_bwd_v2 in NumPy, walking rows as the CUDA kernel does: block bx's warp w takes rows
    bx * W + w, then steps by gridDim.x * W; each block writes its dw, db sums to partial[bx]."""
    def kernel(grid, block, args, shared_mem=0):
        dy, x, w, mean, rstd, dx, partial, M, D = args
        blocks, W, M = grid[0], block[0] // 32, int(M)
        launches.append((blocks, W, shared_mem))
        assert shared_mem == W * 2 * int(D) * x.itemsize
        rows_x, rows_dy, rows_dx = x.reshape(M, -1), dy.reshape(M, -1), dx.reshape(M, -1)
        visits = np.zeros(M, int)
        partial[:] = 0
        for bx in range(blocks):
            for warp in range(W):
                for r in range(bx * W + warp, M, blocks * W):
                    xhat = (rows_x[r] - mean.reshape(-1)[r]) * rstd.reshape(-1)[r]
                    gh = rows_dy[r] * w
                    rows_dx[r] = rstd.reshape(-1)[r] * (gh - gh.mean() - xhat * (gh * xhat).mean())
                    partial[bx, 0] += rows_dy[r] * xhat
                    partial[bx, 1] += rows_dy[r]
                    visits[r] += 1
        assert (visits == 1).all(), "every row once"
    kernel.num_regs = 48
    return kernel


@pytest.mark.parametrize("shape, dtype", [((3, 5, 48), np.float64), ((2, 65, 192), np.float32),
                                          ((1, 1, 7), np.float64)])
def test_layernorm_backward_with_the_chosen_launch_equals_the_reference(shape, dtype, monkeypatch):
    """On a 3-multiprocessor stand-in card, so that the grid-stride walk wraps at (2, 65, 192)."""
    launches = []
    monkeypatch.setattr(runtime, "function", lambda file, name, shared=0, names=None: _fake_layernorm_bwd(launches))
    monkeypatch.setattr(runtime, "card", lambda: runtime.Card(3, 233472, H100, 2048, 65536, 32))
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(s).astype(dtype) for s in (shape, shape[-1:], shape[-1:], shape))
    mean = x.mean(axis=-1)  # what the forward kernel saves: mean and rstd per row
    rstd = 1.0 / np.sqrt(((x - mean[..., None]) ** 2).mean(axis=-1) + 1e-6)
    got = gnorm.layernorm_v2_backward(g, (x, w, mean.astype(dtype), rstd.astype(dtype)))
    want = ref_norm.layernorm_backward(g.astype(np.float64), ref_norm.layernorm_forward(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))[1])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    (blocks, warps, shared), = launches
    assert (blocks, warps, shared) == gnorm.layernorm_bwd_launch(x.size // shape[-1], shape[-1], x.itemsize,
                                                                 runtime.card(), 48)
