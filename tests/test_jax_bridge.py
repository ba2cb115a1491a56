"""Tests for minivit.jax_bridge and the JAX trainer: the bridge's forward and gradients are
minivit's, its loss, clipping and optimizers take minivit's steps, the JAX trainer follows the
NumPy trainer step for step, and its checkpoints are minivit's (resume exactly, on either backend).

Everything runs on one CPU device; tests/test_jax_multidevice.py checks 8 devices against 1.
Forward and gradient checks run the bridge eagerly (op by op: no compilation of a whole model per
config); the trainer runs are module fixtures, so each jitted step is compiled once.
"""
import json
import os

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX bridge needs jax: pip install 'minivit[jax]'")

from minivit import functional as F  # noqa: E402
from minivit import jax_bridge as jb  # noqa: E402
from minivit import optim, rng  # noqa: E402
from minivit.autograd import no_grad  # noqa: E402
from minivit.train import TrainConfig, Trainer, evaluate, param_groups  # noqa: E402
from minivit.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from minivit.train.jax_trainer import (JaxTrainer, optimizer_state_from_jax, optimizer_state_to_jax,  # noqa: E402
                                       request_host_devices)
from minivit.vit import ViT  # noqa: E402

TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)  # N = 17, hd = 8
CONFIGS = {  # every position-embedding kind and place, both poolings, the head options
    "learn": {},
    "none": dict(pos_embed="none"),
    "learn_2d": dict(pos_embed="learn_2d"),
    "sincos": dict(pos_embed="sincos"),
    "relative_bias_2d": dict(pos_embed="relative_bias_2d"),
    "relative_1d": dict(pos_embed="relative_1d"),
    "every_block": dict(pos_embed_at="every_block"),
    "every_block_shared": dict(pos_embed_at="every_block_shared"),
    "avg_no_cls": dict(global_pool="avg", class_token=False),
    "avg_cls_relative": dict(global_pool="avg", pos_embed="relative_bias_2d"),
    "avg_no_cls_relative_1d": dict(global_pool="avg", class_token=False, pos_embed="relative_1d"),
    "gap_norm_first": dict(global_pool="avg", class_token=False, fc_norm=False),
    "pre_logits_no_qkv_bias_eps": dict(representation_size=8, qkv_bias=False, norm_eps=1e-5),
    "no_head": dict(num_classes=0),
}


def random_model(seed=0, **kw):
    """A tiny ViT with every parameter random (the default head is all zeros)."""
    model = ViT(**{**TINY, **kw})
    gen = np.random.default_rng(seed)
    model.load_state_dict({k: gen.normal(0, 0.5, v.shape) for k, v in model.state_dict().items()})
    return model


def images(n=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)  # (B, C, H, W)


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


# ---------------------------------------------------------------------------- the model
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_bridge_forward_matches_minivit_to_1e5(kind):
    model = random_model(**CONFIGS[kind]).eval()
    x = images()
    with no_grad():
        expected = model(x).numpy()
    params, apply_fn = jb.to_jax(model)
    got = apply_fn(params, x)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("kind", ["learn", "relative_bias_2d", "relative_1d", "learn_2d", "avg_no_cls",
                                  "pre_logits_no_qkv_bias_eps"])
def test_bridge_gradients_match_minivit_backward_to_1e4(kind):
    model = random_model(**CONFIGS[kind])
    x, y = images(), np.array([0, 3, 1, 4])
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    loss.backward()
    params, apply_fn = jb.to_jax(model)
    value, grads = jax.value_and_grad(lambda p: jb.cross_entropy(apply_fn(p, x), y, 0.1))(params)
    assert abs(float(value) - loss.item()) < 1e-5 * abs(loss.item())
    assert set(grads) == {name for name, _ in model.named_parameters()}
    errors = {name: rel_err(grads[name], p.grad) for name, p in model.named_parameters()}
    assert max(errors.values()) < 1e-4, {k: v for k, v in errors.items() if v >= 1e-4}


def test_from_jax_of_to_jax_round_trips_exactly_and_leaves_minivit_rng_alone():
    model = random_model(pos_embed="relative_1d")
    before = rng.get_rng_state()
    params, _ = jb.to_jax(model)
    back = jb.from_jax(params, model.config)
    assert rng.get_rng_state() == before
    assert back.config == model.config
    original, restored = model.state_dict(), back.state_dict()
    assert list(restored) == list(original) == list(params)
    for name in original:
        assert restored[name].dtype == original[name].dtype
        np.testing.assert_array_equal(restored[name], original[name])


def test_dropout_and_drop_path_need_a_key_and_draw_from_it():
    # one block: each random draw adds seconds of compilation (threefry) on a busy 2-core machine
    model = random_model(depth=1, drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3)
    params, apply_fn = jb.to_jax(model)
    x = images()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="needs a key"):
        apply_fn(params, x, train=True)
    apply_fn = jax.jit(apply_fn, static_argnames="train")  # one compilation instead of many random ops
    a, b = apply_fn(params, x, train=True, rng=key), apply_fn(params, x, train=True, rng=key)
    other = apply_fn(params, x, train=True, rng=jax.random.key(1))
    evaluation = apply_fn(params, x, rng=key)  # train=False: no dropout, key or not
    np.testing.assert_array_equal(a, b)
    assert rel_err(a, other) > 1e-3
    assert rel_err(a, evaluation) > 1e-3
    with no_grad():
        np.testing.assert_allclose(evaluation, model.eval()(x).numpy(), rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_samples():
    x = jax.numpy.ones((64, 5, 3))  # (B, N, D)
    kept = np.asarray(jb.drop_path(x, 0.5, jax.random.key(0)))
    per_sample = kept.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()  # one decision per sample
    assert 10 < (per_sample[:, 0] == 0).sum() < 54


# ---------------------------------------------------------------------------- loss and optimizers
def test_cross_entropy_with_label_smoothing_matches_functional():
    logits = np.random.default_rng(0).normal(0, 3, (6, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 2, 1, 3])
    for smoothing in (0.0, 0.1, 1.0):
        expected = F.cross_entropy(logits, labels, smoothing).item()
        assert abs(float(jb.cross_entropy(logits, labels, smoothing)) - expected) < 1e-6 * expected


def test_clip_grad_norm_matches_minivit():
    model = random_model()
    gen = np.random.default_rng(2)
    grads = {name: gen.normal(0, 1, p.shape).astype(np.float32) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = grads[name].copy()
    norm = optim.clip_grad_norm_(model.parameters(), 1.0)
    clipped, jnorm = jax.jit(jb.clip_grad_norm, static_argnums=1)(grads, 1.0)
    assert abs(float(jnorm) - norm) < 1e-5 * norm
    for name, p in model.named_parameters():
        np.testing.assert_allclose(clipped[name], p.grad, rtol=1e-5, atol=1e-8)


def test_optimizer_spec_exempts_biases_norms_tokens_and_position_embeddings_from_decay():
    model = random_model(pos_embed="relative_bias_2d")
    spec = jb.optimizer_spec(optim.AdamW(param_groups(model, 0.05)), model)
    decayed = sorted(k for k, wd in spec.weight_decay.items() if wd == 0.05)
    exempt = sorted(k for k, wd in spec.weight_decay.items() if wd == 0.0)
    assert decayed and all(k.endswith(".weight") and "norm" not in k for k in decayed)
    assert {"cls_token", "rel_pos_bias", "patch_embed.proj.bias", "norm.weight"} <= set(exempt)
    assert len(decayed) + len(exempt) == len(model.state_dict())


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))  # every optimizer a run can name has a JAX twin
def test_optimizer_update_takes_minivits_steps(name):
    model = random_model()
    options = TrainConfig(lr=1e-2, momentum=0.9, nesterov=True)
    opt = optim.create_optimizer(name, param_groups(model, 0.05), options)
    spec = jb.optimizer_spec(opt, model)
    params, _ = jb.to_jax(model)
    state = jb.init_optimizer_state(params, spec)
    update = jax.jit(lambda params, grads, state: jb.optimizer_update(spec, params, grads, state, 1e-2))
    gen = np.random.default_rng(3)
    for _ in range(3):
        grads = {k: gen.normal(0, 1, p.shape).astype(np.float32) for k, p in model.named_parameters()}
        for k, p in model.named_parameters():
            p.grad = grads[k].copy()
        opt.step()
        params, state = update(params, grads, state)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(params[k], p.data, rtol=2e-5, atol=2e-6, err_msg=k)
    # the state converts to minivit's layout and back without loss
    fresh = optim.create_optimizer(name, param_groups(model, 0.05), options)
    optimizer_state_from_jax(state, fresh, model, spec)
    back = optimizer_state_to_jax(fresh, model, spec, steps_taken=3)
    assert int(back["step"]) == 3
    for key in state:
        if key != "step":
            for k in params:
                np.testing.assert_array_equal(back[key][k], state[key][k])


# ---------------------------------------------------------------------------- the trainer
TRAIN_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # vit_testing: 32x32 procedural images, patch 8
STEPS = 20  # 256 training images / 32 = 8 steps per epoch: 20 steps cross two epoch ends


def train_config(out_dir, **overrides):
    values = dict(model="vit_testing", model_kwargs=dict(TRAIN_MODEL), dataset="procedural", num_samples=320,
                  val_size=64, epochs=3, batch_size=32, lr=2e-3, warmup_epochs=0.5, label_smoothing=0.1,
                  log_every=1, eval_test="never", progress=False, max_steps=STEPS, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


class Recording:
    """Records the exact loss of every step (the logged train_loss is a running epoch mean)."""

    def train_step(self, x, y):
        loss, hits = super().train_step(x, y)
        self.losses = getattr(self, "losses", []) + [loss]
        return loss, hits


class RecordingTrainer(Recording, Trainer):
    pass


class RecordingJaxTrainer(Recording, JaxTrainer):
    pass


def records(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("numpy")
    trainer = RecordingTrainer(train_config(out))
    trainer.fit()
    return {"losses": trainer.losses, "records": records(out)}


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax")
    trainer = RecordingJaxTrainer(train_config(out))
    result = trainer.fit()
    return {"trainer": trainer, "out": out, "result": result, "losses": trainer.losses, "records": records(out),
            "weights": {k: v.copy() for k, v in trainer.model.state_dict().items()}}


@pytest.fixture(scope="module")
def resumed_jax_run(tmp_path_factory):
    """Stopped by max_steps mid-epoch (step 12 of 20), then resumed in a new JaxTrainer."""
    out = tmp_path_factory.mktemp("jax_resumed")
    first = RecordingJaxTrainer(train_config(out, max_steps=12))
    first.fit()
    (out / "step12.npz").write_bytes((out / "checkpoint.npz").read_bytes())
    second = RecordingJaxTrainer(train_config(out), resume=True)
    start = second.step
    second.fit()
    return {"start": start, "losses": first.losses + second.losses, "records": records(out),
            "weights": {k: v.copy() for k, v in second.model.state_dict().items()}, "out": out}


def test_jax_trainer_takes_the_numpy_trainers_losses_for_20_steps(numpy_run, jax_run):
    a, b = np.array(numpy_run["losses"]), np.array(jax_run["losses"])
    assert len(a) == len(b) == STEPS
    assert (np.abs(a - b) / np.abs(a)).max() < 1e-4
    assert np.ptp(a) > 1e-3  # the weights moved: the comparison is not between 20 copies of step 0


def test_jax_trainer_logs_what_the_numpy_trainer_logs(numpy_run, jax_run):
    a, b = numpy_run["records"], jax_run["records"]
    assert [sorted(r) for r in b] == [sorted(r) for r in a]  # the same records with the same keys
    for ra, rb in zip(a, b):
        assert rb["step"] == ra["step"] and rb.get("lr") == ra.get("lr")
        for key in ("train_loss", "val_loss"):
            if key in ra:
                assert abs(rb[key] - ra[key]) < 1e-4 * abs(ra[key]), (ra, rb)
        for key in ("train_acc", "val_acc"):  # argmax may flip on a near-tie: one image in 64 allowed
            if key in ra:
                assert abs(rb[key] - ra[key]) <= 1 / 64, (ra, rb)


def test_jax_trainer_saves_a_minivit_checkpoint_of_its_final_parameters(jax_run):
    trainer, out = jax_run["trainer"], jax_run["out"]
    assert jax_run["result"] == {"stopped_at_step": STEPS}
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt["meta"]["position"] == {"step": STEPS, "epoch": 2, "batch": STEPS - 16}
    model, _ = model_from_checkpoint(ckpt)
    on_device = jax.device_get(trainer.params)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, on_device[name])
    state = ckpt["optim"]  # AdamW moments of every parameter, at step 20
    assert len(state) == len(on_device) and ckpt["meta"]["optimizer"]["scalars"]["0"]["step"] == STEPS
    assert np.abs(state[0]["exp_avg_sq"]).max() > 0


def test_resumed_jax_run_continues_the_exact_trajectory(jax_run, resumed_jax_run):
    assert resumed_jax_run["start"] == 12
    assert resumed_jax_run["losses"] == jax_run["losses"]
    for name, value in jax_run["weights"].items():
        np.testing.assert_array_equal(resumed_jax_run["weights"][name], value, err_msg=name)
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in resumed_jax_run["records"]]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in jax_run["records"]]


def test_numpy_trainer_resumes_a_jax_checkpoint(jax_run, resumed_jax_run, tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes((resumed_jax_run["out"] / "step12.npz").read_bytes())
    numpy_trainer = RecordingTrainer(train_config(tmp_path), resume=True)
    assert numpy_trainer.step == 12
    numpy_trainer.fit()
    a, b = np.array(jax_run["losses"][12:]), np.array(numpy_trainer.losses)
    assert len(b) == STEPS - 12
    assert (np.abs(a - b) / np.abs(a)).max() < 1e-4


def test_jax_evaluate_matches_the_numpy_evaluate(jax_run):
    trainer = jax_run["trainer"]
    trainer.sync_to_minivit()
    loss, acc = trainer.evaluate(trainer.val_loader)
    expected_loss, expected_acc = evaluate(trainer.model, trainer.val_loader)
    assert abs(loss - expected_loss) < 1e-5 * expected_loss
    assert abs(acc - expected_acc) <= 1 / 64


def test_request_host_devices_after_jax_started_raises_and_leaves_the_environment_alone(monkeypatch):
    jax.devices()  # this process's JAX runs on 1 CPU device
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nonexistent --xla_force_host_platform_device_count=2")
    before = dict(os.environ)
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        request_host_devices(4)
    assert dict(os.environ) == before
