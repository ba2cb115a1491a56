// The optimizer's elementwise work for kernels/gpu/optim.py: AdamW (torch.optim.AdamW's
// semantics, the formulas in kernels/reference/optim.py) and the two halves of gradient clipping.
//
//   adamw_v2        one tensor per launch, one element per thread in a grid-stride loop: p, g, m, v
//                   read once, p, m, v written once (7 numbers of traffic per parameter)
//   adamw_multi_v3  every tensor of a step in one launch (a multi-tensor kernel, as apex's and
//                   torch's _foreach): block c updates chunk c of some tensor, found in a table
//   sumsq_multi     per chunk, the sum of squares of a list of tensors (in double): the global
//                   gradient norm is the square root of their sum
//   scale_multi     every element of a list of tensors times one factor read from device memory
//                   (min(1, max_norm / (norm + 1e-6)), computed on the device: no copy to the host)
//
// Tables (int64, built by optim.py, one copy to the device per call): for k pointer columns and
// n tensors, [k * n pointers][n sizes][C chunk -> tensor][C chunk -> first element]; AdamW's
// hyper-parameters are a second table of doubles, 7 per tensor: lr, beta1, beta2, eps,
// weight_decay, bias1 = 1 - beta1^step, bias2 = 1 - beta2^step.

#include "reduce.cuh"

template <typename T> __device__ __forceinline__ T sqrt_(T x);
template <> __device__ __forceinline__ float sqrt_<float>(float x) { return sqrtf(x); }
template <> __device__ __forceinline__ double sqrt_<double>(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ void adamw_element(T& p, T g, T& m, T& v, T lr, T beta1, T beta2, T eps, T wd,
                                              T bias1, T bias2)
{
    if (wd != T(0)) p *= T(1) - lr * wd;  // decoupled weight decay
    m = beta1 * m + (T(1) - beta1) * g;
    v = beta2 * v + (T(1) - beta2) * (g * g);
    p -= (lr / bias1) * (m / (sqrt_(v / bias2) + eps));
}

template <typename T>
__global__ void adamw_v2(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                         long long n, T lr, T beta1, T beta2, T eps, T wd, T bias1, T bias2)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        T pi = p[i], mi = m[i], vi = v[i];
        adamw_element(pi, g[i], mi, vi, lr, beta1, beta2, eps, wd, bias1, bias2);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

template <typename T>
__global__ void adamw_multi_v3(const long long* __restrict__ table, const double* __restrict__ hyper,
                               int tensors, int chunks, int chunk_size)
{
    const long long* sizes = table + 4 * tensors;
    const long long* chunk_tensor = sizes + tensors;
    const long long* chunk_start = chunk_tensor + chunks;
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        const int t = (int)chunk_tensor[c];
        const long long start = chunk_start[c];
        const long long end = min(start + (long long)chunk_size, sizes[t]);
        T* p = reinterpret_cast<T*>(table[t]);
        const T* g = reinterpret_cast<const T*>(table[tensors + t]);
        T* m = reinterpret_cast<T*>(table[2 * tensors + t]);
        T* v = reinterpret_cast<T*>(table[3 * tensors + t]);
        const double* h = hyper + 7 * t;
        const T lr = T(h[0]), beta1 = T(h[1]), beta2 = T(h[2]), eps = T(h[3]), wd = T(h[4]);
        const T bias1 = T(h[5]), bias2 = T(h[6]);
        for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
            T pi = p[i], mi = m[i], vi = v[i];
            adamw_element(pi, g[i], mi, vi, lr, beta1, beta2, eps, wd, bias1, bias2);
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
        }
    }
}

// partial[c] = sum of squares of chunk c (blockDim.x a multiple of 32, at most 1024)
template <typename T>
__global__ void sumsq_multi(const long long* __restrict__ table, int tensors, int chunks, int chunk_size,
                            double* __restrict__ partial)
{
    __shared__ double warp_sums[32];
    const long long* sizes = table + tensors;
    const long long* chunk_tensor = sizes + tensors;
    const long long* chunk_start = chunk_tensor + chunks;
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        const int t = (int)chunk_tensor[c];
        const long long start = chunk_start[c];
        const long long end = min(start + (long long)chunk_size, sizes[t]);
        const T* x = reinterpret_cast<const T*>(table[t]);
        double acc = 0;
        for (long long i = start + threadIdx.x; i < end; i += blockDim.x) acc += double(x[i]) * double(x[i]);
        acc = warp_sum(acc);
        if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
        __syncthreads();
        if (threadIdx.x == 0) {
            double total = 0;
            for (int w = 0; w < (int)(blockDim.x / 32); ++w) total += warp_sums[w];
            partial[c] = total;
        }
        __syncthreads();  // warp_sums is reused by the next chunk
    }
}

template <typename T>
__global__ void scale_multi(const long long* __restrict__ table, int tensors, int chunks, int chunk_size,
                            const double* __restrict__ factor)
{
    const long long* sizes = table + tensors;
    const long long* chunk_tensor = sizes + tensors;
    const long long* chunk_start = chunk_tensor + chunks;
    const T f = T(factor[0]);
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        const int t = (int)chunk_tensor[c];
        const long long start = chunk_start[c];
        const long long end = min(start + (long long)chunk_size, sizes[t]);
        T* x = reinterpret_cast<T*>(table[t]);
        for (long long i = start + threadIdx.x; i < end; i += blockDim.x) x[i] *= f;
    }
}
