// Warp reductions shared by the .cu files here. A .cu file includes this header by name
// (#include "reduce.cuh"): runtime.py passes this folder to NVRTC as an include path (-I), and
// adds the header's digest to the source it hands CuPy, whose on-disk kernel cache hashes the
// source but not the headers it includes.
//
// Butterfly reductions: after log2(LANES) exchanges (__shfl_xor_sync with offsets LANES/2 .. 1),
// every lane holds the sum (or max) over its group of LANES consecutive lanes: the whole warp for
// LANES = 32, each half (lanes 0-15, 16-31) for LANES = 16. All 32 lanes of the warp must call them.
#pragma once

template <int LANES = 32, typename T> __device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int offset = LANES / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <int LANES = 32, typename T> __device__ __forceinline__ T warp_max(T v)
{
#pragma unroll
    for (int offset = LANES / 2; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
