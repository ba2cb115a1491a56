// LayerNorm, GELU and softmax over the last axis for kernels/gpu/normact.py (the formulas are in
// kernels/reference/normact.py). T is float or double; rows are M = prod(shape[:-1]) of width D.
//
//   layernorm_fwd_v2   one warp per row: mean, then variance around it (two passes over a row
//                      that stays in L1), then y; saves mean and rstd per row (2 numbers, not a
//                      row of xhat) for the backward
//   layernorm_bwd_v2   one warp per row for dx (two warp sums: mean(gh), mean(gh * xhat)); each
//                      warp adds dw, db into its own slice of shared memory, each block writes
//                      one partial row, and one reduction over the blocks finishes them
//   gelu_fwd_v2/bwd    one element per thread in a grid-stride loop, exact erf; the backward
//                      recomputes Phi(x) and phi(x) from x instead of saving them
//   softmax_fwd_v2/bwd one warp per row: max, sum of exp, write (three passes); softmax(scale x),
//                      so that a caller can fold a temperature (attention's 1/sqrt(hd)) in

#include "reduce.cuh"
#include "typed_math.cuh"

template <typename T> __device__ __forceinline__ T erf_(T x);
template <> __device__ __forceinline__ float erf_<float>(float x) { return erff(x); }
template <> __device__ __forceinline__ double erf_<double>(double x) { return erf(x); }
template <typename T> __device__ __forceinline__ T rsqrt_(T x);
template <> __device__ __forceinline__ float rsqrt_<float>(float x) { return 1.0f / sqrtf(x); }
template <> __device__ __forceinline__ double rsqrt_<double>(double x) { return 1.0 / sqrt(x); }

// ---------------------------------------------------------------- layernorm
template <typename T>
__global__ void layernorm_fwd_v2(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                 T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd,
                                 int M, int D, T eps)
{
    const int lane = threadIdx.x % 32;
    const int warps = blockDim.x / 32;
    for (int row = blockIdx.x * warps + threadIdx.x / 32; row < M; row += gridDim.x * warps) {
        const T* xr = x + (long long)row * D;
        T s = 0;
        for (int d = lane; d < D; d += 32) s += xr[d];
        const T mu = warp_sum(s) / T(D);
        T v = 0;
        for (int d = lane; d < D; d += 32) {
            const T c = xr[d] - mu;
            v += c * c;
        }
        const T r = rsqrt_(warp_sum(v) / T(D) + eps);
        T* yr = y + (long long)row * D;
        for (int d = lane; d < D; d += 32) yr[d] = (xr[d] - mu) * r * w[d] + b[d];
        if (lane == 0) {
            mean[row] = mu;
            rstd[row] = r;
        }
    }
}

// partial: (gridDim.x, 2, D): each block's sums of dy * xhat (dw) and of dy (db) over its rows.
// Lane l of a warp owns columns l, l + 32, ... of every row it visits, so each warp adds into its
// own slice of shared memory without atomics; the block sums its warps' slices at the end.
// At most 1024 threads (32 warps) a block: __launch_bounds__ keeps the registers low enough (64 a
// thread) for every block size normact.py's layernorm_bwd_launch may choose.
template <typename T>
__global__ void __launch_bounds__(1024) layernorm_bwd_v2(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                 const T* __restrict__ mean, const T* __restrict__ rstd,
                                 T* __restrict__ dx, T* __restrict__ partial, int M, int D)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int warps = blockDim.x / 32;
    T* sums = reinterpret_cast<T*>(smem_raw);  // (warps, 2, D)
    T* dw_w = sums + warp * 2 * D;             // this warp's dw, then db
    T* db_w = dw_w + D;
    for (int d = threadIdx.x; d < warps * 2 * D; d += blockDim.x) sums[d] = 0;
    __syncthreads();
    for (int row = blockIdx.x * warps + warp; row < M; row += gridDim.x * warps) {
        const T* xr = x + (long long)row * D;
        const T* gr = dy + (long long)row * D;
        const T mu = mean[row], r = rstd[row];
        T sum_gh = 0, sum_ghx = 0;
        for (int d = lane; d < D; d += 32) {
            const T xhat = (xr[d] - mu) * r;
            const T g = gr[d];
            const T gh = g * w[d];
            sum_gh += gh;
            sum_ghx += gh * xhat;
            dw_w[d] += g * xhat;
            db_w[d] += g;
        }
        const T mean_gh = warp_sum(sum_gh) / T(D);
        const T mean_ghx = warp_sum(sum_ghx) / T(D);
        T* dxr = dx + (long long)row * D;
        for (int d = lane; d < D; d += 32) {
            const T xhat = (xr[d] - mu) * r;
            dxr[d] = r * (gr[d] * w[d] - mean_gh - xhat * mean_ghx);
        }
    }
    __syncthreads();
    T* out = partial + (long long)blockIdx.x * 2 * D;
    for (int d = threadIdx.x; d < 2 * D; d += blockDim.x) {
        T acc = 0;
        for (int k = 0; k < warps; ++k) acc += sums[k * 2 * D + d];
        out[d] = acc;
    }
}

// ---------------------------------------------------------------- GELU, exact: x * Phi(x)
template <typename T>
__global__ void gelu_fwd_v2(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    const T sqrt_half = T(0.70710678118654752440);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const T v = x[i];
        y[i] = v * (T(0.5) * (T(1) + erf_(v * sqrt_half)));
    }
}

template <typename T>
__global__ void gelu_bwd_v2(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, long long n)
{
    const T sqrt_half = T(0.70710678118654752440);
    const T inv_sqrt_2pi = T(0.39894228040143267794);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const T v = x[i];
        const T cdf = T(0.5) * (T(1) + erf_(v * sqrt_half));
        const T pdf = ex(T(-0.5) * v * v) * inv_sqrt_2pi;
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

// ---------------------------------------------------------------- softmax over rows of length n
template <typename T>
__global__ void softmax_fwd_v2(const T* __restrict__ x, T* __restrict__ y, long long rows, int n, T scale)
{
    const int lane = threadIdx.x % 32;
    const long long warps = blockDim.x / 32;
    for (long long row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += gridDim.x * warps) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        T m = neg_inf<T>();
        for (int j = lane; j < n; j += 32) m = max(m, scale * xr[j]);
        m = warp_max(m);
        T s = 0;
        for (int j = lane; j < n; j += 32) s += ex(scale * xr[j] - m);
        const T inv = T(1) / warp_sum(s);
        for (int j = lane; j < n; j += 32) yr[j] = ex(scale * xr[j] - m) * inv;
    }
}

// dx = scale * y * (dy - sum(dy * y)); may run in place (dx == dy)
template <typename T>
__global__ void softmax_bwd_v2(const T* __restrict__ y, const T* dy, T* dx, long long rows, int n, T scale)
{
    const int lane = threadIdx.x % 32;
    const long long warps = blockDim.x / 32;
    for (long long row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += gridDim.x * warps) {
        const T* yr = y + row * n;
        const T* gr = dy + row * n;
        T* dr = dx + row * n;
        T s = 0;
        for (int j = lane; j < n; j += 32) s += gr[j] * yr[j];
        s = warp_sum(s);
        for (int j = lane; j < n; j += 32) dr[j] = scale * yr[j] * (gr[j] - s);
    }
}
