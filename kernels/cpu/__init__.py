"""Numba CPU kernels: numbered versions per op, each module registering its versions on import.

Every module opens with the story of its versions (idea and measured result), in the manner of
llm.c's dev/cuda. Importing this package needs Numba; without it the registry warns (naming the
ImportError) and runs the NumPy references instead (kernels/registry.py, BACKENDS).
"""
import os

# Read by libgomp when Numba starts its OpenMP pool (the first parallel launch, not import): pool
# threads sleep at once instead of spinning between launches. With spinning threads on a busy
# 2-core machine one prange launch cost either 3 us or 12 ms (median 12 ms), as the spinning pool
# fought OpenBLAS's threads; passive costs a steady ~11 us.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402,F401  (an ImportError here is the registry's "cpu backend failed" warning)

from . import attention, dense, loss, normact, optim  # noqa: E402,F401  (each registers its versions)
