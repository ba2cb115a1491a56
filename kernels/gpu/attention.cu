// Attention forward and backward for kernels/gpu/attention.py (the algorithm: kernels/reference/
// attention.py). Per head bh < B*Hh, q, k, v, o are (N, hd), C-contiguous, heads one after another.
//
//   S = scale * q k^T;  P = softmax(S);  O = P v;  lse_i = log sum_j exp(S_ij)  (natural log)
//   backward: D_i = dO_i . O_i;  P_ij = exp(S_ij - lse_i);  dP = dO v^T;  dS = P * (dP - D)
//             dv = P^T dO;  dq = scale * dS k;  dk = scale * dS^T q
//
// v1 lives in attention.py (cuBLAS products around the row softmax of normact.cu).
// v2: one warp per row. Forward: a warp per query row, scores of its row in shared memory
//     (lanes over keys), then O (lanes over dims). Backward: D_i (attn_rowdot), then dq with a warp
//     per query row and dk, dv with a warp per key row, each recomputing its row of P from lse:
//     no (N, N) array anywhere, no atomics, every output written once.
// v3: flash tiles (Dao et al. 2022; backward as FlashAttention-2). A block of 256 threads owns a
//     64-row tile; key (or query) tiles of 64 stream through shared memory; thread (ty, tx) of the
//     16 x 16 grid holds a 4 x 4 block of the score tile (rows 4 ty + i, columns tx + 16 j) and
//     4 rows x HD/16 dims of each accumulator in registers. Forward keeps a running max m and
//     sum l per row (online softmax: what was summed under an old max is rescaled by
//     exp(m_old - m_new)); scores are kept in log2 units so that every exp is an exp2. Backward:
//     one kernel per key tile for dk, dv and one per query tile for dq, each recomputing P from
//     q, k and lse; no atomics. HD, the head width rounded up to 16 (the extra dims are zeros),
//     is a template parameter so that the register arrays have constant sizes.

template <typename T> __device__ __forceinline__ T ex(T x);
template <> __device__ __forceinline__ float ex<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double ex<double>(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T ex2(T x);
template <> __device__ __forceinline__ float ex2<float>(float x) { return exp2f(x); }
template <> __device__ __forceinline__ double ex2<double>(double x) { return exp2(x); }
template <typename T> __device__ __forceinline__ T ln(T x);
template <> __device__ __forceinline__ float ln<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double ln<double>(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T neg_inf() { return T(-__longlong_as_double(0x7ff0000000000000LL)); }

template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v)
{
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// sum or max over the 16 lanes that share one ty (a half warp: lanes 0-15 or 16-31)
template <typename T> __device__ __forceinline__ T half_warp_sum(T v)
{
#pragma unroll
    for (int offset = 8; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T> __device__ __forceinline__ T half_warp_max(T v)
{
#pragma unroll
    for (int offset = 8; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// ---------------------------------------------------------------- D_i = dO_i . O_i
template <typename T>
__global__ void attn_rowdot(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                            long long rows, int hd)
{
    const int lane = threadIdx.x % 32;
    const long long warps = blockDim.x / 32;
    for (long long r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
        T s = 0;
        for (int d = lane; d < hd; d += 32) s += a[r * hd + d] * b[r * hd + d];
        s = warp_sum(s);
        if (lane == 0) out[r] = s;
    }
}

// ---------------------------------------------------------------- v2: a warp per row
// grid (ceil(N / 4), B*Hh), 128 threads; shared memory per warp: its query row (hd) and its row of
// scores, then probabilities (N).
template <typename T>
__global__ void attn_fwd_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                            T* __restrict__ O, T* __restrict__ LSE, int N, int hd, T scale)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * 4 + warp;
    if (i >= N) return;  // a whole warp leaves: there are no block-wide barriers below
    const long long head = (long long)blockIdx.y * N;
    T* qs = reinterpret_cast<T*>(smem_raw) + warp * (hd + N);
    T* s = qs + hd;
    for (int d = lane; d < hd; d += 32) qs[d] = Q[(head + i) * hd + d];
    __syncwarp();
    T m = neg_inf<T>();
    for (int j = lane; j < N; j += 32) {
        const T* kr = K + (head + j) * hd;
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
        for (int j = 0; j < N; ++j) acc += s[j] * V[(head + j) * hd + d];
        O[(head + i) * hd + d] = acc * inv;
    }
    if (lane == 0) LSE[head + i] = m + ln(l);
}

// dq: a warp per query row i; shared memory per warp: q_i, dO_i (2 hd) and dS_i (N)
template <typename T>
__global__ void attn_bwd_dq_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                               const T* __restrict__ dO, const T* __restrict__ LSE, const T* __restrict__ Dv,
                               T* __restrict__ dQ, int N, int hd, T scale)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * 4 + warp;
    if (i >= N) return;
    const long long head = (long long)blockIdx.y * N;
    T* qs = reinterpret_cast<T*>(smem_raw) + warp * (2 * hd + N);
    T* gs = qs + hd;
    T* ds = gs + hd;
    for (int d = lane; d < hd; d += 32) {
        qs[d] = Q[(head + i) * hd + d];
        gs[d] = dO[(head + i) * hd + d];
    }
    __syncwarp();
    const T lse = LSE[head + i], Di = Dv[head + i];
    for (int j = lane; j < N; j += 32) {
        const T* kr = K + (head + j) * hd;
        const T* vr = V + (head + j) * hd;
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
        for (int j = 0; j < N; ++j) acc += ds[j] * K[(head + j) * hd + d];
        dQ[(head + i) * hd + d] = acc * scale;
    }
}

// dk, dv: a warp per key row j; shared memory per warp: k_j, v_j (2 hd), P_:j and dS_:j (2 N)
template <typename T>
__global__ void attn_bwd_dkdv_v2(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                                 const T* __restrict__ dO, const T* __restrict__ LSE, const T* __restrict__ Dv,
                                 T* __restrict__ dK, T* __restrict__ dV, int N, int hd, T scale)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j = blockIdx.x * 4 + warp;
    if (j >= N) return;
    const long long head = (long long)blockIdx.y * N;
    T* ks = reinterpret_cast<T*>(smem_raw) + warp * (2 * hd + 2 * N);
    T* vs = ks + hd;
    T* ps = vs + hd;
    T* ds = ps + N;
    for (int d = lane; d < hd; d += 32) {
        ks[d] = K[(head + j) * hd + d];
        vs[d] = V[(head + j) * hd + d];
    }
    __syncwarp();
    for (int i = lane; i < N; i += 32) {
        const T* qr = Q + (head + i) * hd;
        const T* gr = dO + (head + i) * hd;
        T s = 0, dp = 0;
        for (int d = 0; d < hd; ++d) {
            s += qr[d] * ks[d];
            dp += gr[d] * vs[d];
        }
        const T p = ex(s * scale - LSE[head + i]);
        ps[i] = p;
        ds[i] = p * (dp - Dv[head + i]);
    }
    __syncwarp();
    for (int d = lane; d < hd; d += 32) {
        T acc_v = 0, acc_k = 0;
        for (int i = 0; i < N; ++i) {
            acc_v += ps[i] * dO[(head + i) * hd + d];
            acc_k += ds[i] * Q[(head + i) * hd + d];
        }
        dV[(head + j) * hd + d] = acc_v;
        dK[(head + j) * hd + d] = acc_k * scale;
    }
}

// ---------------------------------------------------------------- v3: flash tiles
constexpr int FB = 64;   // rows of a tile (queries or keys)
constexpr int FT = 256;  // threads of a block, a 16 x 16 grid
constexpr double LOG2E = 1.4426950408889634074;
constexpr double LN2 = 0.69314718055994530942;

// rows row0 .. row0 + 63 of a (N, hd) matrix into dst[64][HD + 1]; zeros past N and past hd
template <typename T, int HD>
__device__ __forceinline__ void load_tile(T* dst, const T* __restrict__ src, int row0, int N, int hd)
{
    for (int e = threadIdx.x; e < FB * HD; e += FT) {
        const int r = e / HD, d = e % HD;
        const int gr = row0 + r;
        dst[r * (HD + 1) + d] = (gr < N && d < hd) ? src[(long long)gr * hd + d] : T(0);
    }
}

// grid (ceil(N / 64), B*Hh); shared: q, k, v tiles (64 x (HD + 1) each) and P (64 x 65)
template <typename T, int HD>
__global__ void __launch_bounds__(FT) flash_fwd_v3(const T* __restrict__ Q, const T* __restrict__ K,
                                                   const T* __restrict__ V, T* __restrict__ O,
                                                   T* __restrict__ LSE, int N, int hd, T scale)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw);
    T* Ks = Qs + FB * LD;
    T* Vs = Ks + FB * LD;
    T* Ps = Vs + FB * LD;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long head = (long long)blockIdx.y * N * hd;
    const int q0 = blockIdx.x * FB;
    Q += head;
    K += head;
    V += head;
    O += head;
    load_tile<T, HD>(Qs, Q, q0, N, hd);
    const T sl2 = scale * T(LOG2E);  // scores in log2 units
    T o[4][DJ], m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        m[i] = neg_inf<T>();
        l[i] = 0;
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) o[i][jj] = 0;
    }
    for (int k0 = 0; k0 < N; k0 += FB) {
        __syncthreads();  // the last tile's readers are done with Ks, Vs and Ps
        load_tile<T, HD>(Ks, K, k0, N, hd);
        load_tile<T, HD>(Vs, V, k0, N, hd);
        __syncthreads();
        T s[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[i][j] = 0;
#pragma unroll 8
        for (int d = 0; d < HD; ++d) {
            T a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = Qs[(ty * 4 + i) * LD + d];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Ks[(tx + 16 * j) * LD + d];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) s[i][j] += a[i] * b[j];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            T tile_max = neg_inf<T>();
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                s[i][j] = (k0 + tx + 16 * j < N) ? s[i][j] * sl2 : neg_inf<T>();  // keys past N: p = 0
                tile_max = max(tile_max, s[i][j]);
            }
            const T m_new = max(m[i], half_warp_max(tile_max));  // finite: key k0 is always there
            const T alpha = ex2(m[i] - m_new);                   // 0 on the first tile (m = -inf)
            T tile_sum = 0;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const T p = ex2(s[i][j] - m_new);
                Ps[(ty * 4 + i) * PD + tx + 16 * j] = p;
                tile_sum += p;
            }
            l[i] = l[i] * alpha + half_warp_sum(tile_sum);
            m[i] = m_new;
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) o[i][jj] *= alpha;
        }
        __syncthreads();  // P complete
#pragma unroll 4
        for (int c = 0; c < FB; ++c) {
            T p[4], v[DJ];
#pragma unroll
            for (int i = 0; i < 4; ++i) p[i] = Ps[(ty * 4 + i) * PD + c];
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) v[jj] = Vs[c * LD + tx + 16 * jj];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < DJ; ++jj) o[i][jj] += p[i] * v[jj];
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = q0 + ty * 4 + i;
        if (r >= N) continue;
        const T inv = T(1) / l[i];
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) {
            const int d = tx + 16 * jj;
            if (d < hd) O[(long long)r * hd + d] = o[i][jj] * inv;
        }
        if (tx == 0) LSE[(long long)blockIdx.y * N + r] = (m[i] + log2(double(l[i]))) * LN2;
    }
}

// dk, dv for one key tile: grid (ceil(N / 64), B*Hh). Thread (ty, tx) holds the transposed tiles
// S^T and dP^T at key rows 4 ty + i and query columns tx + 16 j, and dk, dv at key rows 4 ty + i,
// dims tx + 16 jj. Shared: k, v, q, dO tiles, P^T and dS^T (64 x 65 each), lse and D of the tile.
template <typename T, int HD>
__global__ void __launch_bounds__(FT) flash_bwd_dkdv_v3(
    const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, const T* __restrict__ dO,
    const T* __restrict__ LSE, const T* __restrict__ Dv, T* __restrict__ dK, T* __restrict__ dV,
    int N, int hd, T scale)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16;
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
    const long long head = (long long)blockIdx.y * N * hd;
    const long long rows = (long long)blockIdx.y * N;
    const int k0 = blockIdx.x * FB;
    load_tile<T, HD>(Ks, K + head, k0, N, hd);
    load_tile<T, HD>(Vs, V + head, k0, N, hd);
    const T sl2 = scale * T(LOG2E);
    T dk[4][DJ], dv[4][DJ];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) dk[i][jj] = dv[i][jj] = 0;
    for (int q0 = 0; q0 < N; q0 += FB) {
        __syncthreads();
        load_tile<T, HD>(Qs, Q + head, q0, N, hd);
        load_tile<T, HD>(Gs, dO + head, q0, N, hd);
        for (int e = threadIdx.x; e < FB; e += FT) {
            const bool in = q0 + e < N;
            Ls[e] = in ? LSE[rows + q0 + e] * T(LOG2E) : T(0);
            Ds[e] = in ? Dv[rows + q0 + e] : T(0);
        }
        __syncthreads();
        T s[4][4], dp[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[i][j] = dp[i][j] = 0;
#pragma unroll 4
        for (int d = 0; d < HD; ++d) {
            T ka[4], va[4], qb[4], gb[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                ka[i] = Ks[(ty * 4 + i) * LD + d];
                va[i] = Vs[(ty * 4 + i) * LD + d];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                qb[j] = Qs[(tx + 16 * j) * LD + d];
                gb[j] = Gs[(tx + 16 * j) * LD + d];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    s[i][j] += ka[i] * qb[j];
                    dp[i][j] += va[i] * gb[j];
                }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int qc = tx + 16 * j;
                const T p = (q0 + qc < N) ? ex2(s[i][j] * sl2 - Ls[qc]) : T(0);
                Pt[(ty * 4 + i) * PD + qc] = p;
                St[(ty * 4 + i) * PD + qc] = p * (dp[i][j] - Ds[qc]);
            }
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < FB; ++c) {
            T pa[4], sa[4], gb[DJ], qb[DJ];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                pa[i] = Pt[(ty * 4 + i) * PD + c];
                sa[i] = St[(ty * 4 + i) * PD + c];
            }
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) {
                gb[jj] = Gs[c * LD + tx + 16 * jj];
                qb[jj] = Qs[c * LD + tx + 16 * jj];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < DJ; ++jj) {
                    dv[i][jj] += pa[i] * gb[jj];
                    dk[i][jj] += sa[i] * qb[jj];
                }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = k0 + ty * 4 + i;
        if (r >= N) continue;
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) {
            const int d = tx + 16 * jj;
            if (d < hd) {
                dK[head + (long long)r * hd + d] = dk[i][jj] * scale;
                dV[head + (long long)r * hd + d] = dv[i][jj];
            }
        }
    }
}

// dq for one query tile: grid (ceil(N / 64), B*Hh). Thread (ty, tx) holds S and dP at query rows
// 4 ty + i and key columns tx + 16 j, and dq at rows 4 ty + i, dims tx + 16 jj. Shared: q, dO, k, v
// tiles and dS (64 x 65).
template <typename T, int HD>
__global__ void __launch_bounds__(FT) flash_bwd_dq_v3(
    const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, const T* __restrict__ dO,
    const T* __restrict__ LSE, const T* __restrict__ Dv, T* __restrict__ dQ, int N, int hd, T scale)
{
    constexpr int LD = HD + 1, PD = FB + 1, DJ = HD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* Qs = reinterpret_cast<T*>(smem_raw);
    T* Gs = Qs + FB * LD;
    T* Ks = Gs + FB * LD;
    T* Vs = Ks + FB * LD;
    T* Ss = Vs + FB * LD;  // dS
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long head = (long long)blockIdx.y * N * hd;
    const long long rows = (long long)blockIdx.y * N;
    const int q0 = blockIdx.x * FB;
    load_tile<T, HD>(Qs, Q + head, q0, N, hd);
    load_tile<T, HD>(Gs, dO + head, q0, N, hd);
    const T sl2 = scale * T(LOG2E);
    T lse[4], Di[4], dq[4][DJ];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = q0 + ty * 4 + i;
        lse[i] = r < N ? LSE[rows + r] * T(LOG2E) : T(0);
        Di[i] = r < N ? Dv[rows + r] : T(0);
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) dq[i][jj] = 0;
    }
    for (int k0 = 0; k0 < N; k0 += FB) {
        __syncthreads();
        load_tile<T, HD>(Ks, K + head, k0, N, hd);
        load_tile<T, HD>(Vs, V + head, k0, N, hd);
        __syncthreads();
        T s[4][4], dp[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[i][j] = dp[i][j] = 0;
#pragma unroll 4
        for (int d = 0; d < HD; ++d) {
            T qa[4], ga[4], kb[4], vb[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                qa[i] = Qs[(ty * 4 + i) * LD + d];
                ga[i] = Gs[(ty * 4 + i) * LD + d];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                kb[j] = Ks[(tx + 16 * j) * LD + d];
                vb[j] = Vs[(tx + 16 * j) * LD + d];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    s[i][j] += qa[i] * kb[j];
                    dp[i][j] += ga[i] * vb[j];
                }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int kc = tx + 16 * j;
                const T p = (k0 + kc < N) ? ex2(s[i][j] * sl2 - lse[i]) : T(0);
                Ss[(ty * 4 + i) * PD + kc] = p * (dp[i][j] - Di[i]);
            }
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < FB; ++c) {
            T sa[4], kb[DJ];
#pragma unroll
            for (int i = 0; i < 4; ++i) sa[i] = Ss[(ty * 4 + i) * PD + c];
#pragma unroll
            for (int jj = 0; jj < DJ; ++jj) kb[jj] = Ks[c * LD + tx + 16 * jj];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < DJ; ++jj) dq[i][jj] += sa[i] * kb[jj];
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = q0 + ty * 4 + i;
        if (r >= N) continue;
#pragma unroll
        for (int jj = 0; jj < DJ; ++jj) {
            const int d = tx + 16 * jj;
            if (d < hd) dQ[head + (long long)r * hd + d] = dq[i][jj] * scale;
        }
    }
}
