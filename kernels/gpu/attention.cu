// Attention forward and backward for kernels/gpu/attention.py (the algorithm: kernels/reference/
// attention.py). Per head bh = b * Hh + h < B*Hh, q, k, v, o are (N, hd):
//
//   S = scale * q k^T;  P = softmax(S);  O = P v;  lse_i = log sum_j exp(S_ij)  (natural log)
//   backward: D_i = dO_i . O_i;  P_ij = exp(S_ij - lse_i);  dP = dO v^T;  dS = P * (dP - D)
//             dv = P^T dO;  dq = scale * dS k;  dk = scale * dS^T q
//
// Layout. The inputs q, k, v (and dO) are read where they lie: (B, Hh, N, hd) arrays with element
// strides (sb, sh, sn, 1), such as unbind's views of one (B, N, 3, Hh, hd) projection, so no copy
// is made to feed a kernel; q, k and v share their strides, dO has its own (gb, gh, gn). The
// outputs (O, lse, dq, dk, dv, D) are dense, heads one after another. blockIdx.y counts heads from
// bh0, the first head of the launch (grid y stops at 65,535, so the heads go in chunks).
//
// v1 lives in attention.py (cuBLAS products around the row softmax of normact.cu).
// v2: one warp per row. Forward: a warp per query row, scores of its row in shared memory
//     (lanes over keys), then O (lanes over dims). Backward: D_i (attn_rowdot), then dq with a warp
//     per query row and dk, dv with a warp per key row, each recomputing its row of P from lse:
//     no (N, N) array anywhere, no atomics, every output written once.
// v3: flash tiles (Dao et al. 2022; backward as FlashAttention-2). A block of 256 threads owns a
//     tile of FB rows (FB = 64, 32 or 16: the largest whose shared memory the card allows, chosen
//     in attention.py); key (or query) tiles of FB stream through shared memory; thread (ty, tx)
//     of the 16 x 16 grid holds an R x R block of the score tile, R = FB / 16 (rows R ty + i,
//     columns tx + 16 j), and R rows x HD/16 dims of each accumulator in registers. Forward keeps
//     a running max m and sum l per row (online softmax: what was summed under an old max is
//     rescaled by exp(m_old - m_new)); scores are kept in log2 units so that every exp is an exp2.
//     Backward: one kernel per key tile for dk, dv and one per query tile for dq, each recomputing
//     P from q, k and lse; no atomics. HD, the head width rounded up to 16 (the extra dims are
//     zeros), and FB are template parameters so that the register arrays have constant sizes.

#include "reduce.cuh"
#include "typed_math.cuh"

// The first element of head bh of an input read in place (strides sb, sh: see Layout above)
template <typename T>
__device__ __forceinline__ const T* head_start(const T* x, long long bh, int Hh, long long sb, long long sh)
{
    return x + (bh / Hh) * sb + (bh % Hh) * sh;
}

// ---------------------------------------------------------------- D_i = dO_i . O_i
// rows = B*Hh*N rows i of head bh: a (dO, strided) against b (O, dense)
template <typename T>
__global__ void attn_rowdot(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                            long long rows, int N, int hd, int Hh, long long sb, long long sh, long long sn)
{
    const int lane = threadIdx.x % 32;
    const long long warps = blockDim.x / 32;
    for (long long r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
        const T* ar = head_start(a, r / N, Hh, sb, sh) + (r % N) * sn;
        T s = 0;
        for (int d = lane; d < hd; d += 32) s += ar[d] * b[r * hd + d];
        s = warp_sum(s);
        if (lane == 0) out[r] = s;
    }
}

// ---------------------------------------------------------------- v2: a warp per row
// grid (ceil(N / 4), heads), 128 threads; shared memory per warp: its query row (hd) and its row
// of scores, then probabilities (N).
template <typename T>
__global__ void attn_fwd_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                            T* __restrict__ O, T* __restrict__ LSE, int N, int hd, T scale,
                            int Hh, long long sb, long long sh, long long sn, long long bh0)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * 4 + warp;
    if (i >= N) return;  // a whole warp leaves: there are no block-wide barriers below
    const long long bh = bh0 + blockIdx.y, row = bh * N + i;  // row of the dense outputs
    const T* Qh = head_start(Q, bh, Hh, sb, sh);
    const T* Kh = head_start(K, bh, Hh, sb, sh);
    const T* Vh = head_start(V, bh, Hh, sb, sh);
    T* qs = reinterpret_cast<T*>(smem_raw) + warp * (hd + N);
    T* s = qs + hd;
    for (int d = lane; d < hd; d += 32) qs[d] = Qh[i * sn + d];
    __syncwarp();
    T m = neg_inf<T>();
    for (int j = lane; j < N; j += 32) {
        const T* kr = Kh + j * sn;
        T acc = 0;
        for (int d = 0; d < hd; ++d) acc += qs[d] * kr[d];
        acc *= scale;
        s[j] = acc;
        m = max(m, acc);
    }
    m = warp_max(m);
    T l = 0;
    for (int j = lane; j < N; j += 32) {
        const T p = ex(s[j] - m);
        s[j] = p;
        l += p;
    }
    l = warp_sum(l);
    __syncwarp();  // every lane reads every p below
    const T inv = T(1) / l;
    for (int d = lane; d < hd; d += 32) {
        T acc = 0;
        for (int j = 0; j < N; ++j) acc += s[j] * Vh[j * sn + d];
        O[row * hd + d] = acc * inv;
    }
    if (lane == 0) LSE[row] = m + ln(l);
}

// dq: a warp per query row i; shared memory per warp: q_i, dO_i (2 hd) and dS_i (N)
template <typename T>
__global__ void attn_bwd_dq_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                               const T* __restrict__ dO, const T* __restrict__ LSE, const T* __restrict__ Dv,
                               T* __restrict__ dQ, int N, int hd, T scale, int Hh, long long sb, long long sh,
                               long long sn, long long gb, long long gh, long long gn, long long bh0)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * 4 + warp;
    if (i >= N) return;
    const long long bh = bh0 + blockIdx.y, rows = bh * N;
    const T* Kh = head_start(K, bh, Hh, sb, sh);
    const T* Vh = head_start(V, bh, Hh, sb, sh);
    const T* qr = head_start(Q, bh, Hh, sb, sh) + i * sn;
    const T* gr = head_start(dO, bh, Hh, gb, gh) + i * gn;
    T* qs = reinterpret_cast<T*>(smem_raw) + warp * (2 * hd + N);
    T* gs = qs + hd;
    T* ds = gs + hd;
    for (int d = lane; d < hd; d += 32) {
        qs[d] = qr[d];
        gs[d] = gr[d];
    }
    __syncwarp();
    const T lse = LSE[rows + i], Di = Dv[rows + i];
    for (int j = lane; j < N; j += 32) {
        const T* kr = Kh + j * sn;
        const T* vr = Vh + j * sn;
        T s = 0, dp = 0;
        for (int d = 0; d < hd; ++d) {
            s += qs[d] * kr[d];
            dp += gs[d] * vr[d];
        }
        const T p = ex(s * scale - lse);
        ds[j] = p * (dp - Di);
    }
    __syncwarp();
    for (int d = lane; d < hd; d += 32) {
        T acc = 0;
        for (int j = 0; j < N; ++j) acc += ds[j] * Kh[j * sn + d];
        dQ[(rows + i) * hd + d] = acc * scale;
    }
}

// dk, dv: a warp per key row j; shared memory per warp: k_j, v_j (2 hd), P_:j and dS_:j (2 N)
template <typename T>
__global__ void attn_bwd_dkdv_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                                 const T* __restrict__ dO, const T* __restrict__ LSE, const T* __restrict__ Dv,
                                 T* __restrict__ dK, T* __restrict__ dV, int N, int hd, T scale, int Hh,
                                 long long sb, long long sh, long long sn, long long gb, long long gh,
                                 long long gn, long long bh0)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j = blockIdx.x * 4 + warp;
    if (j >= N) return;
    const long long bh = bh0 + blockIdx.y, rows = bh * N;
    const T* Qh = head_start(Q, bh, Hh, sb, sh);
    const T* Gh = head_start(dO, bh, Hh, gb, gh);
    const T* kr = head_start(K, bh, Hh, sb, sh) + j * sn;
    const T* vr = head_start(V, bh, Hh, sb, sh) + j * sn;
    T* ks = reinterpret_cast<T*>(smem_raw) + warp * (2 * hd + 2 * N);
    T* vs = ks + hd;
    T* ps = vs + hd;
    T* ds = ps + N;
    for (int d = lane; d < hd; d += 32) {
        ks[d] = kr[d];
        vs[d] = vr[d];
    }
    __syncwarp();
    for (int i = lane; i < N; i += 32) {
        const T* qr = Qh + i * sn;
        const T* gr = Gh + i * gn;
        T s = 0, dp = 0;
        for (int d = 0; d < hd; ++d) {
            s += qr[d] * ks[d];
            dp += gr[d] * vs[d];
        }
        const T p = ex(s * scale - LSE[rows + i]);
        ps[i] = p;
        ds[i] = p * (dp - Dv[rows + i]);
    }
    __syncwarp();
    for (int d = lane; d < hd; d += 32) {
        T acc_v = 0, acc_k = 0;
        for (int i = 0; i < N; ++i) {
            acc_v += ps[i] * Gh[i * gn + d];
            acc_k += ds[i] * Qh[i * sn + d];
        }
        dV[(rows + j) * hd + d] = acc_v;
        dK[(rows + j) * hd + d] = acc_k * scale;
    }
}

// ---------------------------------------------------------------- v3: flash tiles
constexpr int FT = 256;  // threads of a block, a 16 x 16 grid
constexpr double LOG2E = 1.4426950408889634074;
constexpr double LN2 = 0.69314718055994530942;

// rows row0 .. row0 + FB - 1 of one head (row r at src + r * ld) into dst[FB][HD + 1]; zeros past
// N and past hd
template <typename T, int HD, int FB>
__device__ __forceinline__ void load_tile(T* dst, const T* __restrict__ src, long long ld, int row0, int N, int hd)
{
    for (int e = threadIdx.x; e < FB * HD; e += FT) {
        const int r = e / HD, d = e % HD;
        const int gr = row0 + r;
        dst[r * (HD + 1) + d] = (gr < N && d < hd) ? src[gr * ld + d] : T(0);
    }
}

// The thread's R x R block of two products of a tile pair: s = A B^T and dp = G W^T, rows R ty + i
// of the row tiles A and G, rows tx + 16 j of the column tiles B and W (all [FB][HD + 1]).
template <typename T, int HD, int R>
__device__ __forceinline__ void two_products(const T* A, const T* G, const T* B, const T* W,
                                             T (&s)[R][R], T (&dp)[R][R])
{
    constexpr int LD = HD + 1;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < R; ++j) s[i][j] = dp[i][j] = 0;
#pragma unroll 4
    for (int d = 0; d < HD; ++d) {
        T a[R], g[R], b[R], w[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            a[i] = A[(ty * R + i) * LD + d];
            g[i] = G[(ty * R + i) * LD + d];
        }
#pragma unroll
        for (int j = 0; j < R; ++j) {
            b[j] = B[(tx + 16 * j) * LD + d];
            w[j] = W[(tx + 16 * j) * LD + d];
        }
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                s[i][j] += a[i] * b[j];
                dp[i][j] += g[i] * w[j];
            }
    }
}

// acc += A B for the thread's rows R ty + i (of A, FB x FB with rows FB + 1 apart: P or dS) and dims
// tx + 16 jj (of B, FB x HD with rows HD + 1 apart: a v or k tile)
template <typename T, int HD, int FB>
__device__ __forceinline__ void add_product(const T* A, const T* B, T (&acc)[FB / 16][HD / 16])
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16, R = FB / 16;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll 4
    for (int c = 0; c < FB; ++c) {
        T a[R], b[DJ];
#pragma unroll
        for (int i = 0; i < R; ++i) a[i] = A[(ty * R + i) * PD + c];
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) b[jj] = B[c * LD + tx + 16 * jj];
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) acc[i][jj] += a[i] * b[jj];
    }
}

// rows row0 + R ty + i of a dense (N, hd) output: the thread's accumulators (dims tx + 16 jj) times f
template <typename T, int HD, int R>
__device__ __forceinline__ void store_rows(T* __restrict__ dst, const T (&acc)[R][HD / 16], int row0, int N,
                                           int hd, T f)
{
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = row0 + ty * R + i;
        if (r >= N) continue;
#pragma unroll
        for (int jj = 0; jj < HD / 16; ++jj) {
            const int d = tx + 16 * jj;
            if (d < hd) dst[(long long)r * hd + d] = acc[i][jj] * f;
        }
    }
}

// grid (ceil(N / FB), heads); shared: q, k, v tiles (FB x (HD + 1) each) and P (FB x (FB + 1))
template <typename T, int HD, int FB>
__global__ void __launch_bounds__(FT) flash_fwd_v3(const T* __restrict__ Q, const T* __restrict__ K,
                                                   const T* __restrict__ V, T* __restrict__ O,
                                                   T* __restrict__ LSE, int N, int hd, T scale, int Hh,
                                                   long long sb, long long sh, long long sn, long long bh0)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16, R = FB / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw);
    T* Ks = Qs + FB * LD;
    T* Vs = Ks + FB * LD;
    T* Ps = Vs + FB * LD;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long bh = bh0 + blockIdx.y;
    const T* Kh = head_start(K, bh, Hh, sb, sh);
    const T* Vh = head_start(V, bh, Hh, sb, sh);
    const int q0 = blockIdx.x * FB;
    load_tile<T, HD, FB>(Qs, head_start(Q, bh, Hh, sb, sh), sn, q0, N, hd);
    const T sl2 = scale * T(LOG2E);  // scores in log2 units
    T o[R][DJ], m[R], l[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        m[i] = neg_inf<T>();
        l[i] = 0;
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) o[i][jj] = 0;
    }
    for (int k0 = 0; k0 < N; k0 += FB) {
        __syncthreads();  // the last tile's readers are done with Ks, Vs and Ps
        load_tile<T, HD, FB>(Ks, Kh, sn, k0, N, hd);
        load_tile<T, HD, FB>(Vs, Vh, sn, k0, N, hd);
        __syncthreads();
        T s[R][R];
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) s[i][j] = 0;
#pragma unroll 8
        for (int d = 0; d < HD; ++d) {
            T a[R], b[R];
#pragma unroll
            for (int i = 0; i < R; ++i) a[i] = Qs[(ty * R + i) * LD + d];
#pragma unroll
            for (int j = 0; j < R; ++j) b[j] = Ks[(tx + 16 * j) * LD + d];
#pragma unroll
            for (int i = 0; i < R; ++i)
#pragma unroll
                for (int j = 0; j < R; ++j) s[i][j] += a[i] * b[j];
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
            T tile_max = neg_inf<T>();
#pragma unroll
            for (int j = 0; j < R; ++j) {
                s[i][j] = (k0 + tx + 16 * j < N) ? s[i][j] * sl2 : neg_inf<T>();  // keys past N: p = 0
                tile_max = max(tile_max, s[i][j]);
            }
            const T m_new = max(m[i], warp_max<16>(tile_max));  // over the row's 16 tx; finite: key k0 is there
            const T alpha = ex2(m[i] - m_new);                  // 0 on the first tile (m = -inf)
            T tile_sum = 0;
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const T p = ex2(s[i][j] - m_new);
                Ps[(ty * R + i) * PD + tx + 16 * j] = p;
                tile_sum += p;
            }
            l[i] = l[i] * alpha + warp_sum<16>(tile_sum);
            m[i] = m_new;
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) o[i][jj] *= alpha;
        }
        __syncthreads();  // P complete
        add_product<T, HD, FB>(Ps, Vs, o);  // o += P v
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const T inv = T(1) / l[i];
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) o[i][jj] *= inv;
        const int r = q0 + ty * R + i;
        if (r < N && tx == 0) LSE[bh * N + r] = (m[i] + log2(double(l[i]))) * LN2;
    }
    store_rows<T, HD, R>(O + bh * N * hd, o, q0, N, hd, T(1));
}

// dk, dv for one key tile: grid (ceil(N / FB), heads). Thread (ty, tx) holds the transposed tiles
// S^T and dP^T at key rows R ty + i and query columns tx + 16 j, and dk, dv at key rows R ty + i,
// dims tx + 16 jj. Shared: k, v, q, dO tiles, P^T and dS^T (FB x (FB + 1) each), lse and D of the
// query tile.
template <typename T, int HD, int FB>
__global__ void __launch_bounds__(FT) flash_bwd_dkdv_v3(
    const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, const T* __restrict__ dO,
    const T* __restrict__ LSE, const T* __restrict__ Dv, T* __restrict__ dK, T* __restrict__ dV,
    int N, int hd, T scale, int Hh, long long sb, long long sh, long long sn, long long gb, long long gh,
    long long gn, long long bh0)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16, R = FB / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Ks = reinterpret_cast<T*>(smem_raw);
    T* Vs = Ks + FB * LD;
    T* Qs = Vs + FB * LD;
    T* Gs = Qs + FB * LD;  // dO tile
    T* Pt = Gs + FB * LD;
    T* St = Pt + FB * PD;  // dS^T
    T* Ls = St + FB * PD;  // lse of the query tile, log2 units
    T* Ds = Ls + FB;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long bh = bh0 + blockIdx.y, rows = bh * N;
    const T* Qh = head_start(Q, bh, Hh, sb, sh);
    const T* Gh = head_start(dO, bh, Hh, gb, gh);
    const int k0 = blockIdx.x * FB;
    load_tile<T, HD, FB>(Ks, head_start(K, bh, Hh, sb, sh), sn, k0, N, hd);
    load_tile<T, HD, FB>(Vs, head_start(V, bh, Hh, sb, sh), sn, k0, N, hd);
    const T sl2 = scale * T(LOG2E);
    T dk[R][DJ], dv[R][DJ];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) dk[i][jj] = dv[i][jj] = 0;
    for (int q0 = 0; q0 < N; q0 += FB) {
        __syncthreads();
        load_tile<T, HD, FB>(Qs, Qh, sn, q0, N, hd);
        load_tile<T, HD, FB>(Gs, Gh, gn, q0, N, hd);
        for (int e = threadIdx.x; e < FB; e += FT) {
            const bool in = q0 + e < N;
            Ls[e] = in ? LSE[rows + q0 + e] * T(LOG2E) : T(0);
            Ds[e] = in ? Dv[rows + q0 + e] : T(0);
        }
        __syncthreads();
        T s[R][R], dp[R][R];
        two_products<T, HD, R>(Ks, Vs, Qs, Gs, s, dp);  // S^T = k q^T, dP^T = v dO^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int qc = tx + 16 * j;
                const T p = (q0 + qc < N) ? ex2(s[i][j] * sl2 - Ls[qc]) : T(0);
                Pt[(ty * R + i) * PD + qc] = p;
                St[(ty * R + i) * PD + qc] = p * (dp[i][j] - Ds[qc]);
            }
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < FB; ++c) {
            T pa[R], sa[R], gv[DJ], qv[DJ];  // P^T, dS^T; dO, q
#pragma unroll
            for (int i = 0; i < R; ++i) {
                pa[i] = Pt[(ty * R + i) * PD + c];
                sa[i] = St[(ty * R + i) * PD + c];
            }
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) {
                gv[jj] = Gs[c * LD + tx + 16 * jj];
                qv[jj] = Qs[c * LD + tx + 16 * jj];
            }
#pragma unroll
            for (int i = 0; i < R; ++i)
#pragma unroll
                for (int jj = 0; jj < DJ; ++jj) {
                    dv[i][jj] += pa[i] * gv[jj];
                    dk[i][jj] += sa[i] * qv[jj];
                }
        }
    }
    store_rows<T, HD, R>(dK + rows * hd, dk, k0, N, hd, scale);
    store_rows<T, HD, R>(dV + rows * hd, dv, k0, N, hd, T(1));
}

// dq for one query tile: grid (ceil(N / FB), heads). Thread (ty, tx) holds S and dP at query rows
// R ty + i and key columns tx + 16 j, and dq at rows R ty + i, dims tx + 16 jj. Shared: q, dO, k, v
// tiles and dS (FB x (FB + 1)).
template <typename T, int HD, int FB>
__global__ void __launch_bounds__(FT) flash_bwd_dq_v3(
    const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, const T* __restrict__ dO,
    const T* __restrict__ LSE, const T* __restrict__ Dv, T* __restrict__ dQ, int N, int hd, T scale, int Hh,
    long long sb, long long sh, long long sn, long long gb, long long gh, long long gn, long long bh0)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16, R = FB / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw);
    T* Gs = Qs + FB * LD;
    T* Ks = Gs + FB * LD;
    T* Vs = Ks + FB * LD;
    T* Ss = Vs + FB * LD;  // dS
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long bh = bh0 + blockIdx.y, rows = bh * N;
    const T* Kh = head_start(K, bh, Hh, sb, sh);
    const T* Vh = head_start(V, bh, Hh, sb, sh);
    const int q0 = blockIdx.x * FB;
    load_tile<T, HD, FB>(Qs, head_start(Q, bh, Hh, sb, sh), sn, q0, N, hd);
    load_tile<T, HD, FB>(Gs, head_start(dO, bh, Hh, gb, gh), gn, q0, N, hd);
    const T sl2 = scale * T(LOG2E);
    T lse[R], Di[R], dq[R][DJ];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = q0 + ty * R + i;
        lse[i] = r < N ? LSE[rows + r] * T(LOG2E) : T(0);
        Di[i] = r < N ? Dv[rows + r] : T(0);
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) dq[i][jj] = 0;
    }
    for (int k0 = 0; k0 < N; k0 += FB) {
        __syncthreads();
        load_tile<T, HD, FB>(Ks, Kh, sn, k0, N, hd);
        load_tile<T, HD, FB>(Vs, Vh, sn, k0, N, hd);
        __syncthreads();
        T s[R][R], dp[R][R];
        two_products<T, HD, R>(Qs, Gs, Ks, Vs, s, dp);  // S = q k^T, dP = dO v^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int kc = tx + 16 * j;
                const T p = (k0 + kc < N) ? ex2(s[i][j] * sl2 - lse[i]) : T(0);
                Ss[(ty * R + i) * PD + kc] = p * (dp[i][j] - Di[i]);
            }
        __syncthreads();
        add_product<T, HD, FB>(Ss, Ks, dq);  // dq += dS k
    }
    store_rows<T, HD, R>(dQ + rows * hd, dq, q0, N, hd, scale);
}
