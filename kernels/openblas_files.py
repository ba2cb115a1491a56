"""Where a wheel keeps its private OpenBLAS: `<package>.libs/` beside the package (Linux, Windows)
or `<package>/.dylibs/` (macOS). NumPy's and SciPy's wheels each bundle one. A plain module, so
that code which must not load minivit's CPU kernels (minivit.train.runinfo) can use it too:
importing kernels.cpu changes the process (kernels/cpu/process.py)."""
from __future__ import annotations

import glob
import importlib.util
import os


def bundled_openblas(package: str) -> list[str]:
    """The OpenBLAS files `package`'s wheel bundles, sorted; [] if it bundles none or is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    here = list(spec.submodule_search_locations)[0]
    return sorted(glob.glob(os.path.join(here, os.pardir, f"{package}.libs", "*openblas*"))
                  + glob.glob(os.path.join(here, ".dylibs", "*openblas*")))
