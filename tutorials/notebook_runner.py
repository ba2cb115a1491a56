"""Run a tutorial as Jupyter runs it: the one runner of tests/test_tutorials.py and build_site.py.

A tutorial (tutorials/NN_name.py, jupytext percent format) is converted with jupytext and run
cell by cell with nbclient in a fresh kernel named "python3". `kernel_environment` makes that
kernel this very interpreter (a kernelspec written to a private JUPYTER_PATH) with the repository
importable, so the tests and the course site run the notebooks the same way:

    with kernel_environment(tmp, MINIVIT_TUTORIAL_OUT=str(tmp / "out")):
        nb = run_cells(read_notebook(path), cwd=path.parent, timeout=60)

`run_cells` raises `CellFailed` (an nbclient CellExecutionError) naming the cell that failed.
Nothing here writes outside the folder given to `kernel_environment`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL_NAME = "python3"


def read_notebook(path_or_text):
    """A notebook from a tutorial file (a Path) or from percent-format text (a str)."""
    import jupytext

    if isinstance(path_or_text, Path):
        return jupytext.read(path_or_text)
    return jupytext.reads(path_or_text, fmt="py:percent")


@contextlib.contextmanager
def kernel_environment(folder: Path, **env):
    """Inside the block, a kernel named "python3" runs this interpreter (kernelspec written under
    `folder`), with the repository on PYTHONPATH; each keyword sets that environment variable
    for the kernel (None removes it). The previous environment is restored afterwards."""
    from ipykernel.kernelspec import write_kernel_spec

    share = Path(folder) / "jupyter"
    spec_dir = share / "kernels" / KERNEL_NAME
    if not spec_dir.exists():
        write_kernel_spec(spec_dir)  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    env = {"JUPYTER_PATH": str(share),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           **env}
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            _set(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set(name, value)


def _set(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)


def make_client(nb, cwd: Path, timeout: float):
    """An nbclient client for `nb` in the "python3" kernel, working directory `cwd`; `timeout`
    is per cell, in seconds."""
    from nbclient import NotebookClient

    return NotebookClient(nb, timeout=int(timeout), kernel_name=KERNEL_NAME,
                          resources={"metadata": {"path": str(cwd)}})


try:
    from nbclient.exceptions import CellExecutionError as _CellError
except ImportError:  # nbclient is needed to run cells, not to import this module
    _CellError = Exception


class CellFailed(_CellError):
    """A cell raised, timed out or killed its kernel: `index` (0-based) and `cell` say which,
    `ename` and `evalue` what; str() is nbclient's message, traceback included."""

    def __init__(self, traceback: str, ename: str, evalue: str, index: int = -1, cell=None):
        Exception.__init__(self, traceback)
        self.traceback, self.ename, self.evalue = traceback, ename, evalue
        self.index, self.cell = index, cell


def run_cells(nb, cwd: Path, timeout: float, before=None, **kernel_options):
    """Run every cell of `nb` in one fresh kernel, in order, keeping the outputs in `nb`, and
    return `nb`. `before(client, index, cell)`, if given, runs before each cell (the tests run a
    learner copy's stub there); `kernel_options` go to the kernel's start (e.g. stderr=...).
    The first cell that fails raises CellFailed."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = make_client(nb, cwd, timeout)
    with client.setup_kernel(**kernel_options):
        for index, cell in enumerate(nb.cells):
            if before is not None:
                before(client, index, cell)
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                raise CellFailed(getattr(error, "traceback", None) or str(error),
                                 getattr(error, "ename", type(error).__name__),
                                 getattr(error, "evalue", str(error)), index, cell) from error
    return nb


def image_outputs(nb) -> int:
    """How many figures a reader sees: outputs carrying an image (display_data or a cell's result)."""
    return sum(1 for cell in nb.cells for out in cell.get("outputs", [])
               if any(k.startswith("image/") for k in out.get("data", {})))
