"""Numba CPU kernels: numbered versions per op, each module registering its versions on import.

Every module opens with the story of its versions (idea and measured result), in the manner of
llm.c's dev/cuda. Importing this package needs Numba; without it the registry warns (naming the
ImportError) and runs the NumPy references instead (kernels/registry.py, BACKENDS).
"""
import numba  # noqa: F401  (an ImportError here is the registry's "cpu backend failed" warning)

from .threads import choose_threading_layer  # noqa: E402

choose_threading_layer()  # before the first parallel launch: see threads.py

from .memory import apply_default as _keep_freed_memory  # noqa: E402

_keep_freed_memory()  # arrays from memory already touched, not fresh pages: see memory.py

from . import attention, conv, dense, loss, normact, optim  # noqa: E402,F401  (each registers its versions)
