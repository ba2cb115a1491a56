"""Attention forward and backward on the CPU in Numba: numbered versions, each with its story.

Every version computes what kernels/reference/attention.py computes (Vaswani et al. 2017, Eq. 1;
ViT paper, Appendix A, Eq. 5-7), per batch b and head h with q, k, v of shape (N, hd):
    S = scale * q @ k.T;  P = softmax(S);  O = P @ v
    dv = P.T @ dO;  dP = dO @ v.T;  dS = P * (dP - D), D_i = rowsum(dP_i * P_i) = dO_i . O_i
    dq = scale * dS @ k;  dk = scale * dS.T @ q

Versions (all checked against the float64 reference by tests/test_kernels_cpu_attention.py):

cpu_v1   The reference's algorithm in Numba, prange over the B*Hh heads: the (N, N) scores by
         plain dot loops, a row softmax with libm exp, P @ v as rows of axpys; backward the
         same with an (N, N) dS. Memory O(N^2) like the reference. Its plain loops reach about
         15 GFLOP/s a core where OpenBLAS reaches about 40: it beats the reference only by
         using both cores.
cpu_v2   Fused per query row, prange over (b, h, i): the scores of row i in a scratch row
         per thread (get_thread_id), softmax, weighted sum of v. Decision: keep the row
         log-sum-exp (B, Hh, N), not P, and recompute each row of P in backward as
         exp(s - lse); so v2 already has flash's memory and v3 differs only by its tiles.
         Backward runs per head (every row adds into all of dk and dv) and streams all of k
         and v once per row: the slowest backward.
cpu_v3   Flash-style (Dao et al. 2022; backward as FlashAttention-2, Dao 2023): tiles of about
         64 query rows x 128 keys, an online softmax (running max m and sum l; what was summed
         under the old max is rescaled by exp(m_old - m_new)), never an N x N array; forward
         keeps out and lse, backward recomputes P tile by tile from q, k and lse, with
         D_i = dO_i . O_i, key tiles outer (dk_j, dv_j stay in cache), one task per head. Two
         tuned blocks beyond the tiling: _mm_nt, a 4 x 2 register-blocked matmul (about
         45 GFLOP/s, 3x the plain loop), and fastmath.exp_shifted, a vectorised float32 exp
         (1 ns against libm's 3). Its backward does 5 matmuls (S again) where the others do 4, and
         parallelises over the B*Hh heads only.
cpu_blas The reference's matmuls in BLAS (np.matmul), with the softmax (and its scale, using
         fastmath.exp_shifted) and backward's dS = P * (dP - rowsum(dP * P)) fused in Numba loops
         in place. Memory O(N^2). Fastest at N=1024, where BLAS's large matmuls shine.
cpu_v4   cpu_blas's algorithm as one Numba task per head: inside the task, np.dot calls BLAS for
         the head's products (Numba routes it to SciPy's OpenBLAS, held at one thread while the
         kernel runs: threads.single_threaded_blas("scipy")) and the softmax / dsoftmax loops run
         between them, so the head's P (16 KiB at N=64) goes from its product to the softmax to
         P @ v in cache, instead of three passes over all heads' (B, Hh, N, N) in memory. P is
         kept for backward (4 products, no exp recomputed). Decision: it keeps P while P fits
         V4_MAX_P_BYTES (256 MiB); past that it runs v3's tiles, whose memory is linear in N.
         The CPU default from 2026-12-07 until v5 (table below).
cpu_v5   v4 without the copies around it. The model's q, k, v are views of its (B, N, 3, Hh, hd)
         qkv projection; autograd used to copy each to a dense (B, Hh, N, hd) array (three copies
         a forward, 2.2 ms a layer at vit_mini's batch 128), to transpose the output back to
         (B, N, D) (another) and, in backward, to gather dq, dk, dv into the projection's layout
         (1.6 ms a layer). v5 is registered with strided=True, so autograd passes the views; it
         finds the projection array they are views of (_one_qkv_array; a copy only when they
         are not), each task copies its head's rows into per-thread scratch with unit-stride
         loops that LLVM vectorises, runs v4's products and loops there, and writes its output
         rows into a (B, N, Hh, hd) array and its dq, dk, dv into one (B, N, 3, Hh, hd) array:
         the layouts in which the model's transpose, reshape and unbind (Unbind.backward in
         minivit/autograd.py) pass through with no copy. The CPU default since 2026-12-07.

Measured (ms, float32, fwd / bwd, speed-up over the reference in brackets) on the 2-core AMD
EPYC (Zen 3, AVX2, no AVX-512), shared with other jobs (load average about 2): medians of 5
runs of `python -m kernels.bench attention --repeat 7`, Numba and OpenBLAS with their default
2 threads each, the environment as it is:

    version    CIFAR B=128 Hh=3 N=65 hd=64          long B=4 Hh=3 N=1024 hd=64
    reference  21.6 / 33.7                           126 / 119
    cpu_v1     17.4 (1.24x) / 24.5 (1.37x)           132 (0.96x) / 200 (0.60x)
    cpu_v2     21.1 (1.03x) / 36.0 (0.94x)           135 (0.93x) / 262 (0.46x)
    cpu_v3     10.2 (2.13x) / 22.8 (1.48x)            86 (1.47x) / 142 (0.84x)
    cpu_blas   19.2 (1.12x) / 31.2 (1.08x)            50 (2.50x) /  82 (1.46x)

The same with one thread each (NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1, load 2 to 4):

    reference  23.2 / 36.6                           223 / 189
    cpu_v1     31.7 (0.73x) / 47.5 (0.77x)           244 (0.91x) / 377 (0.50x)
    cpu_v2     37.3 (0.62x) / 62.3 (0.59x)           246 (0.91x) / 517 (0.37x)
    cpu_v3     18.7 (1.24x) / 43.7 (0.84x)           106 (2.11x) / 275 (0.69x)
    cpu_blas   21.2 (1.09x) / 32.5 (1.13x)            82 (2.72x) / 149 (1.27x)

Reading. At ViT's CIFAR size each head is a 65 x 64 problem: np.matmul runs the 384 small
matmuls of a batch one after another on one core, while the Numba versions spread the heads
over both cores, so v3 has the best fwd+bwd (1.7x the reference) and is the CPU default (the
table in kernels/registry.py). On one core cpu_blas edges ahead (v3's
backward does 5 matmuls to 4). At N=1024 BLAS's large matmuls win: cpu_blas is fastest, v3 is
second (1.5x v1 forward, 1.4x backward) and the only one whose memory stays linear in N.
Mind OpenBLAS's idle threads: they spin for about 0.1 s after each call and slow a Numba
kernel started in that window, up to 1.8x (v3's long forward: 60 ms with
OPENBLAS_THREAD_TIMEOUT=4, the shortest spin, against the 86 above). The timings above were
taken with the spin. Since then cpu_blas's products run on minivit's own threads with
single-threaded BLAS (threads.py), so OpenBLAS's pool is never woken and never spins.

One exp. v3 and cpu_blas used their own exp (_exp_shifted: a Taylor series, 2^k written through
a scratch int32 view, then a second pass); they now call fastmath.exp_shifted, the Cephes
polynomial the other kernels use. Before -> after in one process, taking turns (fastmath.py has
the method and the whole table), CIFAR: v3 16.3 -> 15.1 ms forward, 35.0 -> 33.2 backward;
cpu_blas 9.5 -> 9.3 and 11.8 -> 11.8; N=1024 unchanged within its noise.

Measured again on the box that replaced the AMD one: 2-core Intel Xeon (family 6 model 207,
Emerald Rapids, AVX-512; a KVM guest), OpenBLAS using AVX-512, load average about 2 from other
jobs; one run of `python -m kernels.bench attention --repeat 7` each (ms, fwd / bwd):

    version    2 threads: CIFAR / long                 1 thread: CIFAR / long
    reference  11.3 / 16.3        69 /  83             11.3 / 16.6        80 / 111
    cpu_v1     13.4 / 15.8       102 / 148             23.1 / 33.8       195 / 298
    cpu_v2     16.1 / 24.4       101 / 196             27.1 / 52.3       198 / 390
    cpu_v3     16.7 / 33.3        46 /  94             16.3 / 35.6        92 / 188
    cpu_blas    8.0 / 13.0        36 /  46              9.4 / 13.4        60 /  75

Here OpenBLAS's AVX-512 products run the reference twice as fast as on the AMD box, v3's
AVX2-sized register blocks do not keep up, and the second core was mostly taken by other jobs
(v3 ran no faster on 2 threads than on 1): cpu_blas is fastest at both sizes and v3 is slower
than the reference. The default stays v3 (chosen on the AMD box) until it is measured on an
idle machine of this kind.

cpu_v4 against v3 and cpu_blas, 2026-12-07, 2-core AMD EPYC (family 25 model 17, Zen 4, AVX-512
at half width; NumPy's OpenBLAS 0.3.31 SkylakeX kernels, SciPy 1.17's OpenBLAS), idle, PyTorch
imported first: three runs of `python -m kernels.bench attention --impls
reference,cpu_v3,cpu_blas,cpu_v4 --repeat 7`, first run (ms, fwd / bwd; the other two within 7%):

    version    mini B=128 Hh=4 N=64 hd=32   CIFAR B=128 Hh=3 N=65 hd=64   long B=4 Hh=3 N=1024 hd=64
    reference   9.7 / 9.8                     11.1 / 14.3                   63.2 / 74.8
    cpu_v3      4.9 / 10.1                     6.2 / 13.4                   62.3 / 100.4
    cpu_blas    4.7 / 5.4                      5.9 / 7.7                    33.6 / 48.2
    cpu_v4      3.5 / 4.2  (77 / 127 GFLOP/s)  4.5 / 6.3  (93 / 131)        26.8 / 42.2 (120 / 153)

At vit_mini's 16 px phase (N=16, B=128, Hh=4, hd=32; medians of 15): v3 0.91 / 2.09 ms, cpu_blas
0.44 / 0.49, v4 0.32 / 0.29. v4 halves v3's fwd+bwd at N=64 (15.0 -> 7.7 ms a layer) and is
fastest at every size measured; v3's backward, with its fifth product and parallelism over heads
only, was the slowest part. In benchmarks/timm_step.py (--rounds 7, two runs of each, taking
turns) the training ratio to timm went from 0.86, 0.86 (vit_mini, batch 128), 0.96, 0.89 (256),
0.99, 0.99 (vit_cifar, 128), 0.94, 0.94 (256) with v3 to 1.02, 0.98 / 1.04, 1.00 / 1.02, 1.02 /
0.97, 1.00 with v4 (benchmarks/results/README.md).

Strided q, k, v, first try (2026-12-07, not kept): a version of every kernel here that read the
views in place, each task copying its head or tile into scratch, made vit_mini's training step
(batch 128) about 5% slower against timm in benchmarks/timm_step.py (0.85, 0.85 against 0.94, 0.88
for the dense kernels, 2-core AMD EPYC Zen 4, idle): Numba compiles the loops for any-layout
arrays then (no known unit stride, so no vector loads), and the copies inside the tasks cost more
than the three bulk copies. A first v5 that copied from the (B, Hh, N, hd) views did the same
(inference 8% slower than v4). What made v5 pay: its kernels take the C-contiguous projection
array itself, so the per-task copies have a unit inner stride, and its outputs are laid out so that
autograd's views need no copy either (above).

cpu_v5 against v4, 2026-12-07, the same 2-core Zen 4 box (a slower day than v4's table: NumPy's
product peak 196-211 GFLOP/s, PyTorch's 145-187), each a fresh process, taking turns:
- `python benchmarks/profile_step.py --markdown --steps 5` (vit_mini, batch 128; v4 by
  MINIVIT_KERNELS=attention=cpu_v4; benchmarks/results/profile_step_*_attn_v4_round3/4, _v5_round1/2):
  whole step v4 478.9 / 477.7 ms, v5 445.5 / 390.4 ms; "between kernels" 81.9 / 80.5 -> 25.0 /
  20.6 ms; attention itself fwd 29-31 -> 29-34 ms, bwd 37-38 -> 39-53 ms (the copies into scratch
  are now inside it).
- `python benchmarks/timm_step.py --rounds 7` (v4 from a worktree of the commit before; files
  timm_step_*_attn_v4_round3/4, _v5_round1/2), training ratio to timm (vit_mini 128, 256, vit_cifar
  128, 256): v4 0.98, 0.97, 1.12, 0.98 and 1.04, 0.99, 1.06, 0.99; v5 1.06, 1.07, 1.07, 1.05 and
  1.07, 1.11, 1.10, 1.04. Inference: v4 0.84, 0.93, 0.94, 1.01 and 0.89, 0.89, 0.96, 0.98; v5 0.90,
  0.93, 1.04, 1.00 and 0.94, 1.02, 1.03, 1.02. vit_cifar's training step: 65-72% of NumPy's peak
  with v4, 71-72% with v5.
Tried on v5 and not kept: an inference path (autograd calling a forward that keeps nothing for
backward where no graph is recorded), which reused one (N, N) P per thread instead of writing
every head's P into a (B, Hh, N, N) array. In one process, taking turns (no_grad forward, batch
128, medians of 9), it was no faster: vit_mini 144.9 ms keeping P against 150.8 ms reusing it,
171.7 against 185.2 in a second run; vit_cifar 339.5 / 341.2 and 342.5 / 344.8. A head's P is
in cache from its product to P @ v either way, and kernels/cpu/memory.py hands the freed arrays
back without page faults.
"""
import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ..registry import register
from ..views import stacked_view
from . import threads
from .fastmath import exp_shifted

# B=batch, Hh=heads, N=tokens, hd=head dim. The kernels see the heads flattened: BH = B*Hh,
# q, k, v, out (BH, N, hd). Each parallel driver is a prange over independent tasks (heads,
# rows or tiles) that calls a plain serial function for one task. Float32 inputs are computed
# in float32, float64 in float64; softmax denominators are summed in float64.

# Fast-math: reassociation lets LLVM vectorise dot products and sums. No "nnan"/"ninf", so
# that max, exp and comparisons still see -inf and nan as they are.
_FM = {"reassoc", "contract", "nsz", "arcp"}
BR = 64   # v3: query rows per tile (about; see _tile)
BC = 128  # v3: keys per tile (about)


# ---------------------------------------------------------------------------------------------
# Plain loops (v1, v2): a @ b.T as dot products, p @ x and p.T @ x as rows of axpys

@njit(cache=True, fastmath=_FM)
def _scores(a, b, i0, ni, j0, nj, alpha, s):
    """s[r, c] = alpha * a[i0 + r] . b[j0 + c] for r < ni, c < nj."""
    zero = s.dtype.type(0)
    for r in range(ni):
        for c in range(nj):
            acc = zero
            for d in range(a.shape[1]):
                acc += a[i0 + r, d] * b[j0 + c, d]
            s[r, c] = alpha * acc


@njit(cache=True, fastmath=_FM)
def _acc_ab(p, ni, nj, x, j0, out, i0):
    """out[i0 + r] += sum_c p[r, c] * x[j0 + c]   (out += p @ x)."""
    for r in range(ni):
        for c in range(nj):
            prc = p[r, c]
            for d in range(x.shape[1]):
                out[i0 + r, d] += prc * x[j0 + c, d]


@njit(cache=True, fastmath=_FM)
def _acc_atb(p, ni, nj, x, i0, out, j0):
    """out[j0 + c] += sum_r p[r, c] * x[i0 + r]   (out += p.T @ x)."""
    for r in range(ni):
        for c in range(nj):
            prc = p[r, c]
            for d in range(x.shape[1]):
                out[j0 + c, d] += prc * x[i0 + r, d]


@njit(cache=True, fastmath=_FM)
def _softmax_row(s, n):
    """s[:n] = softmax(s[:n]) in place with libm exp; returns log(sum exp(s - max)) + max."""
    m = s[0]
    for j in range(1, n):
        m = max(m, s[j])
    total = 0.0
    for j in range(n):
        s[j] = np.exp(s[j] - m)
        total += s[j]
    inv = s.dtype.type(1.0 / total)
    for j in range(n):
        s[j] *= inv
    return m + np.log(total)


# ---------------------------------------------------------------------------------------------
# Tuned building blocks (v3, cpu_blas): a register-blocked matmul; the vectorised exp is fastmath.py's

@njit(cache=True, fastmath=_FM)
def _mm_nt(a, b, out, m, n, nk, alpha):
    """out[:m, :n] += alpha * a[:m, :nk] @ b[:n, :nk].T, both operands read along rows (nk: the
    reduction length, hd or a tile's size).

    A 4 x 2 block of out is held in eight scalars while d runs: each loaded a[r, d] and
    b[c, d] feeds two or four multiply-adds (6 loads per 8, not 2 per 1), and LLVM turns each
    scalar into a vector accumulator: about 3x the plain dot loop of _scores. No column offset
    into b: a variable index such as b[c, k0 + d] costs a negative-index check per load that
    stops the vectorisation (2.5x slower), so callers pass tiles that start at column 0."""
    z = out.dtype.type(0)
    m4, n2 = m - m % 4, n - n % 2
    for r in range(0, m4, 4):
        for c in range(0, n2, 2):
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = z
            for d in range(nk):
                b0, b1 = b[c, d], b[c + 1, d]
                a0, a1, a2, a3 = a[r, d], a[r + 1, d], a[r + 2, d], a[r + 3, d]
                s00 += a0 * b0
                s01 += a0 * b1
                s10 += a1 * b0
                s11 += a1 * b1
                s20 += a2 * b0
                s21 += a2 * b1
                s30 += a3 * b0
                s31 += a3 * b1
            out[r, c] += alpha * s00
            out[r, c + 1] += alpha * s01
            out[r + 1, c] += alpha * s10
            out[r + 1, c + 1] += alpha * s11
            out[r + 2, c] += alpha * s20
            out[r + 2, c + 1] += alpha * s21
            out[r + 3, c] += alpha * s30
            out[r + 3, c + 1] += alpha * s31
    for r in range(m):  # the rim: rows from m4 on, columns from n2 on
        for c in range(n2 if r < m4 else 0, n):
            acc = z
            for d in range(nk):
                acc += a[r, d] * b[c, d]
            out[r, c] += alpha * acc


@njit(cache=True)
def _transpose(x, n, out):
    """out[:, :n] = x[:n].T."""
    for c in range(n):
        for d in range(x.shape[1]):
            out[d, c] = x[c, d]


@njit(cache=True)
def _tile(N, size):
    """The tile that cuts N into round(N / size) near-equal tiles, rounded up to a multiple of 4
    (the matmul's block): N = 65 with size 64 is one tile of 68, not 64 + 1."""
    tiles = max(1, (N + size // 2) // size)
    return ((N + tiles - 1) // tiles + 3) // 4 * 4


# ---------------------------------------------------------------------------------------------
# v1: the reference's algorithm in Numba, N x N scores per head, parallel over heads

@njit(cache=True, fastmath=_FM)
def _v1_forward_head(q, k, v, scale, p, out):
    N = q.shape[0]
    _scores(q, k, 0, N, 0, N, scale, p)  # p (N, N): logits, made probabilities in place
    for i in range(N):
        _softmax_row(p[i], N)
    out[:] = 0
    _acc_ab(p, N, N, v, 0, out, 0)


@njit(cache=True, fastmath=_FM)
def _v1_backward_head(dout, q, k, v, p, scale, ds, dq, dk, dv):
    N = q.shape[0]
    _scores(dout, v, 0, N, 0, N, q.dtype.type(1), ds)  # ds (N, N): dP, made dS in place
    for i in range(N):
        rd = 0.0
        for j in range(N):
            rd += p[i, j] * ds[i, j]
        for j in range(N):
            ds[i, j] = scale * p[i, j] * (ds[i, j] - rd)
    dq[:] = 0
    dk[:] = 0
    dv[:] = 0
    _acc_atb(p, N, N, dout, 0, dv, 0)
    _acc_ab(ds, N, N, k, 0, dq, 0)
    _acc_atb(ds, N, N, q, 0, dk, 0)


@njit(cache=True, parallel=True)
def _v1_forward(q, k, v, scale, p, out):
    for bh in prange(q.shape[0]):
        _v1_forward_head(q[bh], k[bh], v[bh], scale, p[bh], out[bh])


@njit(cache=True, parallel=True)
def _v1_backward(dout, q, k, v, p, scale, ds, dq, dk, dv):
    for bh in prange(q.shape[0]):
        _v1_backward_head(dout[bh], q[bh], k[bh], v[bh], p[bh], scale, ds[bh], dq[bh], dk[bh], dv[bh])


# ---------------------------------------------------------------------------------------------
# v2: fused per query row; keeps the row log-sum-exp, not P

@njit(cache=True, fastmath=_FM)
def _v2_forward_row(q, k, v, scale, i, s, out, lse):
    """Row i of one head: scores, softmax and weighted sum of v, in the scratch row s (1, N)."""
    N = q.shape[0]
    _scores(q, k, i, 1, 0, N, scale, s)
    lse[i] = _softmax_row(s[0], N)
    out[i] = 0
    _acc_ab(s, 1, N, v, 0, out, i)


@njit(cache=True, fastmath=_FM)
def _v2_backward_head(dout, q, k, v, lse, scale, dq, dk, dv):
    N = q.shape[0]
    p, ds = np.empty((1, N), q.dtype), np.empty((1, N), q.dtype)
    dq[:] = 0
    dk[:] = 0
    dv[:] = 0
    for i in range(N):
        _scores(q, k, i, 1, 0, N, scale, p)
        _scores(dout, v, i, 1, 0, N, q.dtype.type(1), ds)
        rd = 0.0
        for j in range(N):
            p[0, j] = np.exp(p[0, j] - lse[i])
            rd += p[0, j] * ds[0, j]
        for j in range(N):
            ds[0, j] = scale * p[0, j] * (ds[0, j] - rd)
        _acc_atb(p, 1, N, dout, i, dv, 0)
        _acc_ab(ds, 1, N, k, 0, dq, i)
        _acc_atb(ds, 1, N, q, i, dk, 0)


@njit(cache=True, parallel=True)
def _v2_forward(q, k, v, scale, out, lse, nthreads):
    BH, N, _ = q.shape
    rows = np.empty((nthreads, 1, N), q.dtype)  # one scratch row per thread
    for t in prange(BH * N):
        bh = t // N
        _v2_forward_row(q[bh], k[bh], v[bh], scale, t % N, rows[get_thread_id()], out[bh], lse[bh])


@njit(cache=True, parallel=True)
def _v2_backward(dout, q, k, v, lse, scale, dq, dk, dv):
    for bh in prange(q.shape[0]):  # not over rows: every row adds into all of dk and dv
        _v2_backward_head(dout[bh], q[bh], k[bh], v[bh], lse[bh], scale, dq[bh], dk[bh], dv[bh])


# ---------------------------------------------------------------------------------------------
# v3: flash-style tiles with an online softmax; backward recomputes P tile by tile (FA2)

@njit(cache=True, fastmath=_FM)
def _v3_forward_tile(q, k, v, scale, i0, ni, br, bc, out, lse):
    """Query rows i0 : i0 + ni of one head, against key tiles of bc."""
    N, hd = q.shape
    s = np.empty((br, bc), q.dtype)    # logits, then probabilities, of one tile
    vt = np.empty((hd, bc), q.dtype)   # v_j.T, so that P @ v_j reads rows of both
    acc = np.zeros((br, hd), q.dtype)  # output rows, unnormalised
    m = np.full(br, -np.inf, q.dtype)  # running row max
    l = np.zeros(br, np.float64)       # running row sum of exp(s - m)
    for j0 in range(0, N, bc):
        nj = min(bc, N - j0)
        s[:] = 0
        _mm_nt(q[i0:], k[j0:], s, ni, nj, hd, scale)
        for r in range(ni):
            mt = m[r]
            for c in range(nj):
                mt = max(mt, s[r, c])
            exp_shifted(s[r], mt, nj)
            rs = 0.0
            for c in range(nj):
                rs += s[r, c]
            alpha = np.exp(m[r] - mt)  # rescales what was summed under the old max
            m[r] = mt
            l[r] = l[r] * alpha + rs
            for d in range(hd):
                acc[r, d] *= alpha
        _transpose(v[j0:], nj, vt)
        _mm_nt(s, vt, acc, ni, hd, nj, q.dtype.type(1))
    for r in range(ni):
        inv = q.dtype.type(1.0 / l[r])
        for d in range(hd):
            out[i0 + r, d] = acc[r, d] * inv
        lse[i0 + r] = m[r] + np.log(l[r])


@njit(cache=True, fastmath=_FM)
def _v3_backward_head(dout, q, k, v, out, lse, scale, br, bc, dq, dk, dv):
    N, hd = q.shape
    one = q.dtype.type(1)
    p, ds = np.empty((br, bc), q.dtype), np.empty((br, bc), q.dtype)  # P, dP then dS
    pt, dst = np.empty((bc, br), q.dtype), np.empty((bc, br), q.dtype)  # their transposes
    kt = np.empty((hd, bc), q.dtype)  # k_j.T, q_i.T, dO_i.T: every product below
    qt = np.empty((hd, br), q.dtype)  # then reads rows of both operands
    dot = np.empty((hd, br), q.dtype)
    rd = np.empty(N, q.dtype)  # D_i = dO_i . O_i, which equals rowsum(dP_i * P_i)
    for i in range(N):
        acc = 0.0
        for d in range(hd):
            acc += dout[i, d] * out[i, d]
        rd[i] = acc
    dq[:] = 0
    dk[:] = 0
    dv[:] = 0
    for j0 in range(0, N, bc):
        nj = min(bc, N - j0)
        _transpose(k[j0:], nj, kt)
        for i0 in range(0, N, br):
            ni = min(br, N - i0)
            p[:] = 0
            ds[:] = 0
            _mm_nt(q[i0:], k[j0:], p, ni, nj, hd, scale)  # S, as in forward
            _mm_nt(dout[i0:], v[j0:], ds, ni, nj, hd, one)  # dP
            for r in range(ni):
                exp_shifted(p[r], lse[i0 + r], nj)  # P = exp(S - lse)
                for c in range(nj):
                    ds[r, c] = scale * p[r, c] * (ds[r, c] - rd[i0 + r])
                    pt[c, r] = p[r, c]
                    dst[c, r] = ds[r, c]
            _transpose(q[i0:], ni, qt)
            _transpose(dout[i0:], ni, dot)
            _mm_nt(pt, dot, dv[j0:], nj, hd, ni, one)   # dv_j += P.T @ dO_i
            _mm_nt(dst, qt, dk[j0:], nj, hd, ni, one)  # dk_j += dS.T @ q_i
            _mm_nt(ds, kt, dq[i0:], ni, hd, nj, one)   # dq_i += dS @ k_j


@njit(cache=True, parallel=True)
def _v3_forward(q, k, v, scale, out, lse):
    BH, N, _ = q.shape
    br, bc = _tile(N, BR), _tile(N, BC)
    nqb = (N + br - 1) // br
    for t in prange(BH * nqb):  # one task per (head, tile of query rows)
        bh, i0 = t // nqb, (t % nqb) * br
        _v3_forward_tile(q[bh], k[bh], v[bh], scale, i0, min(br, N - i0), br, bc, out[bh], lse[bh])


@njit(cache=True, parallel=True)
def _v3_backward(dout, q, k, v, out, lse, scale, dq, dk, dv):
    N = q.shape[1]
    br, bc = _tile(N, BR), _tile(N, BC)
    for bh in prange(q.shape[0]):  # dq rows collect from every key tile: one task per head
        _v3_backward_head(dout[bh], q[bh], k[bh], v[bh], out[bh], lse[bh], scale, br, bc,
                          dq[bh], dk[bh], dv[bh])


# ---------------------------------------------------------------------------------------------
# cpu_blas: the reference's matmuls in BLAS (np.matmul), the softmax parts fused in Numba

@njit(cache=True, fastmath=_FM)
def _softmax_head(s, scale):
    """s (N, N) = q @ k.T of one head -> P = softmax(scale * s), in place."""
    N = s.shape[1]
    for i in range(N):
        row = s[i]
        m = scale * row[0]
        for j in range(N):
            row[j] *= scale
            m = max(m, row[j])
        exp_shifted(row, m, N)
        total = 0.0
        for j in range(N):
            total += row[j]
        inv = s.dtype.type(1.0 / total)
        for j in range(N):
            row[j] *= inv


@njit(cache=True, fastmath=_FM)
def _dsoftmax_head(p, dp, scale):
    """dp (N, N) of one head -> dS = scale * P * (dP - rowsum(dP * P)), in place."""
    for i in range(p.shape[0]):
        rd = 0.0
        for j in range(p.shape[1]):
            rd += p[i, j] * dp[i, j]
        rdt = p.dtype.type(rd)
        for j in range(p.shape[1]):
            dp[i, j] = scale * p[i, j] * (dp[i, j] - rdt)


@njit(cache=True, parallel=True)
def _softmax_heads(s, scale):
    for bh in prange(s.shape[0]):
        _softmax_head(s[bh], scale)


@njit(cache=True, parallel=True)
def _dsoftmax_heads(p, dp, scale):
    for bh in prange(p.shape[0]):
        _dsoftmax_head(p[bh], dp[bh], scale)


# ---------------------------------------------------------------------------------------------
# v4: one task per head, its products in BLAS from inside the Numba task (np.dot: SciPy's BLAS)

@njit(cache=True, parallel=True)
def _v4_forward(q, k, v, scale, p, out):
    for bh in prange(q.shape[0]):  # the head's P stays in cache from its product to P @ v
        np.dot(q[bh], k[bh].T, p[bh])
        _softmax_head(p[bh], scale)
        np.dot(p[bh], v[bh], out[bh])


@njit(cache=True, parallel=True)
def _v4_backward(dout, q, k, v, p, scale, scratch, dq, dk, dv):
    for bh in prange(q.shape[0]):
        ds = scratch[get_thread_id()]  # dP, then dS in place: one (N, N) array per thread
        np.dot(p[bh].T, dout[bh], dv[bh])
        np.dot(dout[bh], v[bh].T, ds)
        _dsoftmax_head(p[bh], ds, scale)
        np.dot(ds, k[bh], dq[bh])
        np.dot(ds.T, q[bh], dk[bh])


# ---------------------------------------------------------------------------------------------
# v5: v4 reading q, k, v (and dout) where they lie and writing out, dq, dk, dv where the model
# wants them. The model's q, k, v are views of one (B, N, 3, Hh, hd) projection; v5 gets that
# array itself, C-contiguous, so that each task's copies of its head's rows (into per-thread
# scratch, in cache) are loops with a unit inner stride that LLVM vectorises. out is written as
# (B, N, Hh, hd), the gradients as one (B, N, 3, Hh, hd) array, all C-contiguous.

@njit(cache=True)
def _rows_from(x, b, s, h, dst):
    """dst (N, hd) = x[b, :, s, h, :] for x (B, N, S, Hh, hd): head h of q (s=0), k (1) or v (2)
    of image b in the projection, or (S=1) of the output's gradient."""
    for i in range(dst.shape[0]):
        for d in range(dst.shape[1]):
            dst[i, d] = x[b, i, s, h, d]


@njit(cache=True)
def _rows_to(src, x, b, s, h):
    """x[b, :, s, h, :] = src (N, hd): the reverse of _rows_from."""
    for i in range(src.shape[0]):
        for d in range(src.shape[1]):
            x[b, i, s, h, d] = src[i, d]


@njit(cache=True, parallel=True)
def _v5_forward(qkv, scale, p, out, scratch):
    """qkv (B, N, 3, Hh, hd), p (B, Hh, N, N), out (B, N, 1, Hh, hd), scratch (threads, 4, N, hd)."""
    Hh = qkv.shape[3]
    for bh in prange(qkv.shape[0] * Hh):
        b, h = bh // Hh, bh % Hh
        t = scratch[get_thread_id()]  # this head's q, k, v and output, dense
        for s in range(3):
            _rows_from(qkv, b, s, h, t[s])
        np.dot(t[0], t[1].T, p[b, h])
        _softmax_head(p[b, h], scale)
        np.dot(p[b, h], t[2], t[3])
        _rows_to(t[3], out, b, 0, h)


@njit(cache=True, parallel=True)
def _v5_backward(dout, qkv, p, scale, scratch, ds_scratch, dqkv):
    """dout (B, N, 1, Hh, hd), qkv and dqkv (B, N, 3, Hh, hd), scratch (threads, 5, N, hd)."""
    Hh = qkv.shape[3]
    for bh in prange(qkv.shape[0] * Hh):
        b, h = bh // Hh, bh % Hh
        tid = get_thread_id()
        t, ds = scratch[tid], ds_scratch[tid]  # t: q, k, v, dout, a result; ds (N, N): dP, then dS
        for s in range(3):
            _rows_from(qkv, b, s, h, t[s])
        _rows_from(dout, b, 0, h, t[3])
        np.dot(p[b, h].T, t[3], t[4])
        _rows_to(t[4], dqkv, b, 2, h)  # dv
        np.dot(t[3], t[2].T, ds)
        _dsoftmax_head(p[b, h], ds, scale)
        np.dot(ds, t[1], t[4])
        _rows_to(t[4], dqkv, b, 0, h)  # dq
        np.dot(ds.T, t[0], t[4])
        _rows_to(t[4], dqkv, b, 1, h)  # dk


# ---------------------------------------------------------------------------------------------
# Entry points with the registry's calling convention: out, cache = forward(q, k, v, scale);
# dq, dk, dv = backward(dout, cache). Caches hold references to q, k, v (and out for v3), as
# the reference's does: callers must not change those arrays in place before backward.

def _dtype(q, k, v):
    """The dtype to compute in, after checking shapes and dtypes."""
    if q.ndim != 4 or not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must share one (B, Hh, N, hd) shape, got {q.shape}, {k.shape}, {v.shape}")
    dtype = np.result_type(q, k, v)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"attention kernels take float32 or float64 arrays, got {dtype}")
    return dtype


def _checked(q, k, v, scale):
    dtype = _dtype(q, k, v)
    q, k, v = (np.ascontiguousarray(a, dtype=dtype) for a in (q, k, v))
    return q, k, v, dtype.type(scale)


def _heads(*arrays):
    """(B, Hh, N, x) arrays as (BH, N, x) views."""
    return [a.reshape(-1, *a.shape[2:]) for a in arrays]


def _backward_arrays(dout, q):
    """dout as a contiguous array of q's dtype, and empty dq, dk, dv."""
    return np.ascontiguousarray(dout, dtype=q.dtype), np.empty_like(q), np.empty_like(q), np.empty_like(q)


def v1_forward(q, k, v, scale):
    q, k, v, scale = _checked(q, k, v, scale)
    B, Hh, N, hd = q.shape
    p, out = np.empty((B, Hh, N, N), q.dtype), np.empty_like(q)
    _v1_forward(*_heads(q, k, v), scale, *_heads(p, out))
    return out, (q, k, v, p, scale)


def v1_backward(dout, cache):
    q, k, v, p, scale = cache
    dout, dq, dk, dv = _backward_arrays(dout, q)
    _v1_backward(*_heads(dout, q, k, v, p), scale, *_heads(np.empty_like(p), dq, dk, dv))
    return dq, dk, dv


def v2_forward(q, k, v, scale):
    q, k, v, scale = _checked(q, k, v, scale)
    out, lse = np.empty_like(q), np.empty(q.shape[:3], q.dtype)  # lse (B, Hh, N)
    _v2_forward(*_heads(q, k, v), scale, *_heads(out, lse), numba.config.NUMBA_NUM_THREADS)
    return out, (q, k, v, lse, scale)


def v2_backward(dout, cache):
    q, k, v, lse, scale = cache
    dout, dq, dk, dv = _backward_arrays(dout, q)
    _v2_backward(*_heads(dout, q, k, v, lse), scale, *_heads(dq, dk, dv))
    return dq, dk, dv


def v3_forward(q, k, v, scale):
    q, k, v, scale = _checked(q, k, v, scale)
    out, lse = np.empty_like(q), np.empty(q.shape[:3], q.dtype)  # lse (B, Hh, N)
    _v3_forward(*_heads(q, k, v), scale, *_heads(out, lse))
    return out, (q, k, v, out, lse, scale)


def v3_backward(dout, cache):
    q, k, v, out, lse, scale = cache
    dout, dq, dk, dv = _backward_arrays(dout, q)
    _v3_backward(*_heads(dout, q, k, v, out, lse), scale, *_heads(dq, dk, dv))
    return dq, dk, dv


def blas_forward(q, k, v, scale):
    q, k, v, scale = _checked(q, k, v, scale)
    p = threads.matmul(q, np.swapaxes(k, -1, -2))  # (B, Hh, N, N)
    _softmax_heads(*_heads(p), scale)
    return threads.matmul(p, v), (q, k, v, p, scale)


def blas_backward(dout, cache):
    q, k, v, p, scale = cache
    dout = np.ascontiguousarray(dout, dtype=q.dtype)
    dv = threads.matmul(np.swapaxes(p, -1, -2), dout)
    ds = threads.matmul(dout, np.swapaxes(v, -1, -2))  # (B, Hh, N, N) dP, made dS in place
    _dsoftmax_heads(*_heads(p, ds), scale)
    return threads.matmul(ds, k), threads.matmul(np.swapaxes(ds, -1, -2), q), dv


V4_MAX_P_BYTES = 256 << 20  # v4 keeps P up to this size; longer sequences run v3 (memory linear in N)


def v4_forward(q, k, v, scale):
    q, k, v, scale = _checked(q, k, v, scale)
    B, Hh, N, hd = q.shape
    if B * Hh * N * N * q.itemsize > V4_MAX_P_BYTES:
        out, cache = v3_forward(q, k, v, scale)
        return out, ("v3", cache)
    p, out = np.empty((B, Hh, N, N), q.dtype), np.empty_like(q)
    with threads.single_threaded_blas(which="scipy"):
        _v4_forward(*_heads(q, k, v), scale, *_heads(p, out))
    return out, ("v4", (q, k, v, p, scale))


def v4_backward(dout, cache):
    kind, cache = cache
    if kind == "v3":
        return v3_backward(dout, cache)
    q, k, v, p, scale = cache
    dout, dq, dk, dv = _backward_arrays(dout, q)
    N = q.shape[2]
    scratch = np.empty((numba.config.NUMBA_NUM_THREADS, N, N), q.dtype)
    with threads.single_threaded_blas(which="scipy"):
        _v4_backward(*_heads(dout, q, k, v, p), scale, scratch, *_heads(dq, dk, dv))
    return dq, dk, dv


def _one_qkv_array(q, k, v, dtype):
    """A C-contiguous (B, N, 3, Hh, hd) array whose [:, :, 0/1/2] transposed to (B, Hh, N, hd) are
    q, k, v: the array they are views of when the model made them (unbind of the projection), so
    nothing is copied; otherwise a new one they are copied into."""
    whole = stacked_view((q, k, v))  # (3, B, Hh, N, hd), if they are slices of one array
    if whole is not None and whole.dtype == dtype and whole.transpose(1, 3, 0, 2, 4).flags.c_contiguous:
        return whole.transpose(1, 3, 0, 2, 4)  # holds q, k, v and nothing else, laid out as expected
    B, Hh, N, hd = q.shape
    whole = np.empty((B, N, 3, Hh, hd), dtype)
    for i, a in enumerate((q, k, v)):
        whole[:, :, i] = a.transpose(0, 2, 1, 3)
    return whole


def v5_forward(q, k, v, scale):
    """v4 on the (B, N, 3, Hh, hd) array that the model's q, k, v are views of (_one_qkv_array),
    with no copies of them. out is returned as a (B, Hh, N, hd) view of a (B, N, Hh, hd) array,
    the heads side by side, so that the model's transpose back to (B, N, D) is free too."""
    dtype = _dtype(q, k, v)
    B, Hh, N, hd = q.shape
    if B * Hh * N * N * dtype.itemsize > V4_MAX_P_BYTES:
        out, cache = v3_forward(q, k, v, scale)
        return out, ("v3", cache)
    qkv = _one_qkv_array(q, k, v, dtype)
    p, out = np.empty((B, Hh, N, N), dtype), np.empty((B, N, Hh, hd), dtype)
    scratch = np.empty((numba.config.NUMBA_NUM_THREADS, 4, N, hd), dtype)
    scale = dtype.type(scale)
    with threads.single_threaded_blas(which="scipy"):
        _v5_forward(qkv, scale, p, out.reshape(B, N, 1, Hh, hd), scratch)
    return out.transpose(0, 2, 1, 3), ("v5", (qkv, p, scale))


def v5_backward(dout, cache):
    """dq, dk, dv as (B, Hh, N, hd) views of one (B, N, 3, Hh, hd) array: laid out as the
    projection that q, k, v came from, so that autograd's unbind, transpose and reshape hand its
    gradient back without a copy (Unbind.backward in minivit/autograd.py)."""
    kind, cache = cache
    if kind == "v3":
        return v3_backward(dout, cache)
    qkv, p, scale = cache
    B, N, _, Hh, hd = qkv.shape
    dout = np.ascontiguousarray(dout.transpose(0, 2, 1, 3), dtype=qkv.dtype)  # (B, N, Hh, hd): a view if it was one
    dout = dout.reshape(B, N, 1, Hh, hd)  # the projection's layout with one slot: _rows_from reads both
    dqkv = np.empty_like(qkv)
    T = numba.config.NUMBA_NUM_THREADS
    scratch, ds_scratch = np.empty((T, 5, N, hd), qkv.dtype), np.empty((T, N, N), qkv.dtype)
    with threads.single_threaded_blas(which="scipy"):
        _v5_backward(dout, qkv, p, scale, scratch, ds_scratch, dqkv)
    return tuple(dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


register("attention", "cpu_v1", v1_forward, v1_backward,
         description="Numba: N x N scores per head as in the reference, plain loops, parallel over heads")
register("attention", "cpu_v2", v2_forward, v2_backward,
         description="Numba: fused per query row, keeps the row log-sum-exp, not P")
register("attention", "cpu_v3", v3_forward, v3_backward,
         description="Numba: flash-style tiles, online softmax, memory linear in N")
register("attention", "cpu_v4", v4_forward, v4_backward,
         description="Numba task per head calling BLAS (SciPy's, one thread) for its 6 products; keeps P "
                     "up to 256 MiB, flash v3 above")
register("attention", "cpu_v5", v5_forward, v5_backward, strided=True,
         description="v4 reading the q, k, v views in place (per-head copies into scratch), output "
                     "with heads side by side, gradients in one qkv-shaped array: no copies around it")
register("attention", "cpu_blas", blas_forward, blas_backward,
         description="np.matmul (BLAS) around a Numba-fused softmax and dsoftmax")
