"""The check-and-benchmark harness (kernels/bench.py): it catches wrong kernels before timing
them, prints one row per implementation, and exits non-zero when any version is wrong."""
import numpy as np
import pytest

import kernels
from kernels import bench, registry
from kernels.reference import normact, optim

TINY = ["--sizes", "B=2,N=5,D=8", "--repeat", "2"]


@pytest.fixture
def broken():
    """Register deliberately wrong kernels for the test, and take them out of the table after."""
    added = []

    def add(op, name, forward, backward):
        registry.register(op, name, forward, backward, description="deliberately wrong")
        added.append((op, name))

    yield add
    for op, name in added:
        registry._TABLE[op].pop(name, None)


def layernorm_off_by_one_percent(x, w, b, eps=1e-6):
    y, cache = normact.layernorm_forward(x, w, b, eps)
    return y * 1.01, cache


def layernorm_wrong_dw(grad, cache):
    dx, dw, db = normact.layernorm_backward(grad, cache)
    return dx, dw + 1.0, db


@pytest.fixture
def timed(monkeypatch):
    """Records the implementations the harness times."""
    names = []
    real = bench.time_impls

    def spy(op, impls, *args, **kwargs):
        names.extend(i.name if isinstance(i, registry.Impl) else i for i in impls)
        return real(op, impls, *args, **kwargs)

    monkeypatch.setattr(bench, "time_impls", spy)
    return names


def test_wrong_forward_is_flagged_wrong_and_never_timed(broken, timed, capsys):
    broken("layernorm", "broken_fwd", layernorm_off_by_one_percent, normact.layernorm_backward)
    assert bench.main(["layernorm", "--impls", "broken_fwd,reference", *TINY]) == 1  # a wrong row fails the command
    out = capsys.readouterr().out
    assert "broken_fwd: WRONG" in out
    assert "out: " in out and "mismatch" in out and "reference" in out  # first mismatches and both values
    row = next(line for line in out.splitlines() if line.startswith("broken_fwd "))
    assert row.split()[1:3] == ["-", "-"] and row.rstrip().endswith("WRONG")
    assert "broken_fwd" not in timed and "reference" in timed


def test_wrong_backward_alone_is_flagged_wrong(broken, timed):
    broken("layernorm", "broken_bwd", normact.layernorm_forward, layernorm_wrong_dw)
    inputs = bench.SPECS["layernorm"].make(dict(B=2, N=5, D=8), np.dtype("float32"), np.random.default_rng(0))
    result = bench.check("layernorm", "broken_bwd", inputs)
    assert not result.ok and any(line.startswith("grad[1]") for line in result.lines)
    broken_impl = kernels.find("layernorm", "broken_bwd")
    rows = bench.run_case("layernorm", [broken_impl], inputs, repeat=2, out=lambda s: None)
    assert [(r.impl, r.status, r.timing) for r in rows][1] == ("broken_bwd", "WRONG", None)
    assert "broken_bwd" not in timed


def test_an_implementation_that_raises_is_reported_wrong(broken):
    def crashes(x, w, b, eps=1e-6):
        raise RuntimeError("boom")

    broken("layernorm", "crashes", crashes, normact.layernorm_backward)
    inputs = bench.SPECS["layernorm"].make(dict(B=1, N=2, D=3), np.dtype("float64"), np.random.default_rng(0))
    result = bench.check("layernorm", "crashes", inputs)
    assert not result.ok and result.lines == ["raised RuntimeError: boom"]


def test_in_place_adamw_is_checked_on_copies_of_the_state(broken):
    def forgets_the_second_moment(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        v_before = v.copy()
        optim.adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
        v[...] = v_before

    broken("adamw_update", "broken_adamw", forgets_the_second_moment, None)
    inputs = bench.SPECS["adamw_update"].make(dict(n=50), np.dtype("float64"), np.random.default_rng(0))
    before = inputs.copy()
    result = bench.check("adamw_update", "broken_adamw", inputs)
    assert not result.ok and any(line.startswith("v:") for line in result.lines)
    assert all(np.array_equal(a, b) for a, b in zip(inputs.args, before.args)), "check() must not touch the inputs"
    assert bench.check("adamw_update", "reference", inputs).ok


def test_main_prints_a_table_row_for_every_implementation(capsys):
    assert bench.main(["layernorm", *TINY]) == 0
    out = capsys.readouterr().out
    assert "fwd ms" in out and "GB/s" in out and "B=2 N=5 D=8" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(("==", "impl", "-"))}
    for impl in kernels.available("layernorm", device="cpu"):
        assert impl.name in rows, f"{impl.name} missing from\n{out}"
        assert rows[impl.name].rstrip().endswith("ok")


def test_sizes_accept_preset_names_and_key_value_overrides():
    chosen = bench.resolve_sizes("attention", ["N=256,hd=64"])
    assert [d["N"] for _, d in chosen] == [256] * len(bench.SPECS["attention"].default)
    assert bench.resolve_sizes("linear", ["fc2"])[0][1]["Din"] == 768
    with pytest.raises(SystemExit):
        bench.resolve_sizes("linear", ["nope"])
    with pytest.raises(SystemExit):
        bench.resolve_sizes("linear", ["Q=3"])


def test_every_op_has_presets_inputs_and_a_work_count():
    for op in registry.OPS:
        spec = bench.SPECS[op]
        for name in spec.default:
            fwd, bwd = spec.work(spec.presets[name], 4)
            assert fwd > 0 and bwd >= 0, op


def test_time_impl_and_time_impls_report_positive_medians():
    inputs = bench.SPECS["gelu"].make(dict(B=2, N=3, D=4), np.dtype("float64"), np.random.default_rng(0))
    one = bench.time_impl("gelu", "reference", inputs, repeat=3)
    both = bench.time_impls("gelu", ["reference", kernels.get("gelu").name], inputs, repeat=3)
    assert one.fwd_s > 0 and one.bwd_s > 0
    assert all(t.fwd_s > 0 and t.bwd_s > 0 for t in both.values()) and "reference" in both
    adamw = bench.SPECS["adamw_update"].make(dict(n=10), np.dtype("float32"), np.random.default_rng(0))
    assert bench.time_impl("adamw_update", "reference", adamw, repeat=2).bwd_s is None


def test_plot_and_list(tmp_path, capsys):
    path = tmp_path / "bench.png"
    assert bench.main(["gelu", "--sizes", "B=2,N=3,D=4", "--repeat", "1", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(f" {i.name} " in out for i in kernels.available(device="cpu"))


def test_list_stars_exactly_the_defaults_of_the_table_and_marks_what_runs_instead(capsys, restore_kernel_choices):
    kernels.reset()
    assert bench.main(["--list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line[:1] in "*> " and len(line) > 2]
    starred = {(r[1], r[2]) for r in rows if r[0] == "*"}
    assert starred == {(op, name) for op, name in registry.DEFAULTS["cpu"].items()}
    assert not any(r[0] == ">" for r in rows)
    with kernels.use(gelu="cpu_v1"):
        bench.list_impls()
    out = capsys.readouterr().out
    assert "> gelu                   cpu_v1" in out and "* gelu                   cpu_v3" in out


def test_run_pair_pairs_every_output_and_gradient_with_the_float64_reference():
    inputs = bench.SPECS["layernorm"].make(dict(B=2, N=3, D=5), np.dtype("float32"), np.random.default_rng(0))
    pairs = bench.run_pair("layernorm", "reference", inputs, seed=1)
    assert [name for name, _, _ in pairs] == ["out", "grad[0]", "grad[1]", "grad[2]"]
    assert all(got.dtype == np.float32 and want.dtype == np.float64 for _, got, want in pairs)
    assert all(got.shape == want.shape for _, got, want in pairs)
    name, db, db_want = bench.run_pair("layernorm", "reference", inputs, grad=np.ones((2, 3, 5), np.float32))[3]
    assert name == "grad[2]"  # the bias gradient: with a given grad of ones, it counts the B*N rows
    np.testing.assert_array_equal(db, 6)
    np.testing.assert_array_equal(db_want, 6)


def test_run_pair_hands_the_implementation_the_callers_arrays_views_included(broken):
    seen = []

    def spy(x, w, b, eps=1e-6):
        seen.append(x)
        return normact.layernorm_forward(x, w, b, eps)

    broken("layernorm", "spy", spy, normact.layernorm_backward)
    inputs = bench.SPECS["layernorm"].make(dict(B=2, N=3, D=5), np.dtype("float32"), np.random.default_rng(0))
    view = inputs.args[0][:, ::2]  # a strided view, (B, 2, D)
    strided = bench.Inputs((view, *inputs.args[1:]), inputs.params).astype(np.float32)
    assert bench.compare_all(bench.run_pair("layernorm", "spy", strided), np.float32).ok
    assert seen[0] is view


def test_compare_judges_with_the_tolerance_it_is_given():
    want = np.array([1.0, 2.0])
    got = (want * (1 + 5e-4)).astype(np.float32)
    assert bench.compare("x", got, want, np.float32)[2] == []  # within float32's default rtol 1e-3
    assert bench.compare("x", got, want, np.float32, tolerance=(1e-4, 0.0, 0.0))[2]  # not within 1e-4


def test_a_kernel_that_changes_its_inputs_is_reported_wrong(broken):
    def scribbles(x, w, b, eps=1e-6):
        y, cache = normact.layernorm_forward(x, w, b, eps)
        x[...] = 0.0
        return y, cache

    broken("layernorm", "scribbles", scribbles, normact.layernorm_backward)
    inputs = bench.SPECS["layernorm"].make(dict(B=1, N=2, D=3), np.dtype("float64"), np.random.default_rng(0))
    result = bench.check("layernorm", "scribbles", inputs)
    assert not result.ok and "changed its inputs in place" in result.lines[0]


# ---------------------------------------------------------------- a wrong version fails the command
def test_the_command_exits_1_and_names_every_wrong_version_last(broken, restore_kernel_choices, capsys, tmp_path):
    broken("layernorm", "broken_fwd", layernorm_off_by_one_percent, normact.layernorm_backward)
    broken("layernorm", "broken_bwd", normact.layernorm_forward, layernorm_wrong_dw)
    path = tmp_path / "bench.json"
    assert bench.main(["layernorm", "--impls", "broken_fwd,broken_bwd,reference", *TINY, "--json", str(path)]) == 1
    out = capsys.readouterr().out
    tail = out[out.index("FAILED: 2 implementation(s) WRONG"):].splitlines()
    assert len(tail) == 3  # the report is the last thing printed, one line per wrong version
    fwd, bwd = (next(line for line in tail[1:] if line.startswith(f"  {name} in "))
                for name in ("broken_fwd", "broken_bwd"))
    assert fwd.startswith("  broken_fwd in layernorm [cifar*] B=2 N=5 D=8 float32: out: ") and "mismatch" in fwd
    assert "grad[1]: " in bwd and "mismatch" in bwd
    import json

    assert len(json.loads(path.read_text())["wrong"]) == 2  # the JSON (gpu_check's summary) says so too
    assert bench.main(["layernorm", "--impls", "reference", *TINY]) == 0  # and all-correct still exits 0
    assert "FAILED" not in capsys.readouterr().out


def test_a_wrong_gpu_version_fails_the_cuda_command(restore_kernel_choices, monkeypatch, capsys):
    """The --device cuda path without a GPU: the device start, the host-device wrapper and the CUDA
    event timer replaced by their CPU counterparts; the check and the exit code are the real ones."""
    from kernels.gpu import timing

    # a copy of the table to register in, the original back after the test
    monkeypatch.setattr(registry, "_TABLE", {op: dict(impls) for op, impls in registry._TABLE.items()})
    for name, forward in (("fine_gpu", normact.layernorm_forward), ("wrong_gpu", layernorm_off_by_one_percent)):
        registry.register("layernorm", name, forward, normact.layernorm_backward, device="gpu", description="test")
    peaks = {"device": "stand-in", "sgemm_gflops": 1e4, "tf32_gflops": 1e4, "copy_gbs": 1e3}
    monkeypatch.setattr(bench, "_start_device", lambda device, out=print: peaks)
    monkeypatch.setattr(timing, "on_device", lambda impl: impl)
    monkeypatch.setattr(timing, "time_impls",
                        lambda op, impls, inputs, **kw: bench.time_impls(op, impls, inputs, repeat=1))
    assert bench.main(["layernorm", "--device", "cuda", "--impls", "fine_gpu", *TINY]) == 0
    assert bench.main(["layernorm", "--device", "cuda", "--impls", "fine_gpu,wrong_gpu", *TINY]) == 1
    out = capsys.readouterr().out
    assert "wrong_gpu: WRONG" in out and "  wrong_gpu in layernorm" in out.splitlines()[-1]


def test_python_m_kernels_bench_exits_non_zero_on_a_wrong_version():
    """The real command line (runpy, as `python -m` runs it) in a fresh process, with a wrong
    version registered first."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import runpy, sys\n"
            "from kernels import registry\n"
            "from kernels.reference import normact\n"
            "def wrong(x, w, b, eps=1e-6):\n"
            "    y, cache = normact.layernorm_forward(x, w, b, eps)\n"
            "    return y * 1.01, cache\n"
            "registry.register('layernorm', 'wrong_one', wrong, normact.layernorm_backward)\n"
            "sys.argv = ['kernels.bench', 'layernorm', '--impls', sys.argv[1], '--sizes', 'B=2,N=3,D=4',\n"
            "            '--repeat', '1']\n"
            "runpy.run_module('kernels.bench', run_name='__main__')\n")
    root = Path(__file__).resolve().parents[1]

    def run(impls):
        return subprocess.run([sys.executable, "-c", code, impls], capture_output=True, text=True, cwd=root,
                              timeout=300)

    bad = run("wrong_one,reference")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: 1 implementation(s) WRONG" in bad.stdout and "wrong_one in layernorm" in bad.stdout
    good = run("reference")
    assert good.returncode == 0, good.stdout + good.stderr
