"""The exercises of tutorials/15_data_and_inductive_bias.py: each check cell passes on the solution
as written and fails (AssertionError) on a solution with one step missing or altered."""
from __future__ import annotations

import pytest

from notebook_harness import check_fails_without, check_passes_as_written, learner_copy, notebook_path

NOTEBOOK = "15_data_and_inductive_bias"


def test_exercise1_crossings_check_passes_as_written(tmp_path):
    check_passes_as_written(NOTEBOOK, 1, tmp_path)


@pytest.mark.parametrize("old, new", [
    # interpolate the difference linearly in the data size instead of in log(size)
    ("np.exp(logn[i] + t * (logn[i + 1] - logn[i]))",
     "np.exp(logn[i]) + t * (np.exp(logn[i + 1]) - np.exp(logn[i]))"),
    # only the crossings where a - b goes from negative to positive
    ("d[i] * d[i + 1] < 0", "d[i] < 0 < d[i + 1]"),
], ids=["linear_in_size", "upward_only"])
def test_exercise1_crossings_check_fails_with_a_step_missing(tmp_path, old, new):
    err = check_fails_without(NOTEBOOK, 1, old, new, tmp_path)
    assert isinstance(err, AssertionError), err


def test_exercise2_shift_error_check_passes_as_written(tmp_path):
    check_passes_as_written(NOTEBOOK, 2, tmp_path)


@pytest.mark.parametrize("old, new", [
    # shift the feature map by the pixels, forgetting the network's stride
    ("k = pixels // stride", "k = pixels"),
    # compare every column even when a margin is asked for (the border and the wrapped columns)
    ("if margin:", "if False:"),
    # compare with the original feature map where it was, not moved
    ("moved = np.roll(before, k, axis=-1)", "moved = before"),
], ids=["ignores_stride", "ignores_margin", "features_not_moved"])
def test_exercise2_shift_error_check_fails_with_a_step_missing(tmp_path, old, new):
    err = check_fails_without(NOTEBOOK, 2, old, new, tmp_path)
    assert isinstance(err, AssertionError), err


def _solutions():
    cells = learner_copy.split_cells(notebook_path(NOTEBOOK).read_text())[1:]
    return ["".join(cell[1:]) for cell in cells if learner_copy.SOLUTION.match(cell[0])]


def test_the_learner_copy_contains_no_line_of_either_solution_and_its_stubs_name_what_to_define():
    path = notebook_path(NOTEBOOK)
    copy, count = learner_copy.learner_text(path.read_text(), path.stem)
    assert count == 2
    copy_lines = {line.strip() for line in copy.splitlines()}
    for number, source in enumerate(_solutions(), start=1):
        code = [line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        leaked = [line for line in code if line in copy_lines]
        assert not leaked, f"exercise {number}: solution lines in the learner copy: {leaked}"
    stubs = ["".join(cell[1:]) for cell in learner_copy.split_cells(copy)[1:] if '"exercise"' in cell[0]]
    for number, (stub, what) in enumerate(zip(stubs, ["define crossings", "define shift_error"]), start=1):
        with pytest.raises(NotImplementedError, match=f"^Exercise {number} of {NOTEBOOK}: {what}$"):
            exec(compile(stub, f"stub {number}", "exec"), {})
