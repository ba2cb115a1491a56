"""Each exercise of tutorials 07, 08, 09 and 14 has a check that catches a solution with one step
missing (the notebook runs in test_tutorials.py prove that the solutions as written pass).

07, 08 and 09 look at the course's CIFAR-10 model, so they need CIFAR-10 test images:
MINIVIT_CIFAR10 when the tests' caller set it, else the JPEG tree beside the repository; without
either those cases skip.
"""
from __future__ import annotations

import pytest

from notebook_harness import CIFAR10, check_fails_without, has_cifar10


@pytest.fixture(scope="module")
def decode_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("decode_cache")  # decoded once for the module, never the user's cache


@pytest.fixture
def cifar10(monkeypatch, decode_cache):
    if not has_cifar10():
        pytest.skip(f"needs CIFAR-10 test images: {CIFAR10} is absent (set MINIVIT_CIFAR10)")
    monkeypatch.setenv("MINIVIT_CIFAR10", str(CIFAR10))
    monkeypatch.setenv("MINIVIT_CACHE", str(decode_cache))


CASES = [
    # (notebook, exercise, text of the solution, what replaces it: the step a learner might miss)
    pytest.param("07", 1, "e = e / np.linalg.norm(e, axis=1, keepdims=True)\n", "\n", id="07-1-no-normalisation"),
    pytest.param("07", 2, "a = a / a.sum(axis=-1, keepdims=True)\n", "\n", id="07-2-no-renormalisation"),
    pytest.param("07", 3, "A = (A + np.eye(N)) / 2  # the residual connection\n", "\n", id="07-3-no-residual"),
    pytest.param("08", 1, "pixels * n_old - 0.5", "pixels * n_old", id="08-1-no-half-cell-shift"),
    pytest.param("08", 1, "np.clip(pixels * n_old - 0.5, 0, n_old - 1)", "(pixels * n_old - 0.5)",
                 id="08-1-no-clamp"),
    pytest.param("08", 2, "return lo, np.minimum(lo + 1, n_old - 1), c - lo", "return lo, lo, c - lo",
                 id="08-2-one-neighbour-only"),
    pytest.param("08", 3, "v = g if t == 0 else momentum * v + g", "v = g", id="08-3-no-momentum"),
    pytest.param("09", 1, "W_dual = Xtr.T @ np.linalg.solve(", "W_dual = np.linalg.solve(",
                 id="09-1-no-X-transpose-in-front"),
    pytest.param("09", 1, "+ 1.0 * np.eye(len(Xtr))", "+ 0.1 * np.eye(len(Xtr))", id="09-1-other-lambda"),
]
FAST_CASES = [  # 14 needs no data
    pytest.param("14", 1, ".transpose(0, 2, 1, 3).reshape(B * gw, gh, D)", ".reshape(B * gw, gh, D)",
                 id="14-1-reshape-without-transpose"),
    pytest.param("14", 2, "randomised = corrupted & (u >= 0.8) & (u < 0.9)", "randomised = corrupted & (u >= 0.8)",
                 id="14-2-nothing-kept"),
    pytest.param("14", 2, "np.where(randomised, other, own)", "other", id="14-2-every-patch-gets-a-source"),
]


@pytest.mark.parametrize("notebook,exercise,old,new", CASES)
def test_the_check_fails_on_a_solution_with_a_step_missing(notebook, exercise, old, new, cifar10, tmp_path):
    err = check_fails_without(notebook, exercise, old, new, tmp_path)
    assert isinstance(err, AssertionError), err


@pytest.mark.parametrize("notebook,exercise,old,new", FAST_CASES)
def test_the_check_fails_on_a_solution_with_a_step_missing_no_data(notebook, exercise, old, new, tmp_path):
    err = check_fails_without(notebook, exercise, old, new, tmp_path)
    assert isinstance(err, AssertionError), err
