// Batched matrix products for kernels/gpu/dense.py: C[l] = A[l] @ B[l] (+ bias), l < L.
//
//   A[l] (M, K), B[l] (K, N), C[l] (M, N), bias (N,) or none; T is float or double.
//   Every operand is read through strides in elements (batch, row, column), so a transposed
//   operand (the backward's A^T, B^T) or a broadcast one (batch stride 0) needs no copy.
//   C is written C-contiguous, (L, M, N). The batch index runs over blockIdx.z in a grid-stride
//   loop, so L may exceed the grid's z limit (65535).
//
// Versions (the story and the measurements are in dense.py):
//   matmul_v1  one thread per element of C, K loads of A and of B from global memory each
//   matmul_v2  16 x 16 tiles of A and B in shared memory: each element read once per tile
//   matmul_v3  128 x 128 tiles, 8 deep, 256 threads computing 8 x 8 outputs each in registers

template <typename T>
__global__ void matmul_v1(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
                          const T* __restrict__ bias, int has_bias, int L, int M, int N, int K,
                          long long sab, long long sam, long long sak,
                          long long sbb, long long sbk, long long sbn)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // consecutive threads: consecutive columns
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    for (int l = blockIdx.z; l < L; l += gridDim.z) {
        const T* a = A + l * sab + m * sam;
        const T* b = B + l * sbb + n * sbn;
        T acc = 0;
        for (int k = 0; k < K; ++k) acc += a[k * sak] * b[k * sbk];
        if (has_bias) acc += bias[n];
        C[((long long)l * M + m) * N + n] = acc;
    }
}

template <typename T>
__global__ void matmul_v2(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
                          const T* __restrict__ bias, int has_bias, int L, int M, int N, int K,
                          long long sab, long long sam, long long sak,
                          long long sbb, long long sbk, long long sbn)
{
    constexpr int TS = 16;
    __shared__ T As[TS][TS + 1];  // +1: a column of the tile lands in 16 different banks
    __shared__ T Bs[TS][TS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int n = blockIdx.x * TS + tx, m = blockIdx.y * TS + ty;
    for (int l = blockIdx.z; l < L; l += gridDim.z) {
        const T* a = A + l * sab;
        const T* b = B + l * sbb;
        T acc = 0;
        for (int k0 = 0; k0 < K; k0 += TS) {
            // every thread loads one element of each tile (zeros past the edges), even those
            // whose own output lies outside C: they must reach the barriers
            As[ty][tx] = (m < M && k0 + tx < K) ? a[m * sam + (k0 + tx) * sak] : T(0);
            Bs[ty][tx] = (k0 + ty < K && n < N) ? b[(k0 + ty) * sbk + n * sbn] : T(0);
            __syncthreads();
#pragma unroll
            for (int k = 0; k < TS; ++k) acc += As[ty][k] * Bs[k][tx];
            __syncthreads();
        }
        if (m < M && n < N) {
            if (has_bias) acc += bias[n];
            C[((long long)l * M + m) * N + n] = acc;
        }
    }
}

// v3: block tile BM x BN = 128 x 128 of C, BK = 8 deep; 256 threads as 16 x 16, thread (ty, tx)
// owns the 8 x 8 outputs at rows ty + 16 i and columns tx + 16 j. Strided, not contiguous, micro
// tiles: a warp's 16 consecutive tx read 16 consecutive words of the B tile (no bank conflict)
// and the 2 values of ty read the same A word (a broadcast). Per k: 8 + 8 shared loads feed 64
// fused multiply-adds. Tile loads coalesce along whichever axis of A (or B) is contiguous.
template <typename T>
__global__ void __launch_bounds__(256) matmul_v3(
    const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
    const T* __restrict__ bias, int has_bias, int L, int M, int N, int K,
    long long sab, long long sam, long long sak,
    long long sbb, long long sbk, long long sbn)
{
    constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
    __shared__ T As[BK][BM + 4];  // A tile stored k-major: As[k][m]
    __shared__ T Bs[BK][BN + 4];  // B tile: Bs[k][n]
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const bool a_rows_contiguous = (sak == 1);  // A row-major: read along k; else along m
    const bool b_rows_contiguous = (sbn == 1);  // B row-major: read along n; else along k
    for (int l = blockIdx.z; l < L; l += gridDim.z) {
        const T* a = A + l * sab;
        const T* b = B + l * sbb;
        T acc[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = 0;
        for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
            for (int r = 0; r < (BM * BK) / 256; ++r) {  // 4 elements of A per thread
                const int e = tid + 256 * r;
                const int mm = a_rows_contiguous ? e / BK : e % BM;
                const int kk = a_rows_contiguous ? e % BK : e / BM;
                const int gm = m0 + mm, gk = k0 + kk;
                As[kk][mm] = (gm < M && gk < K) ? a[gm * sam + gk * sak] : T(0);
            }
#pragma unroll
            for (int r = 0; r < (BN * BK) / 256; ++r) {  // 4 elements of B per thread
                const int e = tid + 256 * r;
                const int nn = b_rows_contiguous ? e % BN : e / BK;
                const int kk = b_rows_contiguous ? e / BN : e % BK;
                const int gn = n0 + nn, gk = k0 + kk;
                Bs[kk][nn] = (gk < K && gn < N) ? b[gk * sbk + gn * sbn] : T(0);
            }
            __syncthreads();
#pragma unroll
            for (int k = 0; k < BK; ++k) {
                T ra[TM], rb[TN];
#pragma unroll
                for (int i = 0; i < TM; ++i) ra[i] = As[k][ty + 16 * i];
#pragma unroll
                for (int j = 0; j < TN; ++j) rb[j] = Bs[k][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int gm = m0 + ty + 16 * i;
            if (gm >= M) continue;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int gn = n0 + tx + 16 * j;
                if (gn < N) C[((long long)l * M + gm) * N + gn] = acc[i][j] + (has_bias ? bias[gn] : T(0));
            }
        }
    }
}
