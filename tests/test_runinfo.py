"""Every training run says what it ran on: run.json beside metrics.jsonl holds, for each fit() call,
its start and end time, the CPU, NumPy's BLAS, the environment variables that change kernels or
threads, and the minivit commit; a resumed run adds its call after the earlier ones, a new run in
the same folder starts the list again."""
import datetime
import json
import os
from pathlib import Path

import pytest

from minivit.train import TrainConfig, Trainer, runinfo

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32, "patch_size": 8}


def tiny_config(out_dir, **overrides):
    values = dict(model="vit_testing", model_kwargs=dict(TINY), dataset="procedural", num_samples=128,
                  val_size=0, epochs=1, batch_size=32, lr=2e-3, warmup_epochs=0.5, log_every=1,
                  eval_test="never", progress=False, save_every=0, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


def fits(out):
    return json.loads((Path(out) / "run.json").read_text())["fits"]


def when(text):
    return datetime.datetime.fromisoformat(text)


def test_a_run_records_its_machine_blas_environment_and_times(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # read, not applied: NumPy loaded its BLAS already
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    Trainer(tiny_config(tmp_path)).fit()
    after = datetime.datetime.now(datetime.timezone.utc)
    [run] = fits(tmp_path)
    assert before <= when(run["started_at"]) <= when(run["ended_at"]) <= after
    assert 0 <= run["seconds"] <= (after - before).total_seconds() + 1
    assert run["env"]["OPENBLAS_CORETYPE"] == "Haswell" and run["env"]["OPENBLAS_L2_SIZE"] == os.environ.get(
        "OPENBLAS_L2_SIZE")
    assert set(run["env"]) == set(runinfo.ENV_VARS)
    import numpy as np

    assert run["blas"]["numpy"] == np.__version__
    assert run["cpu"]["cores_usable"] == len(os.sched_getaffinity(0))
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        assert run["cpu"]["name"] == names[0]
        assert when(run["process_started_at"]) <= when(run["started_at"])
    source = run["minivit_source"]
    assert source is None or len(source.split("+")[0]) == 40
    assert abs(run["started_unix"] - when(run["started_at"]).timestamp()) <= 1.5  # the same moment, as a number
    assert not (tmp_path / "run.json.tmp").exists()


def test_a_resumed_run_adds_its_fit_and_a_new_run_starts_the_list_again(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=2)).fit()
    first = fits(tmp_path)
    Trainer(tiny_config(tmp_path), resume=True).fit()
    both = fits(tmp_path)
    assert len(first) == 1 and len(both) == 2 and both[0] == first[0]
    assert when(both[0]["ended_at"]) <= when(both[1]["started_at"])
    Trainer(tiny_config(tmp_path)).fit()  # not resumed: a new run in the same folder
    assert len(fits(tmp_path)) == 1


def test_a_run_that_fails_still_records_its_end(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(Trainer, "_fit", broken)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        Trainer(tiny_config(tmp_path)).fit()
    [run] = fits(tmp_path)
    assert "ended_at" in run and run["seconds"] >= 0


def test_a_broken_run_json_is_replaced_not_trusted(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=2)).fit()
    (tmp_path / "run.json").write_text('{"fits": "not a list"')
    Trainer(tiny_config(tmp_path, max_steps=3), resume=True).fit()
    assert len(fits(tmp_path)) == 1
    (tmp_path / "run.json").write_text('{"fits": [1, "x", null]}')  # entries that are not records
    Trainer(tiny_config(tmp_path), resume=True).fit()
    assert len(fits(tmp_path)) == 1 and "started_at" in fits(tmp_path)[0]


def test_describing_a_run_loads_no_cpu_kernel_and_changes_nothing():
    """benchmarks/torch_cifar.py describes a PyTorch run with it: minivit's CPU kernels (whose loading
    changes the process: kernels/cpu/process.py) must stay unloaded."""
    import subprocess
    import sys

    code = ("import sys, numpy\nfrom minivit.train import runinfo\ninfo = runinfo.describe()\n"
            "print('kernels.cpu' in sys.modules, info['blas']['numpy'] == numpy.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr
