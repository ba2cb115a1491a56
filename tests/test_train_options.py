"""Tests for the trainer's options of issue 12 (CIFAR-10 in an hour): each option does what it
says, a run resumed with it continues bit for bit, a resumed run may not change it, it is checked
when the config is made, and `minivit train` has a flag for it.

Every run uses `vit_testing` (32x32 procedural images, patch 8: a 4x4 grid, 17 tokens), 320
images (64 held out), batches of 32: 8 steps per epoch.
"""
import argparse
import json
import time

import numpy as np
import pytest

from minivit import data as mdata
from minivit import functional as F
from minivit import posemb
from minivit.autograd import Tensor
from minivit.cli.args import add_train_args, train_config_from_args
from minivit.optim import SGD, lr_at
from minivit.train import TrainConfig, Trainer, evaluate
from minivit.train.checkpoint import CheckpointError, load_checkpoint
from minivit.train.config import _TRAJECTORY_KEYS
from minivit.train.ema import ema_decay_at, ema_weights
from minivit.train.finetune import resize_pos_embed
from minivit.train.recipes import get_recipe
from minivit.train.resolution import at_resolution
from minivit.data.transforms import area_resize, area_weights, random_crop_flip
from minivit.variants import create_model
from minivit.vit import mimetic_init

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}
STEPS_PER_EPOCH = 8


def tiny_config(out_dir, **overrides):
    values = dict(model="vit_testing", model_kwargs=dict(TINY), dataset="procedural", num_samples=320,
                  val_size=64, epochs=2, batch_size=32, lr=2e-3, warmup_epochs=0.5, log_every=1,
                  eval_test="never", progress=False, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


class Recording(Trainer):
    """Records every step's loss, its input size, and the weights after it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses, self.sizes, self.before, self.after = [], [], [], []

    def train_step(self, x, y):
        self.sizes.append(x.shape[-1])
        self.before.append(weights(self.model))
        loss, hits = super().train_step(x, y)
        self.losses.append(loss)
        self.after.append(weights(self.model))
        return loss, hits


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def ema_arrays(trainer):
    """{parameter name: its EMA} from the optimizer state."""
    index = {id(p): i for i, p in enumerate(p for g in trainer.optimizer.param_groups for p in g["params"])}
    return {n: trainer.optimizer.state[index[id(p)]]["ema"].copy() for n, p in trainer.model.named_parameters()}


def assert_same(a, b):
    assert list(a) == list(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"arrays differ: {different}"


def metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def run_then_resume(out, stop, **overrides):
    """A run stopped by max_steps at `stop`, then resumed to the end in a new Trainer."""
    first = Recording(tiny_config(out, max_steps=stop, **overrides))
    first.fit()
    second = Recording(tiny_config(out, **overrides), resume=True)
    second.fit()
    return first, second


# ---------------------------------------------------------------------------- 1. weight EMA
def test_ema_decay_starts_at_zero_and_warms_up_as_timm_model_ema_v3_to_its_cap():
    assert ema_decay_at(1, 0.999) == 0.0  # the average starts as the weights after step 1
    assert ema_decay_at(16, 0.999) == pytest.approx(1 - 16 ** -0.75) == pytest.approx(0.875)
    assert ema_decay_at(10 ** 6, 0.999) == 0.999
    assert ema_decay_at(1, 0.9, warmup=False) == 0.0 and ema_decay_at(2, 0.9, warmup=False) == 0.9


def test_ema_after_a_tiny_run_equals_the_hand_computed_average_of_the_weights(tmp_path):
    trainer = Recording(tiny_config(tmp_path, ema_decay=0.5, max_steps=6, val_size=0))
    trainer.fit()
    expected = {k: v.astype(np.float64) for k, v in trainer.after[0].items()}
    for n, w in enumerate(trainer.after[1:], start=2):
        d = min(0.5, 1 - n ** -0.75)  # 0.405 at n = 2, then capped at 0.5
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in w}
    got = ema_arrays(trainer)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert not np.allclose(got["head.weight"], trainer.after[-1]["head.weight"])  # an average, not the weights


def test_evaluation_and_best_npz_use_the_ema_weights(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, ema_decay=0.9, epochs=1, eval_test="end"))
    record = trainer.fit()
    with ema_weights(trainer.optimizer):
        assert (record["val_loss"], record["val_acc"]) == evaluate(trainer.model, trainer.val_loader)
        assert (record["test_loss"], record["test_acc"]) == evaluate(trainer.model, trainer.test_loader)
    assert evaluate(trainer.model, trainer.val_loader)[0] != record["val_loss"]  # the raw weights score otherwise
    best = load_checkpoint(tmp_path / "best.npz")["model"]
    assert_same(best, ema_arrays(trainer))
    assert not np.array_equal(load_checkpoint(tmp_path)["model"]["head.weight"], best["head.weight"])


@pytest.mark.parametrize("stop", [5, STEPS_PER_EPOCH])
def test_a_run_with_ema_resumed_mid_run_ends_bitwise_identical(tmp_path, stop):
    options = dict(ema_decay=0.9, eval_test="epoch")
    whole = Recording(tiny_config(tmp_path / "whole", **options))
    whole.fit()
    first, second = run_then_resume(tmp_path / "resumed", stop, **options)
    assert first.losses + second.losses == whole.losses
    assert_same(weights(second.model), weights(whole.model))
    assert_same(ema_arrays(second), ema_arrays(whole))
    evals = [{k: r.get(k) for k in ("val_acc", "val_loss", "test_acc")} for r in metrics(tmp_path / "whole")]
    assert [{k: r.get(k) for k in ("val_acc", "val_loss", "test_acc")} for r in metrics(tmp_path / "resumed")] == evals


def test_ema_sits_beside_any_optimizers_state(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, ema_decay=0.9, optimizer="sgd", max_steps=3, val_size=0))
    assert isinstance(trainer.optimizer, SGD)
    trainer.fit()
    assert set(ema_arrays(trainer)) == set(trainer.model.state_dict())
    assert all(set(s) == {"momentum_buffer", "ema"} for s in trainer.optimizer.state.values())


# ---------------------------------------------------------------------------- 2. flip TTA
def test_flip_tta_scores_the_mean_logits_of_each_image_and_its_mirror_image():
    ds = mdata.make_procedural("test", 64)
    loader = mdata.DataLoader(ds, 32, shuffle=False, augment=False, drop_last=False)
    model = create_model("vit_testing", **TINY)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.3
    model.eval()
    x = np.concatenate([x for x, _ in loader.epoch(0)])
    plain, mirrored = model(x).numpy(), model(np.ascontiguousarray(x[..., ::-1])).numpy()
    assert not np.allclose(plain, mirrored, atol=1e-3)  # a flip changes this model's logits
    mean = (plain + mirrored) / 2
    loss, acc = evaluate(model, loader, flip_tta=True)
    assert acc == np.mean(mean.argmax(axis=1) == ds.labels)
    np.testing.assert_allclose(loss, F.cross_entropy(Tensor(mean), ds.labels).item(), rtol=1e-5)
    assert evaluate(model, loader)[0] != pytest.approx(loss)


def test_the_trainer_evaluates_with_flip_tta_when_asked(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, flip_tta=True))
    rng = np.random.default_rng(0)
    for p in trainer.model.parameters():  # weights whose logits a flip changes (the init's zero head would not)
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.3
    with_tta = evaluate(trainer.model, trainer.val_loader, flip_tta=True)
    assert trainer.evaluate(trainer.val_loader) == with_tta != evaluate(trainer.model, trainer.val_loader)


# ---------------------------------------------------------------------------- 3. test set at the end
def test_eval_test_end_scores_the_test_set_after_the_last_epoch_only(tmp_path):
    final = Trainer(tiny_config(tmp_path, eval_test="end")).fit()
    epochs = [r for r in metrics(tmp_path) if "val_acc" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert "test_acc" not in epochs[0] and "test_acc" in epochs[1] and "test_acc" in final


def test_eval_test_never_loads_no_test_set(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, eval_test="never", epochs=1))
    assert trainer.test_loader is None
    assert "test_acc" not in trainer.fit()


def test_without_validation_best_npz_is_the_latest_epoch_not_a_mix_of_epochs_and_accuracies(tmp_path):
    Trainer(tiny_config(tmp_path, eval_test="end", val_size=0)).fit()
    best = load_checkpoint(tmp_path / "best.npz")["meta"]
    assert best["position"]["epoch"] == 2 and best["best_val"] == -1.0


def test_a_time_limited_run_with_eval_test_end_scores_the_test_set_when_it_stops(tmp_path, monkeypatch):
    trainer = fake_clock(monkeypatch, Trainer(tiny_config(tmp_path, eval_test="end", epochs=5, time_limit=45)))
    final = trainer.fit()
    assert final["stopped"] == "time_limit" and final["step"] == 5 and "test_acc" in final and "val_acc" in final


def test_eval_test_takes_epoch_end_or_never_only():
    with pytest.raises(ValueError, match="eval_test must be one of epoch, end, never, got 'sometimes'"):
        TrainConfig(eval_test="sometimes")


# ---------------------------------------------------------------------------- 4. schedules and time
def test_the_linear_schedule_with_min_lr_zero_reaches_zero_after_the_last_step(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, schedule="linear", min_lr=0.0, warmup_epochs=0.25))
    trainer.fit()
    lrs = [r["lr"] for r in metrics(tmp_path) if "lr" in r]  # the lr of the next step, after each step
    assert lrs[-1] == 0.0
    decay = np.array(lrs[1:])  # after the 2 warm-up steps: equal decrements of lr / 14
    np.testing.assert_allclose(np.diff(decay), -2e-3 / 14, rtol=1e-9)
    assert lr_at(9, 1.0, 10, 0, "linear", 0.0) == pytest.approx(0.1) and lr_at(10, 1.0, 10, 0, "linear", 0.0) == 0.0


def fake_clock(monkeypatch, trainer, seconds_per_step=10.0):
    """time.perf_counter reads 1000 s + 10 s per step the trainer has taken: a step takes 10 s."""
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0 + seconds_per_step * trainer.step)
    return trainer


def test_schedule_by_time_decays_over_the_time_limit_and_stops_at_the_first_step_past_it(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, schedule="linear", min_lr=0.0, warmup_epochs=0.25, schedule_by="time",
                      time_limit=100, epochs=5, val_size=0)
    trainer = fake_clock(monkeypatch, Trainer(cfg))
    final = trainer.fit()
    assert final["stopped"] == "time_limit" and final["stopped_at_step"] == 11  # 110 s > 100 s
    lrs = {r["step"]: r["lr"] for r in metrics(tmp_path) if "lr" in r}
    assert lrs[1] == pytest.approx(2e-3)  # warm-up: 2 steps, the second at the full lr
    for n in range(2, 12):  # after the warm-up (ended at 20 s): linear in time, 0 at 100 s
        assert lrs[n] == pytest.approx(2e-3 * max(0.0, 1 - (10 * n - 20) / 80), abs=1e-15), n
    clock = load_checkpoint(tmp_path)["meta"]["clock"]
    assert clock == {"elapsed": 110.0, "warmup_end": 20.0}


def test_a_time_budgeted_run_resumed_mid_run_takes_the_same_steps_at_the_same_lr(tmp_path, monkeypatch):
    options = dict(schedule="cosine", schedule_by="time", time_limit=100, epochs=5, val_size=0)
    whole = fake_clock(monkeypatch, Recording(tiny_config(tmp_path / "whole", **options)))
    whole.fit()
    first = fake_clock(monkeypatch, Recording(tiny_config(tmp_path / "resumed", max_steps=5, **options)))
    first.fit()
    second = fake_clock(monkeypatch, Recording(tiny_config(tmp_path / "resumed", **options), resume=True))
    assert second.elapsed == 50.0
    second.fit()
    assert first.losses + second.losses == whole.losses and len(whole.losses) == 11
    assert_same(weights(second.model), weights(whole.model))
    lr = [(r["step"], r["lr"]) for r in metrics(tmp_path / "whole") if "lr" in r]
    assert [(r["step"], r["lr"]) for r in metrics(tmp_path / "resumed") if "lr" in r] == lr


def test_time_limit_counts_the_time_before_a_resume(tmp_path, monkeypatch):
    first = fake_clock(monkeypatch, Trainer(tiny_config(tmp_path, time_limit=45, epochs=5, max_steps=3)))
    first.fit()
    second = fake_clock(monkeypatch, Trainer(tiny_config(tmp_path, time_limit=45, epochs=5), resume=True))
    assert second.fit()["stopped_at_step"] == 5  # 50 s in all, not 3 + 5 steps


def test_schedule_by_time_needs_a_time_limit_and_a_resume_may_not_change_it(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="set time_limit"):
        TrainConfig(schedule_by="time")
    fake_clock(monkeypatch, Trainer(tiny_config(tmp_path, schedule_by="time", time_limit=100, max_steps=2))).fit()
    with pytest.raises(CheckpointError, match="time_limit"):
        Trainer(tiny_config(tmp_path, schedule_by="time", time_limit=200), resume=True)
    with pytest.raises(CheckpointError, match="schedule_by"):
        Trainer(tiny_config(tmp_path, time_limit=100), resume=True)


# ---------------------------------------------------------------------------- 5. mimetic init
def per_head_products(model, block=0):
    """(q k^T of the D one-hot tokens per head (Hh, D, D), W_v W_proj (D, D)) through the model's
    own qkv and proj layers: token i = e_i, so q k^T = W_q^h W_k^h^T."""
    attn = model.blocks[block].attn
    D, Hh, hd = attn.proj.weight.shape[0], attn.num_heads, attn.head_dim
    qkv = attn.qkv(Tensor(np.eye(D, dtype=np.float32)[None])).numpy()[0]  # (D tokens, 3D)
    q, k, v = (qkv[:, j * D:(j + 1) * D].reshape(D, Hh, hd).transpose(1, 0, 2) for j in range(3))  # (Hh, D, hd)
    vo = attn.proj(Tensor(v.transpose(1, 0, 2).reshape(1, D, D))).numpy()[0] - attn.proj.bias.data
    return q @ k.transpose(0, 2, 1), vo


def diagonal_and_rest(m):
    off = ~np.eye(m.shape[-1], dtype=bool)
    return np.diagonal(m, axis1=-2, axis2=-1), np.abs(m[..., off])


def test_mimetic_init_makes_each_heads_query_key_product_a_positive_diagonal_plus_noise():
    model = mimetic_init(create_model("vit_testing", **TINY), np.random.default_rng(0))
    for block in range(2):
        qk, _ = per_head_products(model, block)
        for h in range(2):
            diag, rest = diagonal_and_rest(qk[h])
            assert (diag > 0).all() and diag.mean() > 3 * rest.mean()  # a token attends to tokens like itself
    diag, rest = diagonal_and_rest(per_head_products(create_model("vit_testing", **TINY))[0][0])
    assert abs(diag.mean()) < rest.mean()  # the timm init has no such diagonal


def test_mimetic_init_makes_value_times_projection_minus_beta2_identity_plus_noise():
    model = mimetic_init(create_model("vit_testing", **TINY), np.random.default_rng(0), alpha2=0.4, beta2=0.4)
    _, vo = per_head_products(model)
    diag, rest = diagonal_and_rest(vo)
    assert (diag < 0).all() and diag.mean() == pytest.approx(-0.4, abs=0.1) and rest.mean() < 0.1


def test_the_trainer_applies_mimetic_init_reproducibly_from_the_seed(tmp_path):
    a = Trainer(tiny_config(tmp_path, init="mimetic"))
    b = Trainer(tiny_config(tmp_path, init="mimetic"))
    assert_same(weights(a.model), weights(b.model))
    diag, rest = diagonal_and_rest(per_head_products(a.model)[0][0])
    assert diag.mean() > 3 * rest.mean()
    with pytest.raises(ValueError, match="init='mimetic' initialises a model from scratch"):
        tiny_config(tmp_path, init="mimetic", init_from=str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="init must be one of timm, mimetic"):
        tiny_config(tmp_path, init="xavier")


# ---------------------------------------------------------------------------- 6. low resolution first
LOW = dict(low_res_size=16, low_res_fraction=0.5)  # 16 px (a 2x2 grid) for 8 of 16 steps


def test_a_low_res_run_trains_at_16_then_32_pixels_with_the_embedding_interpolated_at_the_switch(tmp_path):
    trainer = Recording(tiny_config(tmp_path, **LOW))
    trainer.fit()
    assert trainer.sizes == [16] * 8 + [32] * 8
    assert trainer.before[0]["pos_embed"].shape == (1, 5, 32) and trainer.before[8]["pos_embed"].shape == (1, 17, 32)
    expected = resize_pos_embed(trainer.after[7]["pos_embed"], (2, 2), (4, 4), 1)
    np.testing.assert_array_equal(trainer.before[8]["pos_embed"], expected)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    state = trainer.optimizer.state[next(i for i, p in enumerate(params) if p is trainer.model.pos_embed)]
    assert state["exp_avg"].shape == state["exp_avg_sq"].shape == (1, 17, 32)  # the moments were resized too
    assert (state["exp_avg_sq"] >= 0).all()


def test_low_res_batches_are_the_area_average_of_the_augmented_images(tmp_path):
    trainer = Recording(tiny_config(tmp_path, max_steps=1, **LOW))
    seen = []
    step = Trainer.train_step
    trainer.train_step = lambda x, y: seen.append(x) or step(trainer, x, y)
    trainer.fit()
    x, _ = trainer.train_loader.batch(0, 0)  # the same augmented batch, at 32 px
    np.testing.assert_allclose(seen[0], x.reshape(32, 3, 16, 2, 16, 2).mean(axis=(3, 5)), atol=1e-6)


@pytest.mark.parametrize("stop", [6, 8], ids=["stop-at-low-res", "stop-at-the-switch"])
def test_a_low_res_run_resumed_across_the_switch_ends_bitwise_identical(tmp_path, stop):
    options = dict(LOW, ema_decay=0.9)
    whole = Recording(tiny_config(tmp_path / "whole", **options))
    whole.fit()
    first, second = run_then_resume(tmp_path / "resumed", stop, **options)
    assert first.sizes + second.sizes == whole.sizes
    assert first.losses + second.losses == whole.losses
    assert_same(weights(second.model), weights(whole.model))
    assert_same(ema_arrays(second), ema_arrays(whole))


def test_patch_dropout_in_a_low_res_run_changes_training_and_resumes_bitwise_identical(tmp_path):
    options = dict(LOW, model_kwargs=dict(TINY, patch_drop_rate=0.5))  # 2 of 4 patches at 16 px, 8 of 16 at 32
    whole = Recording(tiny_config(tmp_path / "whole", **options))
    whole.fit()
    first, second = run_then_resume(tmp_path / "resumed", 6, **options)  # its draws: minivit.rng, checkpointed
    assert first.losses + second.losses == whole.losses
    assert_same(weights(second.model), weights(whole.model))
    plain = Recording(tiny_config(tmp_path / "plain", **LOW))
    plain.fit()
    assert plain.losses[0] == pytest.approx(whole.losses[0])  # zero head: log(10) on any tokens
    assert all(a != b for a, b in zip(plain.losses[1:], whole.losses[1:]))


def test_evaluation_during_the_low_res_phase_runs_at_full_size_and_puts_the_model_back(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, low_res_size=16, low_res_fraction=0.75, eval_test="epoch", epochs=2))
    trainer.fit()
    records = [r for r in metrics(tmp_path) if "val_acc" in r]
    assert len(records) == 2 and all(0 <= r["test_acc"] <= 1 for r in records)  # epoch 1 ended at 16 px
    stopped = fake_clock(monkeypatch, Trainer(tiny_config(tmp_path / "stopped", low_res_size=16, low_res_fraction=0.75,
                                                          time_limit=45, ema_decay=0.9)))
    assert stopped.fit()["stopped_at_step"] == 5 and stopped.model.config.img_size == 16
    best = load_checkpoint(tmp_path / "stopped" / "best.npz")  # saved in the low-res phase: a 32 px model
    assert best["meta"]["config"]["img_size"] == 32 and best["model"]["pos_embed"].shape == (1, 17, 32)
    model = create_model("vit_testing", **TINY)
    model.set_img_size(16)
    before = model.pos_embed.data
    with at_resolution(model, 32):
        assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10) and model.pos_embed.shape == (1, 17, 32)
    assert model.config.img_size == 16 and model.pos_embed.data is before


def test_set_img_size_recomputes_a_sincos_table_for_the_new_grid():
    model = create_model("vit_testing", **TINY, pos_embed="sincos")
    model.set_img_size(16)
    np.testing.assert_array_equal(model.position_embedding()[1:], posemb.sincos_2d((2, 2), 32))
    assert model(np.zeros((2, 3, 16, 16), np.float32)).shape == (2, 10)


def test_area_resize_is_a_2x2_mean_at_half_size_and_an_overlap_weighted_mean_at_three_quarters():
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(area_resize(x, 16), x.reshape(2, 3, 16, 2, 16, 2).mean(axis=(3, 5)), atol=1e-6)
    w = area_weights(32, 24)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[0, :2], [0.75, 0.25])  # output pixel 0 covers input [0, 4/3)
    assert area_resize(x, 24).shape == (2, 3, 24, 24)


def test_low_res_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(low_res_size=16)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Trainer(tiny_config(tmp_path, low_res_size=12, low_res_fraction=0.5))
    with pytest.raises(ValueError, match="pos_embed in"):  # its 1-D offsets cannot move to another grid
        Trainer(tiny_config(tmp_path, low_res_size=16, low_res_fraction=0.5,
                            model_kwargs={**TINY, "pos_embed": "relative_1d"}))


# ---------------------------------------------------------------------------- 7. reflect padding
def test_reflect_padding_crops_from_the_mirrored_border_with_the_same_draws_as_zero_padding():
    x = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    zeros = random_crop_flip(x, np.random.default_rng(7), pad=2)
    reflect = random_crop_flip(x, np.random.default_rng(7), pad=2, padding_mode="reflect")
    draws = np.random.default_rng(7)
    oy, ox, flips = draws.integers(0, 5, size=6), draws.integers(0, 5, size=6), draws.random(6) < 0.5
    for b in range(6):
        for mode, got in (("reflect", reflect), ("constant", zeros)):
            crop = np.pad(x[b], ((2, 2), (2, 2), (0, 0)), mode=mode)[oy[b]:oy[b] + 8, ox[b]:ox[b] + 8]
            np.testing.assert_array_equal(got[b], crop[:, ::-1] if flips[b] else crop)
    assert (reflect != zeros).any()
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop_flip(x, np.random.default_rng(0), padding_mode="edge")


def test_the_trainer_pads_training_crops_as_asked(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, crop_padding="reflect"))
    assert trainer.train_loader.crop_padding == "reflect"
    images = trainer.train_set.images[trainer.train_loader.order(0)[:32]]
    expected = random_crop_flip(images, np.random.default_rng([0, 0, 2, 0]), 4, padding_mode="reflect")
    x, _ = trainer.train_loader.batch(0, 0)
    np.testing.assert_array_equal(x, mdata.normalize(expected, trainer.mean, trainer.std))
    with pytest.raises(ValueError, match="crop_padding must be one of zeros, reflect"):
        tiny_config(tmp_path, crop_padding="edge")


# ---------------------------------------------------------------------------- every option
NEW_OPTIONS = {"ema_decay": 0.999, "ema_warmup": False, "flip_tta": True, "eval_test": "end", "schedule_by": "time",
               "init": "mimetic", "low_res_size": 16, "low_res_fraction": 0.25, "crop_padding": "reflect"}
FLAGS = ["--ema-decay", "0.999", "--no-ema-warmup", "--flip-tta", "--eval-test", "end", "--schedule-by", "time",
         "--time-limit", "60", "--init", "mimetic", "--low-res-size", "16", "--low-res-fraction", "0.25",
         "--crop-padding", "reflect"]


def test_every_new_option_has_a_flag_of_minivit_train():
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    cfg = train_config_from_args(parser.parse_args(FLAGS + ["--out", "x"]))
    assert {k: getattr(cfg, k) for k in NEW_OPTIONS} == NEW_OPTIONS and cfg.time_limit == 60.0
    default = train_config_from_args(parser.parse_args(["--recipe", "cifar10-hour-all", "--out", "x"]))
    assert default.flip_tta is True and default.ema_warmup is True  # an absent flag keeps the recipe's value
    off = train_config_from_args(parser.parse_args(["--recipe", "cifar10-hour-all", "--out", "x", "--no-flip-tta",
                                                    "--low-res-size", "0", "--ema-decay", "0"]))
    assert (off.flip_tta, off.low_res_size, off.low_res_fraction, off.ema_decay) == (False, None, 0.0, 0.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--ema-decay", "1.5"])


def test_options_that_change_the_run_are_trajectory_keys_and_the_rest_may_change_on_resume(tmp_path):
    assert {"ema_decay", "ema_warmup", "schedule_by", "init", "low_res_size", "low_res_fraction",
            "crop_padding"} <= set(_TRAJECTORY_KEYS)
    assert not {"flip_tta", "eval_test", "time_limit"} & set(_TRAJECTORY_KEYS)
    Trainer(tiny_config(tmp_path, max_steps=2, epochs=1)).fit()
    for changed in ({"ema_decay": 0.9}, {"crop_padding": "reflect"}, {"init": "mimetic"}):
        with pytest.raises(CheckpointError, match=list(changed)[0]):
            Trainer(tiny_config(tmp_path, epochs=1, **changed), resume=True)
    trainer = Trainer(tiny_config(tmp_path, epochs=1, flip_tta=True, eval_test="end", time_limit=5.0), resume=True)
    assert trainer.step == 2


@pytest.mark.parametrize("bad, message", [({"ema_decay": 1.0}, "ema_decay must be >= 0 and < 1"),
                                          ({"ema_warmup": 1}, "ema_warmup must be True or False"),
                                          ({"flip_tta": "yes"}, "flip_tta must be True or False"),
                                          ({"low_res_fraction": 1.0}, "low_res_fraction must be >= 0 and < 1"),
                                          ({"schedule_by": "epochs"}, "schedule_by must be one of steps, time")])
def test_new_options_are_checked_when_the_config_is_made(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        TrainConfig(**bad)


def test_the_numpy_only_options_are_refused_by_another_backend(tmp_path):
    class OtherBackend(Trainer):
        backend = "jax"

    with pytest.raises(ValueError, match="options of the NumPy trainer"):
        OtherBackend(tiny_config(tmp_path, ema_decay=0.9))


def test_the_candidate_recipe_is_a_valid_config_with_every_trick_on():
    cfg = TrainConfig(**get_recipe("cifar10-hour-all"))
    assert cfg.schedule_by == "time" and cfg.min_lr == 0 and cfg.ema_decay > 0 and cfg.flip_tta
    assert cfg.low_res_size == 16 and cfg.crop_padding == "reflect" and cfg.init == "mimetic"


def test_the_hour_recipe_is_the_ablations_best_a_plain_vit_with_sincos_and_average_pooling():
    from minivit.cli.args import check_model_options

    cfg = TrainConfig(**get_recipe("cifar10-hour"))
    assert cfg.init == "timm" and cfg.schedule_by == "time" and cfg.time_limit < 3600 and cfg.eval_test == "end"
    model = check_model_options(cfg.model, cfg.model_kwargs)
    assert (model.pos_embed, model.global_pool, model.class_token) == ("sincos", "avg", False)
    assert model.patch_size == 4  # a linear patch projection: no convolutional stem
    assert model.patch_drop_rate == 0.5
