"""Run a tutorial's cells in this process, with one exercise's solution changed, to show that the
exercise's check cell catches a solution with a step missing.

The notebook tests (test_tutorials.py) run every notebook in a real Jupyter kernel with the
solutions as written. Those runs prove that a correct solution passes; they cannot prove that the
check after it would fail on a wrong one. `check_fails_without` does that: it executes the
notebook's code cells in order in one namespace (the working directory tutorials/, outputs under a
temporary MINIVIT_TUTORIAL_OUT, as in Jupyter), replaces text in the chosen solution cell, runs
the check cell right after it, and returns the exception that check raised.

    err = check_fails_without("02_autograd", 3, "out.grad * (1 - t**2)", "out.grad", tmp_path)
    assert isinstance(err, AssertionError)

Cells after the check are not run. `display` is defined as a no-op, so cells that show figures
run outside IPython.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
# CIFAR-10 for the notebooks that show its test images: MINIVIT_CIFAR10 where the tests' caller set
# it (the official batches or an image-folder tree), else the JPEG tree beside the repository.
CIFAR10 = Path(os.environ.get("MINIVIT_CIFAR10") or ROOT.parent / "shared" / "data" / "cifar10-jpeg")


def has_cifar10() -> bool:
    return (CIFAR10 / "test").is_dir() or (CIFAR10 / "test_batch").is_file()



def load_tutorial_module(name: str):
    """tutorials/<name>.py as a module, without writing a __pycache__ into tutorials/."""
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


learner_copy = load_tutorial_module("learner_copy")  # the cell splitter the learner copies use


def notebook_path(name: str) -> Path:
    """'02', '02_autograd' or '02_autograd.py' -> tutorials/02_autograd.py."""
    found = [p for p in learner_copy.notebooks(TUTORIALS) if p.stem == name or p.name == name
             or p.name.startswith(name + "_")]
    assert len(found) == 1, f"no single tutorial matches {name!r}: {found}"
    return found[0]


def code_cells(path: Path) -> list[tuple[bool, str]]:
    """[(is_solution, source)] of the notebook's code cells, in order (markdown cells dropped)."""
    out = []
    for cell in learner_copy.split_cells(path.read_text())[1:]:
        header = cell[0]
        if "[markdown]" in header:
            continue
        out.append((bool(learner_copy.SOLUTION.match(header)), "".join(cell[1:])))
    return out


def check_fails_without(notebook: str, exercise: int, old: str, new: str, tmp_path,
                        count: int = 1) -> BaseException | None:
    """Run `notebook` up to the check cell of its `exercise`-th solution (1-based), with `old`
    replaced by `new` in that solution (`old` must occur exactly `count` times there). Returns the
    exception the check cell raised, or None if it passed. An exception in any earlier cell, or in
    the changed solution itself, propagates (a broken notebook is not a caught mistake)."""
    def change(source):
        assert source.count(old) == count, f"{old!r} occurs {source.count(old)} times in exercise {exercise}"
        assert old != new
        return source.replace(old, new)

    return _run(notebook, exercise, change, tmp_path)


def check_passes_as_written(notebook: str, exercise: int, tmp_path) -> None:
    """The control for check_fails_without: the unchanged solution passes its check (raises if not)."""
    err = _run(notebook, exercise, lambda source: source, tmp_path)
    if err is not None:
        raise err


def _run(notebook, exercise, change, tmp_path):
    path = notebook_path(notebook)
    cells = code_cells(path)
    solutions = [i for i, (is_sol, _) in enumerate(cells) if is_sol]
    assert 1 <= exercise <= len(solutions), f"{path.name} has {len(solutions)} exercises, not {exercise}"
    at = solutions[exercise - 1]
    solution = change(cells[at][1])
    namespace = {"__name__": "__main__", "display": lambda *a, **k: None}
    previous_cwd, previous_out = os.getcwd(), os.environ.get("MINIVIT_TUTORIAL_OUT")
    os.environ["MINIVIT_TUTORIAL_OUT"] = str(Path(tmp_path) / "out")
    os.chdir(TUTORIALS)
    try:
        for i, (_, src) in enumerate(cells[:at]):
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), namespace)
        exec(compile(solution, f"{path.name}[exercise {exercise}]", "exec"), namespace)
        try:
            exec(compile(cells[at + 1][1], f"{path.name}[check of exercise {exercise}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001  the point: which exception the check raised
            return e
        return None
    finally:
        os.chdir(previous_cwd)
        if previous_out is None:
            os.environ.pop("MINIVIT_TUTORIAL_OUT", None)
        else:
            os.environ["MINIVIT_TUTORIAL_OUT"] = previous_out
