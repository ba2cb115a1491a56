// Softmax cross-entropy with label smoothing, fused with its gradient, for kernels/gpu/loss.py
// (the formulas: kernels/reference/loss.py). logits (B, K), labels int64 (B,); T float or double.
//
//   t = (1 - eps) onehot(label) + eps / K
//   loss_b = lse_b - (eps / K) sum_k x_bk - (1 - eps) x_b,label      (= -sum_k t_k log softmax(x_b)_k)
//   dlogits_bk = (softmax(x_b)_k - t_k) / B
//
// sce_fwd_v2: one warp per row computes both in one pass over the row (max, sum of exp, then the
// gradient), so the backward is one multiplication by the incoming gradient. A label outside
// [0, K) gives a NaN loss for its row: host labels are refused by minivit.functional.cross_entropy,
// and the Trainer checks its labels on the host before they reach the GPU (train.trainer.check_labels).

#include "reduce.cuh"
#include "typed_math.cuh"

template <typename T>
__global__ void sce_fwd_v2(const T* __restrict__ logits, const long long* __restrict__ labels,
                           T* __restrict__ loss_rows, T* __restrict__ dlogits, int B, int K, T smoothing)
{
    const int lane = threadIdx.x % 32;
    const int warps = blockDim.x / 32;
    const T off = smoothing / T(K);
    const T invB = T(1) / T(B);
    for (int b = blockIdx.x * warps + threadIdx.x / 32; b < B; b += gridDim.x * warps) {
        const T* x = logits + (long long)b * K;
        T m = neg_inf<T>();
        T sum_x = 0;
        for (int k = lane; k < K; k += 32) {
            m = max(m, x[k]);
            sum_x += x[k];
        }
        m = warp_max(m);
        sum_x = warp_sum(sum_x);
        T s = 0;
        for (int k = lane; k < K; k += 32) s += ex(x[k] - m);
        const T lse = m + ln(warp_sum(s));
        const long long label = labels[b];
        const bool valid = label >= 0 && label < K;
        if (lane == 0) {
            loss_rows[b] = valid ? lse - off * sum_x - (T(1) - smoothing) * x[label]
                                 : T(__longlong_as_double(0x7ff8000000000000LL));  // NaN
        }
        T* g = dlogits + (long long)b * K;
        for (int k = lane; k < K; k += 32) {
            const T t = off + (k == label ? T(1) - smoothing : T(0));
            g[k] = (ex(x[k] - lse) - t) * invB;
        }
    }
}
