// The math functions the .cu files here call, one name for float and double (included by name,
// as reduce.cuh is: see there): ex = exp, ex2 = exp2, ln = log, and -infinity in either type.
// float calls CUDA's single-precision functions (expf, ...), within the few-ulp bounds the CUDA C++
// Programming Guide lists; double calls the double-precision ones.
#pragma once

template <typename T> __device__ __forceinline__ T ex(T x);
template <> __device__ __forceinline__ float ex<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double ex<double>(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T ex2(T x);
template <> __device__ __forceinline__ float ex2<float>(float x) { return exp2f(x); }
template <> __device__ __forceinline__ double ex2<double>(double x) { return exp2(x); }
template <typename T> __device__ __forceinline__ T ln(T x);
template <> __device__ __forceinline__ float ln<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double ln<double>(double x) { return log(x); }
// -inf from its bit pattern (exact in float and double; no <limits> under NVRTC)
template <typename T> __device__ __forceinline__ T neg_inf() { return T(-__longlong_as_double(0x7ff0000000000000LL)); }
