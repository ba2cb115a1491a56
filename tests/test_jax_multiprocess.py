"""`minivit train --backend jax` as two processes on this machine (2 CPU devices each, joined by
jax.distributed through a coordinator on localhost, collectives through gloo) against one process
with 4 devices: the same weights; a killed process stops the other within the heartbeat timeout;
a process that cannot reach the coordinator gives up within the initialization timeout; processes
given different options refuse to train; a run resumed after a kill ends with the weights of the
run that was never interrupted.

Each process is a child (this file run as a script, which runs the CLI) with its own timeout, on
ports found free when the test runs. The runs start together (the module's fixture) so that the
file costs about one run's time on two cores; the tests judge what they left.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX trainer needs jax: pip install 'minivit[jax]'")
ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # a child (see the end): this repository's minivit, as in the tests
    sys.path.insert(0, str(ROOT))

from minivit.data import DataLoader, make_procedural  # noqa: E402
from minivit.train.checkpoint import load_checkpoint  # noqa: E402
from minivit.train.distributed import initialize  # noqa: E402

HEARTBEAT_S, INIT_S = 10, 60  # the runtime's timeouts in the runs below
LONELY_INIT_S = 5  # the lone process's wait for a coordinator that is not there
RUN_TIMEOUT_S = 240  # a child alive after this has hung: the test fails with its output
DIE_AT_STEP = 6  # the killed run loses process 1 as it starts its 7th step, after the checkpoint of step 6
TRAIN = ["train", "--backend", "jax", "--model", "vit_testing", "--dataset", "procedural", "--num-samples", "160",
         "--val-size", "32", "--batch-size", "32", "--epochs", "2", "--lr", "2e-3", "--eval-test", "never",
         "--save-every", "3", "--no-progress"]  # 8 steps of 32 images, 4 per epoch; checkpoints at 3, 4, 6, 8


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out, process_id=None, port=None, die_at=None, extra=(), env=None):
    """One child process running `minivit train` (one of two when port is given)."""
    args = [sys.executable, __file__] + (["--die-at-step", str(die_at)] if die_at is not None else []) + ["--"]
    args += TRAIN + ["--out", str(out)] + list(extra)
    if port is None:
        args += ["--devices", "4"]
    else:
        args += ["--devices", "2", "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
                 "--process-id", str(process_id), "--init-timeout", str(INIT_S),
                 "--heartbeat-timeout", str(HEARTBEAT_S)]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(children, deadline_s=RUN_TIMEOUT_S):
    """{name: (return code, stdout, stderr, seconds until it ended)} of children started together;
    a child still running after deadline_s is killed and fails the test."""
    start, ended, hung = time.monotonic(), {}, []
    while len(ended) < len(children):
        for name, child in children.items():
            if name not in ended and child.poll() is not None:
                ended[name] = time.monotonic() - start
        if time.monotonic() - start > deadline_s:
            hung = [name for name in children if name not in ended]
            for name in hung:
                children[name].kill()
            break
        time.sleep(0.05)
    results = {}
    for name, child in children.items():
        out, err = child.communicate()
        results[name] = (child.returncode, out, err, ended.get(name))
    if hung:
        pytest.fail(f"still running after {deadline_s} s: {hung}; stderr ends:\n"
                    + "\n".join(f"{n}: {results[n][2][-2000:]}" for n in hung))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five runs at once (two processes; one process with 4 devices; two processes of which one is
    killed; a lone process 1 of 2 whose coordinator never comes; two processes given different
    learning rates), then the killed run resumed."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MINIVIT_CACHE": str(tmp / "cache"),
           "MINIVIT_DATA": str(tmp / "data")}
    env.pop("XLA_FLAGS", None)
    two, killed, lonely, mismatch = _free_port(), _free_port(), _free_port(), _free_port()
    children = {"two/0": _start(tmp / "two", 0, two, env=env), "two/1": _start(tmp / "two", 1, two, env=env),
                "one": _start(tmp / "one", env=env),
                "killed/0": _start(tmp / "killed", 0, killed, env=env),
                "killed/1": _start(tmp / "killed", 1, killed, die_at=DIE_AT_STEP, env=env),
                "mismatch/0": _start(tmp / "mismatch", 0, mismatch, env=env),
                "mismatch/1": _start(tmp / "mismatch", 1, mismatch, extra=["--lr", "1e-3"], env=env)}
    lone = [sys.executable, __file__, "--"] + TRAIN + [
        "--out", str(tmp / "lonely"), "--coordinator-address", f"localhost:{lonely}", "--num-processes", "2",
        "--process-id", "1", "--init-timeout", str(LONELY_INIT_S)]
    children["lonely"] = subprocess.Popen(lone, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
    results = _wait(children)
    killed_at = load_checkpoint(tmp / "killed" / "checkpoint.npz")["meta"]["position"]
    resumed = _free_port()
    results.update(_wait({f"resumed/{i}": _start(tmp / "killed", i, resumed, extra=["--resume"], env=env)
                          for i in (0, 1)}))
    return {"tmp": tmp, "results": results, "killed_at": killed_at}


def _ok(runs, *names):
    for name in names:
        code, _, err, _ = runs["results"][name]
        assert code == 0, f"{name} exited {code}; stderr ends:\n{err[-3000:]}"


def _weights(folder):
    return load_checkpoint(Path(folder) / "checkpoint.npz")["model"]


def _logged_steps(folder):
    return [json.loads(line)["step"] for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# ---- the runs --------------------------------------------------------------------------------

def test_two_processes_end_with_the_weights_of_one_process_on_four_devices(runs):
    _ok(runs, "two/0", "two/1", "one")
    two, one = _weights(runs["tmp"] / "two"), _weights(runs["tmp"] / "one")
    print(f"two processes vs one: max weight difference {_max_difference(two, one):.2e}")
    assert _max_difference(two, one) < 1e-5
    assert load_checkpoint(runs["tmp"] / "two" / "checkpoint.npz")["meta"]["position"]["step"] == 8


def test_two_processes_log_the_metrics_of_one_process_once(runs):
    _ok(runs, "two/0", "two/1", "one")
    records = {}
    for name in ("two", "one"):
        lines = (runs["tmp"] / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in lines]
    assert [r["step"] for r in records["two"]] == [r["step"] for r in records["one"]]  # each record once
    for a, b in zip(records["two"], records["one"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5), (a, b)
    assert any("val_loss" in r for r in records["two"])  # the evaluation ran across the processes too


def test_only_process_0_prints_the_metrics(runs):
    _ok(runs, "two/0", "two/1")
    first, second = runs["results"]["two/0"][1], runs["results"]["two/1"][1]
    assert "epoch 2  step 8" in first and "JAX on 4 device(s) of 2 processes" in first
    assert "epoch" not in second and "done in" not in second


def test_killing_one_process_stops_the_other_with_an_error_within_the_heartbeat_timeout(runs):
    (code0, _, err0, ended0), (code1, _, _, ended1) = runs["results"]["killed/0"], runs["results"]["killed/1"]
    assert code1 == -signal.SIGKILL, f"process 1 should have been killed at step {DIE_AT_STEP}, exited {code1}"
    assert code0 != 0, "the surviving process exited 0"
    print(f"the survivor exited {code0}, {ended0 - ended1:.1f} s after process 1 was killed")
    assert ended0 - ended1 < HEARTBEAT_S + 30
    # JAX's runtime ends it after the missed heartbeats, or its all-reduce fails first on the closed socket
    assert "another task died" in err0 or "Gloo all-reduce failed" in err0, err0[-3000:]


def test_a_killed_run_keeps_its_last_checkpoint_whole(runs):
    assert runs["killed_at"] == {"step": DIE_AT_STEP, "epoch": 1, "batch": 2}


def test_a_process_that_cannot_reach_the_coordinator_exits_nonzero_within_the_init_timeout(runs):
    code, out, err, ended = runs["results"]["lonely"]
    assert code != 0 and f"waiting up to {LONELY_INIT_S} s" in out
    assert ended < LONELY_INIT_S + 60  # start-up included, on a busy machine


def test_processes_started_with_different_options_refuse_to_train(runs):
    for i, lr in ((0, 0.002), (1, 0.001)):
        code, _, err, _ = runs["results"][f"mismatch/{i}"]
        assert code == 2 and f"differ between the processes: lr (process {i} has lr={lr})" in err, err[-2000:]
    assert not (runs["tmp"] / "mismatch" / "checkpoint.npz").exists()


def test_resuming_after_a_kill_ends_with_the_weights_of_the_uninterrupted_run(runs):
    _ok(runs, "two/0", "two/1", "resumed/0", "resumed/1")
    resumed, uninterrupted = _weights(runs["tmp"] / "killed"), _weights(runs["tmp"] / "two")
    print(f"resumed vs uninterrupted: max weight difference {_max_difference(resumed, uninterrupted):.2e}")
    assert _max_difference(resumed, uninterrupted) < 1e-5
    assert _logged_steps(runs["tmp"] / "killed") == _logged_steps(runs["tmp"] / "two")  # each record once


# ---- in this process: what needs no second process -------------------------------------------

@pytest.mark.parametrize("parts", [2, 4])
def test_the_rows_of_every_process_make_the_batch_of_one_process(parts):
    """Loaded row block by row block, with augmentation, the parts put together are the batch."""
    data = make_procedural("train", 96, seed=3)
    whole = DataLoader(data, 32, seed=5, prefetch=0)
    B = 32 // parts
    pieces = [DataLoader(data, 32, seed=5, prefetch=0, rows=slice(p * B, (p + 1) * B)) for p in range(parts)]
    for epoch in (0, 1):
        for b, (x, y) in enumerate(whole.epoch(epoch)):
            xs, ys = zip(*(piece.batch(epoch, b) for piece in pieces))
            assert all(len(part) == B for part in xs)
            np.testing.assert_array_equal(np.concatenate(xs), x)
            np.testing.assert_array_equal(np.concatenate(ys), y)


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator_address": "localhost:1234"}, "go together"),
    ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator_address": "localhost:99999", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 2}, "0..1"),
    ({"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 0, "heartbeat_timeout_s": 0},
     "heartbeat_timeout_s"),
])
def test_initialize_refuses_incomplete_or_wrong_settings_before_joining(kwargs, message):
    with pytest.raises(ValueError, match=message):
        initialize(**kwargs)


def test_the_cli_refuses_process_flags_without_the_jax_backend(tmp_path, capsys):
    from minivit.cli import main

    with pytest.raises(SystemExit, match="need --backend jax"):
        main(TRAIN[:1] + ["--num-samples", "64", "--out", str(tmp_path), "--num-processes", "2"])


# ---- the child -------------------------------------------------------------------------------

def _child(argv):
    """`minivit train` with argv after "--"; with --die-at-step K, process 1 kills itself (SIGKILL:
    no cleanup, as a lost host) when it is about to take step K + 1."""
    import jax

    from minivit.cli import main
    from minivit.train.jax_trainer import JaxTrainer

    split = argv.index("--")
    if argv[:split]:
        die_at = int(argv[split - 1])
        take_step = JaxTrainer.train_step

        def train_step(self, x, y):
            if self.step == die_at and jax.process_index() == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return take_step(self, x, y)

        JaxTrainer.train_step = train_step
    return main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
