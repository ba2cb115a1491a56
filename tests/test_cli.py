"""Tests for the `minivit` command line, called in-process through `minivit.cli.main([...])`."""
import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kernels
from minivit.train.checkpoint import load_checkpoint
from minivit.cli import build_parser, main, train_config_from_args
from minivit.data import make_procedural

pytestmark = pytest.mark.usefixtures("private_data_dirs")

TINY_FLAGS = ["--model", "vit_testing", "--dataset", "procedural", "--num-samples", "256", "--val-size", "64",
              "--batch-size", "32", "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--patch-size", "8",
              "--lr", "0.002", "--log-every", "1", "--no-progress"]
CLASSES = make_procedural("train", 10).classes


def run_main(argv):
    """(exit code, stdout, stderr) of main(argv), for fixtures that cannot use capsys."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny `minivit train` run: (run folder, exit code, stdout)."""
    base = tmp_path_factory.mktemp("cli")
    run = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIVIT_DATA", str(base / "data_home"))
        mp.setenv("MINIVIT_CACHE", str(base / "decode_cache"))
        code, out, _ = run_main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(run)])
    return run, code, out


def accuracy_in(text, label="test_acc"):
    return float(re.search(rf"{label} (\d\.\d+)", text).group(1))


# ---------------------------------------------------------------------------- train
def test_train_writes_a_run_folder_and_prints_accuracy(trained):
    run, code, out = trained
    assert code == 0
    assert "model vit_testing:" in out and "192 training images" in out
    assert 0.0 <= accuracy_in(out) <= 1.0 and 0.0 <= accuracy_in(out, "val_acc") <= 1.0
    assert f"run folder: {run}" in out
    for name in ("config.json", "metrics.jsonl", "checkpoint.npz", "best.npz", "curves.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["model_kwargs"] == {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}
    assert saved["lr"] == 0.002 and saved["progress"] is False


def stopped_run(tmp_path, capsys):
    """A 2-epoch run (12 steps) stopped by --max-steps 3."""
    run = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--epochs", "2", "--max-steps", "3", "--out", str(run)]) == 0
    assert "stopped_at_step 3" in capsys.readouterr().out
    assert load_checkpoint(run)["meta"]["position"]["step"] == 3
    return run


def assert_finished(run, out):
    assert load_checkpoint(run)["meta"]["position"] == {"step": 12, "epoch": 2, "batch": 0}
    assert 0.0 <= accuracy_in(out) <= 1.0
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert steps == list(range(1, 13))


def test_train_resume_with_a_larger_max_steps_continues_to_the_end(tmp_path, capsys):
    run = stopped_run(tmp_path, capsys)
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "1000"]) == 0
    assert_finished(run, capsys.readouterr().out)


def test_train_resume_after_max_steps_continues_to_the_end(tmp_path, capsys):
    run = stopped_run(tmp_path, capsys)
    assert main(["train", "--resume", "--out", str(run)]) == 0
    assert_finished(run, capsys.readouterr().out)


def test_train_resume_with_a_changed_setting_exits_2_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--epochs", "1", "--max-steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "'lr': (0.002, 0.5)" in err


def test_train_resume_without_out_or_run_folder_exits_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="--resume needs --out"):
        main(["train", "--resume"])
    with pytest.raises(SystemExit, match=re.escape(f"{tmp_path / 'config.json'} not found")):
        main(["train", "--resume", "--out", str(tmp_path)])


@pytest.mark.parametrize("flags, message", [
    (["--img-size", "30", "--patch-size", "8"], "img_size 30 is not divisible by patch_size 8"),
    (["--embed-dim", "30", "--num-heads", "4"], "embed_dim 30 is not divisible by num_heads 4"),
    (["--img-size", "16"], "expected 16x16 images"),
    (["--recipe", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["--kernels", "attention=nope"], "no implementation 'nope' of 'attention'"),
])
def test_train_with_a_bad_option_combination_exits_2_with_a_clear_message(
        tmp_path, capsys, restore_kernel_choices, flags, message):
    code = main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(tmp_path / "run"), *flags])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_diverging_run_exits_2_suggesting_a_lower_lr(tmp_path, capsys, restore_kernel_choices):
    code = main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(tmp_path / "run"), "--lr", "1e6",
                 "--grad-clip", "0", "--warmup-epochs", "0", "--kernels", "softmax_cross_entropy=reference"])
    assert code == 2
    err = capsys.readouterr().err
    assert "training diverged: lower --lr" in err and "Traceback" not in err


def test_ctrl_c_during_train_saves_a_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from minivit.train import Trainer

    original = Trainer.train_step

    def train_step(self, x, y):
        if self.step == 1:  # Ctrl-C while the second step runs
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    run = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(run)]) == 130
    assert f"--resume --out {run}" in capsys.readouterr().out
    assert load_checkpoint(run)["meta"]["position"]["step"] == 2


def test_train_config_layers_defaults_recipe_and_explicit_flags():
    args = build_parser().parse_args(["train", "--recipe", "cifar10-quick", "--epochs", "2", "--out", "x",
                                      "--depth", "3", "--no-augment", "--val-size", "0.1"])
    cfg = train_config_from_args(args)
    assert cfg.model == "vit_cifar_patch4_32" and cfg.label_smoothing == 0.1  # from the recipe
    assert cfg.epochs == 2 and cfg.model_kwargs == {"depth": 3} and cfg.augment is False  # flags win
    assert cfg.val_size == 0.1 and cfg.out_dir == "x"
    assert cfg.lr == 1e-3 and cfg.progress is True  # defaults


# ---------------------------------------------------------------------------- eval, predict
def test_eval_prints_the_accuracy_of_a_checkpoint(trained, capsys):
    run, _, train_out = trained
    assert main(["eval", str(run / "checkpoint.npz")]) == 0
    out = capsys.readouterr().out
    match = re.search(r"procedural test: accuracy (\d\.\d+) \((\d+)/2000\)", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(accuracy_in(train_out), abs=1e-4)  # same weights, same data


def test_eval_on_a_corrupt_checkpoint_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt" in err


def test_eval_on_a_missing_checkpoint_exits_2_naming_the_file(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.npz")]) == 2
    assert f"{tmp_path / 'missing.npz'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_of_a_weights_only_checkpoint_do_not_crash(tmp_path, capsys, command):
    from minivit.train.checkpoint import save_checkpoint
    from minivit.variants import create_model

    path = save_checkpoint(tmp_path / "weights.npz", create_model("vit_testing", embed_dim=32, depth=1))
    extra = ["--dataset", "procedural"] if command == "eval" else [str(write_png(tmp_path / "a.png"))]
    code = main([command, str(path), *extra])
    assert code == 0 or (code == 2 and str(path) in capsys.readouterr().err)


def test_fewshot_prints_a_linear_accuracy_per_shot_count(trained, capsys):
    run, _, _ = trained
    assert main(["fewshot", str(run / "best.npz"), "--shots", "1,3", "--seeds", "2", "--test-images", "200"]) == 0
    out = capsys.readouterr().out
    accs = {int(k): float(v) for k, v in re.findall(r"^ *(\d+)-shot linear accuracy: (\d\.\d+)$", out, re.M)}
    assert set(accs) == {1, 3}
    assert all(0.0 <= a <= 1.0 for a in accs.values())


def write_png(path, size=(32, 32), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def parse_predictions(out):
    """{image path: [(class, probability), ...]} from predict's output."""
    result, current = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            name, prob = line.split()
            result[current].append((name, float(prob)))
        elif line:
            current = line
            result[current] = []
    return result


def test_predict_prints_top_k_classes_with_sorted_probabilities(trained, tmp_path, capsys):
    run, _, _ = trained
    a = write_png(tmp_path / "a.png")
    b = write_png(tmp_path / "b.png", size=(50, 40), mode="L", seed=1)  # resized and made RGB
    assert main(["predict", str(run / "best.npz"), str(a), str(b), "--top", "3"]) == 0
    predictions = parse_predictions(capsys.readouterr().out)
    assert list(predictions) == [str(a), str(b)]
    for top in predictions.values():
        names, probs = zip(*top)
        assert len(top) == 3 and len(set(names)) == 3
        assert set(names) <= set(CLASSES)
        assert list(probs) == sorted(probs, reverse=True)
        assert 0.0 < sum(probs) <= 1.0 + 1e-3 and all(p >= 0 for p in probs)


def test_predict_top_k_larger_than_the_classes_lists_every_class_once(trained, tmp_path, capsys):
    run, _, _ = trained
    assert main(["predict", str(run / "checkpoint.npz"), str(write_png(tmp_path / "a.png")), "--top", "50"]) == 0
    (top,) = parse_predictions(capsys.readouterr().out).values()
    assert sorted(name for name, _ in top) == sorted(CLASSES)
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=5e-3)  # printed to 3 decimals


@pytest.mark.parametrize("kind", ["text", "missing", "folder", "empty"])
def test_predict_on_a_file_that_is_not_an_image_exits_2_with_a_message_naming_it(trained, tmp_path, capsys, kind):
    run, _, _ = trained
    path = tmp_path / "notes.png"
    if kind == "text":
        path.write_text("not an image")
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    assert main(["predict", str(run / "checkpoint.npz"), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot read image {path}" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- demo, listings
def test_demo_trains_and_prints_test_accuracy(tmp_path, capsys, monkeypatch):
    from minivit.data import procedural

    monkeypatch.setitem(procedural.DEFAULT_SIZES, "test", 400)  # evaluating 2000 images is the slow part
    out_dir = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--num-samples", "600", "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "600 training, 400 test images" in out
    match = re.search(r"test accuracy (\d+\.\d)% after 1 epochs", out)
    assert match, out
    assert 0.0 <= float(match.group(1)) <= 100.0
    assert (out_dir / "best.npz").is_file() and (out_dir / "curves.png").is_file()
    assert load_checkpoint(out_dir)["meta"]["train_config"]["model"] == "vit_nano_patch8_32"
    # one line per class, whose right answers add up to the test accuracy printed above
    rows = re.findall(r"^  (\S+)\s+\d+\.\d%  \((\d+)/(\d+)\)$", out, re.M)
    assert len(rows) == 10 and sum(int(seen) for _, _, seen in rows) == 400
    assert abs(sum(int(right) for _, right, _ in rows) / 400 - float(match.group(1)) / 100) < 0.0006
    assert "most confused:" in out or "no test image was confused" in out
    assert f"curves: {out_dir / 'curves.png'}" in out


def test_kernels_lists_every_op_and_marks_one_running_implementation_per_op(capsys):
    assert main(["kernels"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for op in kernels.OPS:
        rows = [line for line in lines if line[2:].split()[:1] == [op]]
        assert rows, f"no implementation of {op} listed"
        assert sum(row.startswith("*") for row in rows) == 1, op
    assert main(["kernels", "attention"]) == 0
    rows = capsys.readouterr().out.splitlines()[:-1]
    assert rows and all(row[2:].split()[0] == "attention" for row in rows)


def test_kernels_with_an_unknown_op_exits_2(capsys):
    assert main(["kernels", "convolution"]) == 2
    assert "unknown op 'convolution'" in capsys.readouterr().err


def test_models_lists_the_paper_variants_and_filters_by_pattern(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^vit_base_patch16_224 +img 224  patch 16  depth 12  width  768  heads 12", out, re.M)
    assert "vit_testing" in out and "vit_huge_patch14_224" in out
    assert main(["models", "patch32"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names and all("patch32" in n for n in names)


def test_recipes_lists_every_recipe_with_its_settings(capsys):
    from minivit.train.recipes import RECIPES

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"{name}: " in out
    assert "model=vit_cifar_patch4_32" in out and "__doc__" not in out


# ---------------------------------------------------------------------------- as a program
def _console_script():
    script = Path(sys.executable).with_name("minivit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "minivit.cli"]


def test_console_script_prints_help_listing_the_commands():
    result = subprocess.run([*_console_script(), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("train", "eval", "predict", "demo", "analyze", "kernels", "models", "recipes"):
        assert command in result.stdout


def test_python_dash_m_minivit_cli_returns_mains_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minivit.cli", "eval", str(tmp_path / "missing.npz")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_kernels_in_a_fresh_process_marks_the_running_implementation_of_every_op():
    """Regression: selection() once looked at the table before loading the backends."""
    result = subprocess.run([*_console_script(), "kernels"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    marked = {line[2:].split()[0] for line in result.stdout.splitlines()[:-1] if line.startswith("* ")}
    assert marked == set(kernels.OPS)


def test_convert_writes_an_official_checkpoint_and_reads_it_back_with_the_same_logits(tmp_path, capsys):
    from minivit.train.checkpoint import model_from_checkpoint, save_checkpoint
    from minivit.variants import create_model

    model = create_model("vit_testing")
    model.head.weight.data[...] = np.random.default_rng(0).standard_normal(model.head.weight.shape)
    save_checkpoint(tmp_path / "mine.npz", model)
    assert main(["convert", str(tmp_path / "mine.npz"), str(tmp_path / "official.npz"), "--layout", "big_vision"]) == 0
    assert "big_vision checkpoint" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "official.npz"), str(tmp_path / "back.npz")]) == 0
    back, _ = model_from_checkpoint(tmp_path / "back.npz")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(back(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_convert_of_a_file_that_is_no_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["convert", str(tmp_path / "junk.npz"), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "Traceback" not in err


def test_train_with_the_jax_backend_writes_minivits_checkpoint_and_records_the_backend(tmp_path, capsys):
    pytest.importorskip("jax", reason="--backend jax needs JAX")
    out = tmp_path / "run"
    assert main(["train", "--model", "vit_testing", "--dataset", "procedural", "--num-samples", "64",
                 "--val-size", "0", "--epochs", "1", "--batch-size", "32", "--no-test", "--no-progress",
                 "--backend", "jax", "--devices", "1", "--out", str(out)]) == 0
    assert "JAX on 1 device" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["backend"] == "jax"
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["position"]["step"] == 2


def test_devices_without_the_jax_backend_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--devices needs --backend jax"):
        main(["train", "--model", "vit_testing", "--dataset", "procedural", "--devices", "2",
              "--out", str(tmp_path / "run")])


def test_models_lists_the_other_families_on_request(capsys):
    assert main(["models"]) == 0
    vits = capsys.readouterr().out.splitlines()
    assert vits and all(" patch " in line for line in vits)  # the ViTs alone by default
    assert main(["models", "--family", "resnetv2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("resnetv2_50x1_bit ") and "the family's defaults" in line for line in lines)
    assert all(line.split()[1] == "resnetv2:" for line in lines)
    assert main(["models", "r50", "--family", "all"]) == 0
    assert any(line.startswith("vit_base_r50_s16_224 ") and "hybrid:" in line for line in capsys.readouterr().out.splitlines())
    assert main(["models", "nothing-like-this", "--family", "axial"]) == 1
