"""The kernel registry (kernels/registry.py): the table of defaults, listing, choosing with use()
(for a block; a warning without `with`) and select() (for the process), one op or reading mode for
all, validate(), reset(), the error messages, parse_spec, the MINIVIT_KERNELS environment
variable, and the loud fallback when a backend fails to import."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kernels
from kernels import registry

ROOT = Path(__file__).resolve().parents[1]
# Tests that name Numba kernels (cpu_v1, cpu_v3, ...); the rest, including those that simulate a
# machine without Numba, run anywhere.
needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="names the Numba CPU kernels")


@pytest.fixture(autouse=True)
def _restore_selection():
    """Every test leaves the process-wide selection as it found it."""
    kernels.available()  # load the backends (and MINIVIT_KERNELS) before taking the snapshot
    saved = dict(registry._SELECTED)
    yield
    registry._SELECTED.clear()
    registry._SELECTED.update(saved)


def _default(op):
    return kernels.DEFAULTS["cpu"][op]


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


def test_available_lists_the_default_first_then_by_name():
    kernels.reset()
    for op in kernels.OPS:
        rows = kernels.available(op, device="cpu")
        assert all(r.op == op for r in rows)
        assert rows[0].name == kernels.get(op).name == _default(op)
        assert [r.name for r in rows[1:]] == sorted(r.name for r in rows[1:])


def test_available_with_an_unknown_op_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'conv3d'.*attention"):
        kernels.available("conv3d")


def test_the_table_names_a_registered_default_for_every_op_on_every_device():
    for device, table in kernels.DEFAULTS.items():
        assert set(table) == set(kernels.OPS), device
        for op, name in table.items():
            assert kernels.find(op, name).device == device, (op, name)


def test_get_returns_the_table_default_when_nothing_is_chosen():
    kernels.reset()
    for op in kernels.OPS:
        assert kernels.get(op).name == _default(op) == kernels.default(op)
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


@needs_numba
def test_every_backend_module_exists_and_imported_here():
    for device, (module, package) in kernels.BACKENDS.items():
        assert importlib.util.find_spec(module) is not None, module
        assert device in kernels.DEFAULTS, f"{device} has a backend but no table of defaults"
    assert kernels.backend_errors() == {}, "with Numba installed, every backend imports"


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
    kernels.select(**{op: "reference"})
    with pytest.raises(RuntimeError):
        with kernels.use(**{op: other}):
            with kernels.use(**{op: "reference"}):
                assert kernels.get(op).name == "reference"
            assert kernels.get(op).name == other
            raise RuntimeError("boom")
    assert kernels.get(op).name == "reference"


def test_select_persists_until_reset():
    op, other = _swappable()
    kernels.select(**{op: other})
    assert kernels.get(op).name == other
    assert kernels.get(op).name == other  # still, on a later call
    kernels.reset()
    assert kernels.get(op).name == _default(op)


def test_select_rejects_an_invalid_choice_and_applies_nothing():
    op, other = _swappable()
    with pytest.raises(ValueError, match="no_such_kernel"):
        kernels.select(**{op: other}, linear="no_such_kernel")
    assert kernels.get(op).name == _default(op)


def test_use_without_with_warns_that_its_choice_holds_for_the_rest_of_the_process():
    op, other = _swappable()
    with pytest.warns(RuntimeWarning, match=r"not used with `with`.*kernels\.select") as caught:
        kernels.use(**{op: other})  # dropped at once, never entered
    assert f"{op}={other}" in str(caught[0].message)
    assert caught[0].filename == __file__  # it points at the caller's line
    assert kernels.get(op).name == other  # and the choice still holds, as it did before the warning


def test_use_entered_with_with_gives_no_warning(recwarn):
    op, other = _swappable()
    with kernels.use(**{op: other}):
        pass
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning) and "kernels.use" in str(w.message)]


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


# ---------------------------------------------------------------- reading mode: one name for every op
def test_use_with_a_bare_name_runs_it_for_every_op_and_restores_on_exit():
    kernels.reset()
    with kernels.use("reference"):
        assert kernels.selection() == {op: "reference" for op in kernels.OPS}
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


@needs_numba
def test_a_bare_name_only_some_ops_have_leaves_the_others_on_their_defaults():
    kernels.reset()
    has = {op for op in kernels.OPS if "cpu_v1" in {i.name for i in kernels.available(op)}}
    assert 0 < len(has) < len(kernels.OPS)
    with kernels.use("cpu_v1"):
        chosen = kernels.selection()
    assert {op for op, name in chosen.items() if name == "cpu_v1"} == has
    assert all(chosen[op] == _default(op) for op in set(kernels.OPS) - has)


@needs_numba
def test_keyword_choices_override_the_bare_name_in_use():
    kernels.reset()
    with kernels.use("reference", attention="cpu_v3"):
        chosen = kernels.selection()
    assert chosen == {**{op: "reference" for op in kernels.OPS}, "attention": "cpu_v3"}


@needs_numba
@pytest.mark.parametrize("spec", ["reference,attention=cpu_v3", "attention=cpu_v3, reference"])
def test_a_spec_mixes_a_bare_name_with_op_choices_which_win_wherever_they_stand(spec):
    expected = {**{op: "reference" for op in kernels.OPS}, "attention": "cpu_v3"}
    assert kernels.parse_spec(spec) == expected
    kernels.reset()
    with kernels.use(spec):
        assert kernels.selection() == expected
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


def test_an_unknown_bare_name_raises_listing_every_name_that_exists():
    with pytest.raises(ValueError, match="no op has an implementation named 'cpu_v99'") as info:
        kernels.use("cpu_v99")
    assert all(i.name in str(info.value) for i in kernels.available())


def test_a_spec_with_two_bare_names_is_rejected():
    with pytest.raises(ValueError, match="at most one"):
        kernels.parse_spec("reference,cpu_v1")


# ---------------------------------------------------------------- validate: check, do not apply
@needs_numba
def test_validate_checks_a_spec_or_a_dict_and_applies_nothing():
    kernels.reset()
    assert kernels.validate("reference,attention=cpu_v3") == {
        **{op: "reference" for op in kernels.OPS}, "attention": "cpu_v3"}
    assert kernels.validate({"gelu": "cpu_v1"}) == {"gelu": "cpu_v1"}
    assert kernels.validate("") == {}
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


@needs_numba
@pytest.mark.parametrize("choices, message", [
    ("attention=cpu_v99", "no implementation 'cpu_v99' of 'attention'; available: cpu_blas, cpu_v1"),
    ({"attention": "cpu_v99"}, "no implementation 'cpu_v99' of 'attention'; available: cpu_blas, cpu_v1"),
    ("atention=reference", "unknown op 'atention'; known ops: matmul"),
    ("attention=", "should look like op=name"),
    ("cpu_v99", "no op has an implementation named 'cpu_v99'"),
])
def test_validate_rejects_a_bad_choice_naming_what_exists_and_applies_nothing(choices, message):
    kernels.reset()
    with pytest.raises(ValueError, match=re.escape(message)):
        kernels.validate(choices)
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


@needs_numba
def test_validated_choices_apply_only_inside_a_with_block():
    """What a trainer does with --kernels: reject a bad string up front, apply it for the run."""
    choices = kernels.validate("reference,attention=cpu_v3")
    kernels.reset()
    with kernels.use(**choices):
        assert kernels.selection() == choices
    assert kernels.selection() == kernels.DEFAULTS["cpu"]


# ---------------------------------------------------------------- a backend that fails to import
def test_a_backend_that_fails_to_import_warns_and_its_ops_fall_back_to_the_reference(monkeypatch):
    """The registry's own path, in this process: the cpu row of BACKENDS names a module that
    raises ImportError; the table is left with the references alone, as a failed import leaves it."""
    references = {op: {n: i for n, i in impls.items() if n == "reference"} for op, impls in registry._TABLE.items()}
    monkeypatch.setattr(registry, "_TABLE", references)
    monkeypatch.setattr(registry, "_BACKEND_ERRORS", {})
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setitem(registry.BACKENDS, "cpu", ("kernels._backend_that_is_not_there", "numba"))
    monkeypatch.delenv("MINIVIT_KERNELS", raising=False)
    registry._SELECTED.clear()
    with pytest.warns(RuntimeWarning) as caught:
        chosen = {op: kernels.get(op).name for op in kernels.OPS}
        assert kernels.get("attention").name == "reference"  # asked again: warned once
    assert chosen == {op: "reference" for op in kernels.OPS}
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    message = str(warning.message)
    for needle in ("cpu backend (kernels._backend_that_is_not_there) failed to import",
                   "ModuleNotFoundError", "fall back to the NumPy reference, several times slower",
                   "install numba", "MINIVIT_KERNELS=reference", "silences"):
        assert needle in message, (needle, message)
    assert "weight_standardize" not in message.split("fall back")[0]  # its default is the reference anyway
    assert isinstance(kernels.backend_errors()["cpu"], ImportError)


def _run_python(code, spec):
    env = {**os.environ, "MINIVIT_KERNELS": spec, "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


# kernels.get loads the backends (and applies MINIVIT_KERNELS) itself, as does selection()
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


def test_minivit_kernels_reference_runs_every_op_on_its_reference():
    result = _run_python(PRINT_CHOICES, "reference")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {op: "reference" for op in kernels.OPS}


@needs_numba
def test_minivit_kernels_mixes_reading_mode_with_op_choices():
    result = _run_python(PRINT_CHOICES, "reference,attention=cpu_v3")
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout.strip().splitlines()[-1])
    assert chosen == {**{op: "reference" for op in kernels.OPS}, "attention": "cpu_v3"}


# As if Numba were not installed: None in sys.modules makes `import numba` raise ImportError.
WITHOUT_NUMBA = """
import sys; sys.modules["numba"] = None
import json, warnings, kernels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    chosen = {op: kernels.get(op).name for op in kernels.OPS}
print(json.dumps({"chosen": chosen, "errors": {d: repr(e) for d, e in kernels.backend_errors().items()},
                  "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}))
"""


def test_without_numba_every_op_runs_its_reference_after_a_warning_naming_numba():
    result = _run_python(WITHOUT_NUMBA, "")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["chosen"] == {op: "reference" for op in kernels.OPS}
    assert "numba" in out["errors"]["cpu"]
    (message,) = out["warnings"]
    for needle in ("cpu backend (kernels.cpu) failed to import", "numba", "several times slower",
                   "install numba", "MINIVIT_KERNELS=reference"):
        assert needle in message, (needle, message)


def test_without_numba_choosing_the_reference_deliberately_runs_it_without_a_warning():
    result = _run_python(WITHOUT_NUMBA, "reference")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["chosen"] == {op: "reference" for op in kernels.OPS}
    assert out["warnings"] == [] and "cpu" in out["errors"]


def test_without_numba_asking_for_a_numba_kernel_raises_naming_the_failed_import():
    result = _run_python(WITHOUT_NUMBA, "attention=cpu_v3")
    assert result.returncode != 0
    assert "ValueError: no implementation 'cpu_v3' of 'attention'; available: reference" in result.stderr
    assert "the cpu backend kernels.cpu failed to import" in result.stderr and "numba" in result.stderr
