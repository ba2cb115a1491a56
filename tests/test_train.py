"""Tests for minivit.train: a tiny ViT learns the procedural shapes, resumed and interrupted runs
continue bit for bit, divergence and changed settings fail loudly, and the run folder is complete.

Every run uses `vit_testing` (32x32 procedural images, patch 8: 17 tokens) and a few hundred images.
"""
import json
import os
import re
import signal
import time

import numpy as np
import pytest
from PIL import Image

import kernels
from minivit import data as mdata
from minivit.train.checkpoint import CheckpointError, load_checkpoint
from minivit.variants import create_model
from minivit.train import TrainConfig, Trainer, build_optimizer, evaluate, param_groups
from minivit.train.progress import interrupt_flag as _interrupt_flag

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}
# dropout, attention dropout and drop-path all draw from the library RNG: a resume must restore it
TINY_DROPOUT = {**TINY, "drop_rate": 0.1, "attn_drop_rate": 0.1, "drop_path_rate": 0.2}
STEPS_PER_EPOCH, EPOCHS = 8, 2  # 320 images - 64 validation = 256 = 8 batches of 32


def tiny_config(out_dir, **overrides):
    values = dict(model="vit_testing", model_kwargs=dict(TINY_DROPOUT), dataset="procedural", num_samples=320,
                  val_size=64, epochs=EPOCHS, batch_size=32, lr=2e-3, warmup_epochs=0.5, log_every=1,
                  eval_test="epoch", progress=False, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


class RecordingTrainer(Trainer):
    """Records the exact loss of every step (the logged train_loss is a running epoch mean)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses = []

    def train_step(self, x, y):
        loss, hits = super().train_step(x, y)
        self.losses.append(loss)
        return loss, hits


class CtrlCTrainer(RecordingTrainer):
    """Presses Ctrl-C (a real SIGINT) while step `at` (1-based) runs."""

    at = 3

    def train_step(self, x, y):
        if self.step + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(x, y)


def metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert list(a) == list(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"parameters differ: {different}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A: the reference run, trained from start to end without stopping."""
    out = tmp_path_factory.mktemp("uninterrupted")
    trainer = RecordingTrainer(tiny_config(out))
    final = trainer.fit()
    return {"out": out, "final": final, "weights": weights(trainer.model), "losses": trainer.losses,
            "records": metrics(out)}


@pytest.fixture(scope="module", params=[5, STEPS_PER_EPOCH], ids=["stop-mid-epoch", "stop-at-epoch-end"])
def resumed(request, tmp_path_factory):
    """Run B: stopped by max_steps, then resumed in a new Trainer to the end."""
    stop = request.param
    out = tmp_path_factory.mktemp(f"resumed{stop}")
    first = RecordingTrainer(tiny_config(out, max_steps=stop))
    stopped = first.fit()
    ckpt_meta = load_checkpoint(out / "checkpoint.npz")["meta"]
    second = RecordingTrainer(tiny_config(out), resume=True)
    start = (second.step, second.epoch, second.batch)
    final = second.fit()
    return {"stop": stop, "stopped": stopped, "ckpt_meta": ckpt_meta, "start": start, "final": final,
            "weights": weights(second.model), "losses": first.losses + second.losses, "records": metrics(out)}


# ---------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_tiny_vit_learns_procedural_shapes_well_above_chance(tmp_path):
    # one block of width 96 at patch 8: the cheapest setting found that learns in a few hundred steps
    cfg = tiny_config(tmp_path / "run", model_kwargs={**TINY, "embed_dim": 96, "num_heads": 4, "depth": 1},
                      num_samples=3000, val_size=0, epochs=10, batch_size=16, lr=2e-3, warmup_epochs=0.5,
                      augment=False, log_every=1000)
    start = time.perf_counter()
    final = Trainer(cfg).fit()
    print(f"test accuracy {final['test_acc']:.3f}, test loss {final['test_loss']:.3f} after {cfg.epochs} "
          f"epochs ({time.perf_counter() - start:.1f} s)")
    assert final["epoch"] == cfg.epochs
    # It reaches about 0.22 (0.15 after 4 epochs: ViTs learn these shapes slowly). Chance is 0.10,
    # with a standard deviation of 0.007 on 2000 test images.
    assert final["test_acc"] > 0.15
    assert final["test_loss"] < np.log(10) - 0.03


# ---------------------------------------------------------------------------- resume
def test_max_steps_stops_with_a_checkpoint_at_that_step(resumed):
    assert resumed["stopped"] == {"stopped_at_step": resumed["stop"]}
    stop = resumed["stop"]
    assert resumed["ckpt_meta"]["position"] == {"step": stop, "epoch": 0, "batch": stop}
    running = resumed["ckpt_meta"]["epoch_running"]  # this epoch's loss sum, correct, seen, seconds
    assert running[2] > 0 and 0 <= running[1] <= running[2]
    assert resumed["start"] == (stop, 0, stop)


def test_resumed_run_ends_with_bitwise_identical_weights(uninterrupted, resumed):
    assert_same_weights(resumed["weights"], uninterrupted["weights"])


def test_resumed_run_takes_exactly_the_same_per_step_losses(uninterrupted, resumed):
    assert len(uninterrupted["losses"]) == STEPS_PER_EPOCH * EPOCHS
    assert resumed["losses"] == uninterrupted["losses"]


def test_resumed_run_logs_the_same_lr_and_evaluations_as_an_uninterrupted_run(uninterrupted, resumed):
    a, b = uninterrupted["records"], resumed["records"]
    assert [r["step"] for r in b] == [r["step"] for r in a]  # nothing logged twice or lost
    assert [r.get("lr") for r in b] == [r.get("lr") for r in a]
    for key in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert [r.get(key) for r in b] == [r.get(key) for r in a], key
    assert resumed["final"]["test_acc"] == uninterrupted["final"]["test_acc"]


def test_resumed_run_logs_the_same_train_loss_and_acc_as_an_uninterrupted_run(uninterrupted, resumed):
    assert without_timing(resumed["records"]) == without_timing(uninterrupted["records"])


def test_resuming_with_a_changed_learning_rate_raises_checkpoint_error(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=2, epochs=1)).fit()
    with pytest.raises(CheckpointError, match=r"different settings.*'lr': \(0\.002, 0\.01\)"):
        Trainer(tiny_config(tmp_path, epochs=1, lr=1e-2), resume=True)
    with pytest.raises(CheckpointError, match="model_kwargs"):
        Trainer(tiny_config(tmp_path, epochs=1, model_kwargs={**TINY_DROPOUT, "drop_rate": 0.0}), resume=True)
    # settings that do not change the trajectory may change
    trainer = Trainer(tiny_config(tmp_path, epochs=1, log_every=5, eval_test="never"), resume=True)
    assert trainer.step == 2


def test_resuming_without_a_checkpoint_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny_config(tmp_path / "empty"), resume=True)


def test_a_run_resumed_at_max_steps_takes_no_further_step(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=3, epochs=1, eval_test="never")).fit()
    result = Trainer(tiny_config(tmp_path, max_steps=3, epochs=1, eval_test="never"), resume=True).fit()
    assert load_checkpoint(tmp_path)["meta"]["position"]["step"] == 3
    assert result == {"stopped_at_step": 3}


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=3, epochs=1)).fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:  # as if the run went on past its last checkpoint
        f.write(json.dumps({"step": 4, "train_loss": 9.0}) + "\n")
    Trainer(tiny_config(tmp_path, epochs=1), resume=True)
    assert [r["step"] for r in metrics(tmp_path)] == [1, 2, 3]


# ---------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_saves_a_checkpoint_at_that_step_and_resume_matches_an_uninterrupted_run(
        tmp_path, uninterrupted, capsys):
    handler_before = signal.getsignal(signal.SIGINT)
    interrupted = CtrlCTrainer(tiny_config(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert f"saved {tmp_path / 'checkpoint.npz'} at step 3" in capsys.readouterr().out
    assert load_checkpoint(tmp_path)["meta"]["position"] == {"step": 3, "epoch": 0, "batch": 3}

    resumed = RecordingTrainer(tiny_config(tmp_path), resume=True)
    resumed.fit()
    assert interrupted.losses + resumed.losses == uninterrupted["losses"]
    assert_same_weights(weights(resumed.model), uninterrupted["weights"])


def test_ctrl_c_flag_is_set_by_the_first_sigint_and_the_second_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with _interrupt_flag() as interrupted:
        assert not interrupted()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert interrupted()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------- divergence
class NaNAtStep3(Trainer):
    def train_step(self, x, y):
        if self.step == 3:
            self.model.head.bias.data[:] = np.nan
        return super().train_step(x, y)


def test_non_finite_loss_raises_floating_point_error_naming_the_step_and_suggesting_a_lower_lr(
        tmp_path, restore_kernel_choices):
    kernels.select(softmax_cross_entropy="reference")  # the reference returns nan for nan logits
    with pytest.raises(FloatingPointError) as info:
        NaNAtStep3(tiny_config(tmp_path)).fit()
    message = str(info.value)
    assert "loss is nan at step 3" in message
    assert "lower --lr" in message


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_huge_learning_rate_diverges_with_floating_point_error(tmp_path, restore_kernel_choices):
    kernels.select(softmax_cross_entropy="reference")
    with pytest.raises(FloatingPointError, match=r"at step \d+ .*lower --lr"):
        Trainer(tiny_config(tmp_path, lr=1e6, grad_clip=None, warmup_epochs=0)).fit()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_huge_learning_rate_with_default_kernels_raises_floating_point_error(tmp_path, restore_kernel_choices):
    kernels.reset()
    with pytest.raises(FloatingPointError, match=r"at step \d+ .*lower --lr"):
        Trainer(tiny_config(tmp_path, lr=1e6, grad_clip=None, warmup_epochs=0)).fit()


# ---------------------------------------------------------------------------- run folder
def test_run_folder_holds_config_metrics_checkpoints_and_curves(uninterrupted):
    out = uninterrupted["out"]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 2e-3 and config["model"]["embed_dim"] == 32
    assert config["params"] > 0 and isinstance(config["kernels"], dict)

    records = uninterrupted["records"]
    step_records = [r for r in records if "lr" in r]
    epoch_records = [r for r in records if "val_acc" in r]
    assert [r["step"] for r in step_records] == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert [r["epoch"] for r in epoch_records] == [1, 2]
    for r in epoch_records:
        assert 0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert np.isfinite(r["val_loss"]) and np.isfinite(r["test_loss"])

    last = load_checkpoint(out / "checkpoint.npz")["meta"]
    assert last["position"] == {"step": STEPS_PER_EPOCH * EPOCHS, "epoch": EPOCHS, "batch": 0}
    assert last["classes"] == list(mdata.make_procedural("train", 10).classes)
    best = load_checkpoint(out / "best.npz")["meta"]
    assert best["best_val"] == max(r["val_acc"] for r in epoch_records)

    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
        assert im.size[0] > 100 and im.size[1] > 100


def test_the_epoch_end_checkpoint_counts_that_epochs_validation_in_best_val(tmp_path):
    Trainer(tiny_config(tmp_path, epochs=1, eval_test="never")).fit()
    val_acc = [r["val_acc"] for r in metrics(tmp_path) if "val_acc" in r]
    assert load_checkpoint(tmp_path / "checkpoint.npz")["meta"]["best_val"] == max(val_acc)


# ---------------------------------------------------------------------------- pieces
def test_param_groups_exempt_biases_norms_pos_embed_and_cls_token_from_weight_decay():
    model = create_model("vit_testing", **TINY)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.05)
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decayed | exempt == set(names.values()) and not decayed & exempt
    assert {"pos_embed", "cls_token", "norm.weight", "norm.bias", "head.bias",
            "blocks.0.norm1.weight", "blocks.1.attn.qkv.bias"} <= exempt
    assert {"patch_embed.proj.weight", "head.weight", "blocks.0.attn.qkv.weight",
            "blocks.1.mlp.fc2.weight"} <= decayed
    assert all(n.endswith(".weight") and model.state_dict()[n].ndim >= 2 for n in decayed)


@pytest.mark.parametrize("variant", [{"pos_embed": "learn_2d"}, {"pos_embed_at": "every_block"},
                                     {"pos_embed": "relative_bias_2d"}, {"pos_embed": "relative_1d"}])
def test_param_groups_exempt_other_position_embeddings(variant):
    model = create_model("vit_testing", **TINY, **variant)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in param_groups(model, 0.05)[0]["params"]}
    assert not any("pos" in n for n in decayed)


def test_adamw_from_build_optimizer_shrinks_only_decayed_weights(tmp_path):
    model = create_model("vit_testing", **TINY)
    opt = build_optimizer(model, tiny_config(tmp_path, weight_decay=0.5, lr=0.1))
    before = weights(model)
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)  # zero gradient: only the decoupled decay moves anything
    opt.step()
    after = model.state_dict()
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert np.array_equal(after[name], before[name]), name
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"):
        np.testing.assert_allclose(after[name], before[name] * (1 - 0.1 * 0.5), rtol=1e-6)


def test_evaluate_returns_loss_and_accuracy_and_restores_the_training_mode():
    ds = mdata.make_procedural("test", 100)
    loader = mdata.DataLoader(ds, 32, shuffle=False, augment=False, drop_last=False)
    model = create_model("vit_testing", **TINY_DROPOUT)  # its head starts at zero: all logits 0
    model.train()
    loss, acc = evaluate(model, loader)
    assert model.training
    assert acc == np.mean(ds.labels == 0)  # argmax of equal logits is class 0
    np.testing.assert_allclose(loss, np.log(10), rtol=1e-6)

    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.3
    model.eval()
    loss, acc = evaluate(model, loader)
    assert not model.training
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)
    logits = np.concatenate([model(x).numpy() for x, _ in loader.epoch(0)])
    assert acc == np.mean(logits.argmax(axis=1) == ds.labels)
    model.train()
    assert evaluate(model, loader) == (loss, acc)  # dropout is off while evaluating


def test_kernels_option_runs_the_named_implementation_during_fit_and_restores_the_choice_after(
        tmp_path, restore_kernel_choices, monkeypatch):
    kernels.reset()
    default = kernels.get("layernorm").name
    assert default != "reference"
    trainer = Trainer(tiny_config(tmp_path, kernels="layernorm=reference", max_steps=2, eval_test="never"))
    seen = []
    step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, x, y: seen.append(kernels.get("layernorm").name)
                        or step(self, x, y))
    trainer.fit()
    assert seen == ["reference", "reference"]
    assert kernels.get("layernorm").name == default  # the process-wide choice is back
    assert json.loads((tmp_path / "config.json").read_text())["kernels"]["layernorm"] == "reference"


def test_reading_mode_runs_every_op_on_its_reference_during_fit(tmp_path, restore_kernel_choices):
    kernels.reset()
    trainer = Trainer(tiny_config(tmp_path, kernels="reference", max_steps=1, eval_test="never"))
    trainer.fit()
    chosen = json.loads((tmp_path / "config.json").read_text())["kernels"]
    assert set(chosen.values()) == {"reference"} and set(chosen) == set(kernels.OPS)
    assert kernels.get("attention").name != "reference"


def test_an_unknown_kernel_name_raises_value_error_listing_the_choices(tmp_path, restore_kernel_choices):
    with pytest.raises(ValueError, match="no implementation 'nope' of 'layernorm'; available: .*reference"):
        Trainer(tiny_config(tmp_path, kernels="layernorm=nope"))


def test_a_batch_larger_than_the_training_set_asks_for_a_smaller_batch(tmp_path):
    with pytest.raises(ValueError, match="lower --batch-size"):
        Trainer(tiny_config(tmp_path, batch_size=512))


def test_train_config_from_dict_rejects_unknown_options():
    with pytest.raises(TypeError, match=re.escape("['learning_rate']")):
        TrainConfig.from_dict({"lr": 1e-3, "learning_rate": 1e-3})
    assert TrainConfig.from_dict({"lr": 0.5}).lr == 0.5
