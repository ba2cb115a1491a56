"""The kernel registry (kernels/registry.py): listing, choosing with use() (scoped and global),
reset(), the error messages, parse_spec, and the MINIVIT_KERNELS environment variable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kernels
from kernels import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_selection():
    """Every test leaves the process-wide selection as it found it."""
    kernels.available()  # load the backends (and MINIVIT_KERNELS) before taking the snapshot
    saved = dict(registry._SELECTED)
    yield
    registry._SELECTED.clear()
    registry._SELECTED.update(saved)


def _default(op):
    return max((i for i in kernels.available(op, device="cpu")), key=lambda i: i.priority).name


def _swappable():
    """(op, a name that is not its default) for an op with several CPU implementations."""
    for op in kernels.OPS:
        names = [i.name for i in kernels.available(op, device="cpu")]
        if len(names) > 1:
            return op, next(n for n in names if n != _default(op))
    pytest.skip("every op has a single CPU implementation")


def test_every_op_has_a_described_reference_implementation():
    for op in kernels.OPS:
        impls = {i.name: i for i in kernels.available(op)}
        assert "reference" in impls, op
        ref = impls["reference"]
        assert ref.op == op and ref.device == "cpu" and callable(ref.forward)
        assert ref.description.strip(), f"{op} reference has no description"
    assert all(i.description.strip() for i in kernels.available()), "every implementation describes itself"


def test_every_implementation_but_the_optimizer_update_has_a_backward():
    for impl in kernels.available():
        if impl.op == "adamw_update":
            assert impl.backward is None
        else:
            assert callable(impl.backward), f"{impl.op}/{impl.name}"


def test_available_lists_the_default_first_then_by_priority():
    kernels.reset()
    for op in kernels.OPS:
        rows = kernels.available(op, device="cpu")
        assert all(r.op == op for r in rows)
        assert [r.priority for r in rows] == sorted((r.priority for r in rows), reverse=True)
        assert rows[0].name == kernels.get(op).name


def test_available_with_an_unknown_op_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'conv3d'.*attention"):
        kernels.available("conv3d")


def test_get_returns_the_highest_priority_implementation_by_default():
    kernels.reset()
    for op in kernels.OPS:
        assert kernels.get(op).name == _default(op)


def test_use_as_a_context_manager_selects_inside_and_restores_on_exit():
    op, other = _swappable()
    kernels.reset()
    with kernels.use(**{op: other}) as ctx:
        assert isinstance(ctx, kernels.use)
        assert kernels.get(op).name == other
        assert kernels.selection()[op] == other
    assert kernels.get(op).name == _default(op)


def test_use_restores_the_previous_choice_after_nesting_and_after_an_exception():
    op, other = _swappable()
    kernels.use(**{op: "reference"})
    with pytest.raises(RuntimeError):
        with kernels.use(**{op: other}):
            with kernels.use(**{op: "reference"}):
                assert kernels.get(op).name == "reference"
            assert kernels.get(op).name == other
            raise RuntimeError("boom")
    assert kernels.get(op).name == "reference"


def test_use_without_with_persists_until_reset():
    op, other = _swappable()
    kernels.use(**{op: other})
    assert kernels.get(op).name == other
    assert kernels.get(op).name == other  # still, on a later call
    kernels.reset()
    assert kernels.get(op).name == _default(op)


def test_use_with_an_unknown_op_raises_listing_the_known_ops():
    with pytest.raises(ValueError, match=r"unknown op 'atention'") as info:
        kernels.use(atention="reference")
    assert all(op in str(info.value) for op in kernels.OPS)


def test_use_with_an_unknown_implementation_raises_listing_the_available_ones():
    names = [i.name for i in kernels.available("gelu")]
    with pytest.raises(ValueError) as info:
        kernels.use(gelu="cpu_v99")
    message = str(info.value)
    assert "'cpu_v99'" in message and "'gelu'" in message
    assert all(n in message for n in names)


def test_a_failed_use_leaves_the_selection_unchanged():
    op, other = _swappable()
    kernels.reset()
    with pytest.raises(ValueError):
        kernels.use(**{op: other}, linear="no_such_kernel")
    assert kernels.get(op).name == _default(op)


def test_get_with_an_unknown_op_or_a_device_without_kernels_raises_clearly():
    with pytest.raises(ValueError, match="unknown op"):
        kernels.get("conv3d")
    if not kernels.available("gelu", device="tpu"):
        with pytest.raises(RuntimeError, match="no tpu implementation of 'gelu'"):
            kernels.get("gelu", device="tpu")


def test_register_rejects_an_unknown_op():
    with pytest.raises(ValueError, match="unknown op 'conv3d'"):
        kernels.register("conv3d", "mine", forward=lambda x: (x, None))


def test_selection_names_what_runs_for_every_op():
    kernels.reset()
    sel = kernels.selection()
    assert set(sel) == set(kernels.OPS)
    assert sel == {op: kernels.get(op).name for op in kernels.OPS}


@pytest.mark.parametrize("spec, expected", [
    ("attention=cpu_v1,layernorm=reference", {"attention": "cpu_v1", "layernorm": "reference"}),
    (" attention = cpu_v1 , layernorm=reference ,", {"attention": "cpu_v1", "layernorm": "reference"}),
    ("", {}),
    ("gelu=reference", {"gelu": "reference"}),
])
def test_parse_spec_parses_comma_separated_op_equals_name(spec, expected):
    assert kernels.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["attention", "attention=", "gelu=reference,softmax"])
def test_parse_spec_rejects_items_without_a_name_with_an_example(spec):
    with pytest.raises(ValueError, match="op=name"):
        kernels.parse_spec(spec)


def _run_python(code, spec):
    env = {**os.environ, "MINIVIT_KERNELS": spec, "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


# kernels.get loads the backends (and applies MINIVIT_KERNELS) itself; see the xfail below for selection()
PRINT_CHOICES = "import json, kernels; print(json.dumps({op: kernels.get(op).name for op in kernels.OPS}))"


def test_minivit_kernels_environment_variable_sets_the_selection_at_import():
    op, other = _swappable()
    result = _run_python(PRINT_CHOICES, f"{op}={other},softmax_cross_entropy=reference")
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout.strip().splitlines()[-1])
    assert chosen[op] == other != _default(op)
    assert chosen["softmax_cross_entropy"] == "reference"
    untouched = [o for o in kernels.OPS if o not in (op, "softmax_cross_entropy")]
    assert all(chosen[o] == _default(o) for o in untouched)


def test_selection_as_the_first_call_in_a_fresh_process_reports_the_environment_choice():
    op, other = _swappable()
    result = _run_python("import json, kernels; print(json.dumps(kernels.selection()))", f"{op}={other}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]).get(op) == other


def test_a_malformed_minivit_kernels_variable_fails_with_the_parse_error():
    result = _run_python(PRINT_CHOICES, "attention")
    assert result.returncode != 0
    assert "op=name" in result.stderr


def test_importing_minivit_sets_openblas_thread_timeout_before_numpy_unless_the_user_did():
    import os
    import subprocess
    import sys

    code = ("import minivit, os, sys; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", "True"]
    # the user's own choice wins
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OPENBLAS_THREAD_TIMEOUT": "12"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["12", "True"]
    # and kernels is imported before numpy, so OpenBLAS reads it at load
    probe = "import sys; import minivit; print(list(sys.modules).index('kernels') < list(sys.modules).index('numpy'))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
