"""Each exercise of tutorials 10-13 is checked strongly enough to catch a solution with one step
missing: for every exercise, the solution as written passes its check cell (the control), and the
same solution with one step removed or altered makes the check raise an AssertionError. The
notebooks run in this process through tests/notebook_harness.py, except 13: its first cell asks
XLA for 8 host devices, which works only before JAX starts, so its checks run in a fresh Python.

The one exercise of 12 (array code for both devices) is checked on the CPU; 12's GPU cells are not
exercises and skip without a GPU.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_harness import ROOT, check_fails_without, check_passes_as_written

# (notebook, exercise number, text in the solution, its replacement, the step that goes missing)
MISSING_STEP = [
    ("10_scaling", 1, "2 * N * N * D", "N * N * D", "one of attention's two products (q k^T, weights @ v)"),
    ("10_scaling", 2, "(3 + 1 + 2 * mlp_ratio)", "(3 + 1 + mlp_ratio)", "the MLP's second layer"),
    ("10_scaling", 2, "attention_per_token_pair = 2 * D", "attention_per_token_pair = D",
     "one of attention's two products"),
    ("11_kernels", 1, "ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))", "ds = p * dp",
     "the softmax Jacobian's row-sum term"),
    ("11_kernels", 1, "s = scale * (q @ k.swapaxes(-1, -2))", "s = q @ k.swapaxes(-1, -2)",
     "the 1/sqrt(hd) scale in the forward pass"),
    ("11_kernels", 2, "acc = acc * correction[:, None] + p @ v[j:j + block]", "acc = acc + p @ v[j:j + block]",
     "rescaling the accumulator when the maximum changes"),
    ("11_kernels", 2, "l = l * correction + p.sum(axis=1)", "l = l + p.sum(axis=1)",
     "rescaling the running sum when the maximum changes"),
    ("12_gpu", 1, "erf(x / xp.sqrt(xp.asarray(2.0, dtype=x.dtype)))", "erf(x)",
     "the 1/sqrt(2) inside erf (Phi through erf)"),
]
MISSING_STEP_13 = [
    ("13_jax", 1, " / jnp.sqrt(hd)", "", "the 1/sqrt(hd) scale of the scores"),
    ("13_jax", 2, "np.mean(g, axis=0)", "np.sum(g, axis=0)", "dividing the summed slice gradients by n"),
]
CONTROLS = sorted({(nb, ex) for nb, ex, *_ in MISSING_STEP})


@pytest.fixture(autouse=True)
def kernel_table_restored(restore_kernel_choices):
    """The notebooks register kernels ("count", "tutorial_numpy"): take them out again afterwards."""
    from kernels import registry

    registry._load_all()
    saved = {op: dict(impls) for op, impls in registry._TABLE.items()}
    yield
    for op, impls in saved.items():
        registry._TABLE[op].clear()
        registry._TABLE[op].update(impls)


def test_every_exercise_of_10_to_13_has_a_missing_step_case():
    from notebook_harness import code_cells, notebook_path

    for name in ("10_scaling", "11_kernels", "12_gpu", "13_jax"):
        count = sum(is_solution for is_solution, _ in code_cells(notebook_path(name)))
        covered = {ex for nb, ex, *_ in MISSING_STEP + MISSING_STEP_13 if nb == name}
        assert covered == set(range(1, count + 1)), (name, count, covered)


@pytest.mark.parametrize("notebook, exercise", CONTROLS, ids=[f"{nb}-ex{ex}" for nb, ex in CONTROLS])
def test_the_solution_as_written_passes_its_check(notebook, exercise, tmp_path):
    check_passes_as_written(notebook, exercise, tmp_path)


@pytest.mark.parametrize("notebook, exercise, old, new, step", MISSING_STEP,
                         ids=[f"{nb}-ex{ex}-{i}" for i, (nb, ex, *_) in enumerate(MISSING_STEP)])
def test_the_check_fails_without_one_step(notebook, exercise, old, new, step, tmp_path):
    err = check_fails_without(notebook, exercise, old, new, tmp_path)
    assert isinstance(err, AssertionError), f"{notebook} exercise {exercise} without {step}: {err!r}"


# ---------------------------------------------------------------- 13, in a fresh Python
CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from notebook_harness import check_fails_without, check_passes_as_written
cases, out, tmp = json.loads({cases!r}), {out!r}, {tmp!r}
results = {{}}
for key, exercise, old, new in cases:
    try:
        if old is None:
            check_passes_as_written("13_jax", exercise, tmp)
            results[key] = "passed"
        else:
            err = check_fails_without("13_jax", exercise, old, new, tmp)
            results[key] = "passed" if err is None else type(err).__name__ + ": " + str(err)[:200]
    except BaseException as e:  # noqa: BLE001  reported to the test, which fails with it
        results[key] = "raised " + type(e).__name__ + ": " + str(e)[:500]
with open(out, "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def results_13(tmp_path_factory):
    """Run every check of notebook 13 in one fresh Python (JAX started by the notebook itself)."""
    pytest.importorskip("jax", reason="notebook 13 needs JAX: pip install -e '.[jax]'")
    tmp = tmp_path_factory.mktemp("nb13")
    cases = [(f"control-{ex}", ex, None, None) for ex in (1, 2)]
    cases += [(f"missing-{i}", ex, old, new) for i, (_, ex, old, new, _) in enumerate(MISSING_STEP_13)]
    out = tmp / "results.json"
    script = CHILD.format(tests=str(ROOT / "tests"), cases=json.dumps(cases), out=str(out), tmp=str(tmp))
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"the child Python failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return json.loads(Path(out).read_text())


@pytest.mark.parametrize("exercise", [1, 2])
def test_13_the_solution_as_written_passes_its_check(results_13, exercise):
    assert results_13[f"control-{exercise}"] == "passed", results_13[f"control-{exercise}"]


@pytest.mark.parametrize("i", range(len(MISSING_STEP_13)),
                         ids=[f"13_jax-ex{ex}-{i}" for i, (_, ex, *_) in enumerate(MISSING_STEP_13)])
def test_13_the_check_fails_without_one_step(results_13, i):
    _, exercise, _, _, step = MISSING_STEP_13[i]
    got = results_13[f"missing-{i}"]
    assert got.startswith("AssertionError"), f"13_jax exercise {exercise} without {step}: {got}"
