"""The exercises of tutorials 01-05 check what they claim to check, and their learner copies give
nothing away.

For every exercise: its solution as written passes its check cell (the control), and the same
solution with one step missing or wrong makes that check cell raise an AssertionError (a
backward pass without one term, attention without its scale, a training step without its
clip). tests/notebook_harness.py runs each notebook in this process up to the check cell, so
these tests need no Jupyter kernel. Then, for the learner copies of 01-05: no line of any
solution's code appears anywhere in the copy (a few generic lines that the given code shows
anyway are listed below), and each stub raises NotImplementedError with a message that names
its exercise and what to define, each name once. tests/test_tutorials.py runs the notebooks in
a kernel and checks the copies cell by cell; this file adds what that cannot prove.
"""
from __future__ import annotations

import re

import pytest

from notebook_harness import TUTORIALS, check_fails_without, check_passes_as_written, learner_copy, notebook_path

NOTEBOOKS = ["01_patches", "02_autograd", "03_attention", "04_encoder", "05_training"]

# What each stub asks for, in order: learner_copy reads it from the solution's definitions.
STUB_MESSAGES = {
    "01_patches": ["define patchify", "define conv2d"],
    "02_autograd": ["define value_pow, value_exp and value_tanh", "define numerical_grad", "define softmax_backward",
                    "define layernorm_backward", "define gelu_backward", "define attention_backward"],
    "03_attention": ["define attention", "define qk_variance and attention_scale", "define multi_head_attention"],
    "04_encoder": ["define block_forward", "define block_params", "define count_params"],
    "05_training": ["define lr_by_hand", "define train_step"],
}

# Solution lines the notebook's given code also contains (shape unpacking, the closing lines of a
# Value op, an optimiser step shown earlier): they give nothing away.
SHARED_LINES = {
    "01_patches": {"B, C, H, W = x.shape", "gh, gw = H // P, W // P"},
    "02_autograd": {"out._backward = backward", "return out"},
    "05_training": {"opt.step()", "schedule.step()"},
}

# (notebook, exercise, text in the solution, what replaces it): one step missing or wrong each.
MISSING_STEP = [
    ("01_patches", 1, "    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)\n", ""),  # no transpose
    ("01_patches", 2, "window, w) + b", "window, w)"),  # no bias
    ("01_patches", 2, "window = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]",
     "window = x[:, :, i:i + k, j:j + k]"),  # windows that ignore the stride
    ("02_autograd", 1, "(1.0 - t * t) * out.grad", "out.grad"),  # tanh without its derivative
    ("02_autograd", 1, "a.grad += e * out.grad", "a.grad = e * out.grad"),  # exp: assigned, not accumulated
    ("02_autograd", 1, "k * a.data ** (k - 1)", "a.data ** (k - 1)"),  # pow without the factor k
    ("02_autograd", 2, "        x[i] = old\n", ""),  # the element is not put back
    ("02_autograd", 3, "y * (g - (g * y).sum(axis=-1, keepdims=True))", "y * g"),  # softmax: no Jacobian term
    ("02_autograd", 4, " - xhat * (gh * xhat).mean(axis=-1, keepdims=True)", ""),  # LayerNorm: no path through r
    ("02_autograd", 4, "gh - gh.mean(axis=-1, keepdims=True)", "gh"),  # LayerNorm: no path through mu
    ("02_autograd", 4, "(rows * xhat.reshape(rows.shape)).sum(axis=0)", "rows.sum(axis=0)"),  # dw without xhat
    ("02_autograd", 5, " + x * pdf", ""),  # GELU: half of the product rule
    ("02_autograd", 6, "softmax_backward(p, dp) * scale", "softmax_backward(p, dp)"),  # attention: no scale
    ("02_autograd", 6, "ds = softmax_backward(p, dp)", "ds = dp"),  # attention: the softmax skipped
    ("03_attention", 1, " / np.sqrt(q.shape[-1])", ""),  # attention without 1/sqrt(hd)
    ("03_attention", 2, "hd * var_q * var_k", "hd * var_q"),  # the variance without var_k
    ("03_attention", 2, "1.0 / np.sqrt(hd)", "1.0 / hd"),  # the scale that overcorrects
    ("03_attention", 3, "return y @ attn.proj.weight.data.T + attn.proj.bias.data, weights", "return y, weights"),
    ("03_attention", 3, "y.transpose(0, 2, 1, 3).reshape(B, N, D)", "y.reshape(B, N, D)"),  # heads mixed with tokens
    ("04_encoder", 1, "return z + block.mlp(block.norm2(z))", "return block.mlp(block.norm2(z))"),  # no residual
    ("04_encoder", 1, "block.attn(block.norm1(z))", "block.norm1(block.attn(z))"),  # post-norm, not Eq. 2
    ("04_encoder", 2, "norms = 2 * 2 * D", "norms = 0"),  # the LayerNorms forgotten
    ("04_encoder", 2, "(D * hidden + hidden)", "(D * hidden)"),  # fc1 without its bias
    ("04_encoder", 3, "tokens = D + (1 + Np) * D", "tokens = (1 + Np) * D"),  # no class token
    ("05_training", 1, "base_lr * (step + 1) / warmup", "base_lr * step / warmup"),  # warm-up off by one
    ("05_training", 1, "min_lr + (base_lr - min_lr) *", "base_lr *"),  # the cosine ends at 0, not min_lr
    ("05_training", 2, "optim.clip_grad_norm_(model.parameters(), max_norm)",
     "optim.clip_grad_norm_(model.parameters(), float('inf'))"),  # the norm measured, never clipped
    ("05_training", 2, "    schedule.step()\n", ""),  # the learning rate never changes
    ("05_training", 2, "    opt.zero_grad()\n", ""),  # gradients add up over steps
]

EXERCISES = [(name, n) for name in NOTEBOOKS for n in range(1, len(STUB_MESSAGES[name]) + 1)]


def _solutions(name):
    """[(number, solution source)] of a notebook's exercises, in order."""
    cells = learner_copy.split_cells(notebook_path(name).read_text())[1:]
    solutions = ["".join(cell[1:]) for cell in cells if learner_copy.SOLUTION.match(cell[0])]
    return list(enumerate(solutions, start=1))


def _code_lines(source):
    return [line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# ---- every check catches a step missing ------------------------------------------------------

def test_every_exercise_has_a_missing_step_case():
    assert {(name, n) for name, n, *_ in MISSING_STEP} == set(EXERCISES)


@pytest.mark.parametrize("name,exercise", EXERCISES, ids=[f"{n}-ex{e}" for n, e in EXERCISES])
def test_the_solution_as_written_passes_its_check(name, exercise, tmp_path):
    check_passes_as_written(name, exercise, tmp_path)


@pytest.mark.parametrize("name,exercise,old,new", MISSING_STEP,
                         ids=[f"{n}-ex{e}-{i}" for i, (n, e, *_) in enumerate(MISSING_STEP)])
def test_the_check_fails_on_a_solution_with_a_step_missing(name, exercise, old, new, tmp_path):
    err = check_fails_without(name, exercise, old, new, tmp_path)
    assert isinstance(err, AssertionError), f"{name} exercise {exercise}: the check raised {err!r}, not an assertion"


# ---- the learner copies --------------------------------------------------------------------

def test_the_stub_messages_are_known_for_every_exercise():
    for name in NOTEBOOKS:
        assert len(_solutions(name)) == len(STUB_MESSAGES[name]), name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_learner_copy_contains_no_line_of_any_solution(name):
    """Not in the stub, and not anywhere else in the copy (prose, given code, check cells)."""
    path = notebook_path(name)
    copy, _ = learner_copy.learner_text(path.read_text(), path.stem)
    copy_lines = {line.strip() for line in copy.splitlines()}
    for number, source in _solutions(name):
        leaked = [line for line in _code_lines(source) if line in copy_lines and line not in SHARED_LINES.get(name, ())]
        assert not leaked, f"{name} exercise {number}: solution lines in the learner copy: {leaked}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_stub_raises_not_implemented_error_naming_its_exercise_and_what_to_define(name):
    path = notebook_path(name)
    copy, count = learner_copy.learner_text(path.read_text(), path.stem)
    assert count == len(STUB_MESSAGES[name])
    stubs = ["".join(cell[1:]) for cell in learner_copy.split_cells(copy)[1:] if '"exercise"' in cell[0]]
    assert len(stubs) == count
    for number, (stub, what) in enumerate(zip(stubs, STUB_MESSAGES[name]), start=1):
        with pytest.raises(NotImplementedError) as info:
            exec(compile(stub, f"{name} stub {number}", "exec"), {})
        assert str(info.value) == f"Exercise {number} of {name}: {what}"
        names = re.findall(r"\w+", what.removeprefix("define "))
        assert len(names) == len(set(names)), f"a name listed twice: {what}"
        assert f"# Exercise {number}: write your solution here; it should {what}." in stub


def test_stub_text_names_each_defined_name_once_and_says_which_is_a_class():
    code = ("class Value:\n    pass\n\n\ndef value_mul(a, b):\n    return a\n\n\n"
            "Value.__mul__ = Value.__rmul__ = value_mul\n"  # changes Value, defines nothing
            "x, (y, *z) = 1, (2, 3)\nx += 1\ntable = {}\ntable['a'] = 1\nvalue_mul = value_mul\n")
    assert learner_copy.definitions(code) == [("Value", "class"), ("value_mul", "function"), ("x", "value"),
                                              ("y", "value"), ("z", "value"), ("table", "value")]
    assert learner_copy.defined_names(code) == ["Value", "value_mul", "x", "y", "z", "table"]
    assert learner_copy.what_to_define(code) == "define Value (a class), value_mul, x, y, z and table"
    assert learner_copy.what_to_define("class Value:\n    pass\ndef value_mul(a, b):\n    pass\n") == \
        "define Value (a class) and value_mul"
    assert learner_copy.what_to_define("Value.tanh = value_tanh\nprint(1)\n") == "complete this cell"
    cell = ['# %% tags=["solution"]\n', "# keep this instruction\n", code]
    out = learner_copy.stub(cell, 2, "02_autograd")
    assert out[0] == '# %% tags=["exercise"]\n' and out[1] == "# keep this instruction\n"
    assert out[3] == ('raise NotImplementedError("Exercise 2 of 02_autograd: '
                      'define Value (a class), value_mul, x, y, z and table")\n')


def test_these_are_the_tutorials_01_to_05():
    assert [notebook_path(n).name for n in NOTEBOOKS] == [p.name for p in learner_copy.notebooks(TUTORIALS)[:5]]
