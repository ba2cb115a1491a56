// Dropout and drop-path masks drawn on the device, for kernels/gpu/dropout.py.
//
// A counter-based generator (as JAX's and Philox's): element i of a mask is a hash of (seed, i),
// SplitMix64's finaliser (Steele et al. 2014), so no generator state lives on the device and a
// mask needs nothing but a seed, which minivit draws from its host generator (minivit.rng):
// checkpoints save that generator, so a resumed run draws the same masks. The top 53 bits make
// a uniform u in [0, 1); the element is kept (set to scale = 1 / (1 - p)) when u >= p.
// dropout.py has the same hash in NumPy, against which the tests compare this kernel bit for bit.

template <typename T>
__global__ void keep_mask(T* __restrict__ mask, long long n, unsigned long long seed, double p, T scale)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        const double u = double(z >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
        mask[i] = u >= p ? scale : T(0);
    }
}
