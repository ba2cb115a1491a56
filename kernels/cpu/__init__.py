"""Numba CPU kernels: numbered versions per op, each module registering its versions on import.

Every module opens with the story of its versions (idea and measured result), in the manner of
llm.c's dev/cuda. Importing this package needs Numba; without it the registry warns (naming the
ImportError) and runs the NumPy references instead (kernels/registry.py, BACKENDS).

Loading this package is when minivit changes the process (Numba's threading layer, glibc's malloc
thresholds): process.py lists every such change, when it happens and how to opt out.
"""
import numba  # noqa: F401  (an ImportError here is the registry's "cpu backend failed" warning)

from . import process  # noqa: E402

process.apply()  # before the first parallel launch: see process.py

from . import attention, conv, dense, loss, normact, optim  # noqa: E402,F401  (each registers its versions)
