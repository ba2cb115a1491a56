"""What a function returns does not depend on a flag, the input's kind or the device:

- `forward_head(x, pre_logits=...)` returns a Tensor for every model family, with and without
  pre_logits, with and without a head, for a Tensor or an array x (timm's contract; before, an
  array x gave an array for pre_logits=True but a Tensor through the head);
- `optim.clip_grad_norm_` returns a 0-d float64 array of the gradients' array module (NumPy
  here; tests/test_gpu.py checks CuPy's without a copy to the host);
- `TrainConfig.eval_test` is one of "epoch", "end", "never"; True and False, which older configs
  and checkpoints hold, are read as "epoch" and "never", and such a run still resumes.
"""
import json

import numpy as np
import pytest

from minivit import optim
from minivit.autograd import Tensor
from minivit.cli import main
from minivit.nn import Parameter
from minivit.train import TrainConfig, Trainer
from minivit.train.checkpoint import load_checkpoint
from minivit.train.config import EVAL_TEST, eval_test_from
from minivit.train.pretrain import PretrainConfig
from minivit.variants import FAMILIES, create_model

# One small model per family (the masked patch predictor is vit_testing with arch="mpp").
SMALL = {"vit": ("vit_testing", {}), "resnetv2": ("resnetv2_testing", {}), "hybrid": ("vit_testing_r11_s4_32", {}),
         "axial": ("axial_vit_testing", {}), "mpp": ("vit_testing", {"arch": "mpp", "num_classes": None})}
VIT_HEADS = [{}, {"global_pool": "avg", "class_token": False}, {"representation_size": 8}, {"num_classes": 0}]


def test_every_model_family_has_a_small_model_here():
    assert set(SMALL) == set(FAMILIES)


def _features(model):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return model.forward_features(x)


@pytest.mark.parametrize("family", list(SMALL))
def test_forward_head_returns_a_tensor_with_and_without_pre_logits_for_tensors_and_arrays(family):
    name, overrides = SMALL[family]
    model = create_model(name, **overrides).eval()
    features = _features(model)
    for x in (features, features.data):
        for pre_logits in (False, True):
            got = model.forward_head(x, pre_logits=pre_logits)
            assert type(got) is Tensor, (family, type(x).__name__, pre_logits)
            assert got.ndim == 2 and got.shape[0] == 2
    np.testing.assert_array_equal(model.forward_head(features.data).data, model.forward_head(features).data)


@pytest.mark.parametrize("head", VIT_HEADS, ids=["token", "avg", "representation", "headless"])
def test_a_vits_forward_head_is_a_tensor_whatever_its_head(head):
    model = create_model("vit_testing", **head).eval()
    features = _features(model)
    D = head.get("representation_size", model.config.embed_dim)
    K = model.config.num_classes or D
    for x in (features, features.data):
        pre, logits = model.forward_head(x, pre_logits=True), model.forward_head(x)
        assert type(pre) is Tensor and pre.shape == (2, D)
        assert type(logits) is Tensor and logits.shape == (2, K)


def test_forward_head_of_a_tensor_keeps_the_graph_to_the_features():
    model = create_model("vit_testing")
    features = _features(model)
    (model.forward_head(features, pre_logits=True) ** 2).sum().backward()  # (the head starts at zero)
    assert model.cls_token.grad is not None and np.abs(model.cls_token.grad).sum() > 0


# ---- clip_grad_norm_ ---------------------------------------------------------------------------
def _is_norm(value):
    return type(value) is np.ndarray and value.shape == () and value.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.1, 1e6])
def test_clip_grad_norm_returns_a_0d_float64_array_clipping_or_not(dtype, max_norm):
    params = [Parameter(np.zeros(4, dtype)), Parameter(np.zeros((2, 3), dtype))]
    params[0].grad, params[1].grad = np.full(4, 1.5, dtype), np.full((2, 3), -2.0, dtype)
    norm = optim.clip_grad_norm_(params, max_norm)
    assert _is_norm(norm) and float(norm) == pytest.approx(np.sqrt(4 * 1.5**2 + 6 * 4.0))
    assert params[0].grad.dtype == dtype  # the gradients keep their dtype


def test_clip_grad_norm_without_gradients_returns_a_0d_zero():
    norm = optim.clip_grad_norm_([Parameter(np.zeros(3, np.float32))], 1.0)
    assert _is_norm(norm) and float(norm) == 0.0


# ---- TrainConfig.eval_test -----------------------------------------------------------------------
@pytest.mark.parametrize("given, read", [(True, "epoch"), (False, "never"), ("epoch", "epoch"), ("end", "end"),
                                         ("never", "never")])
def test_eval_test_is_always_a_string_and_old_booleans_are_read_as_their_meaning(given, read):
    assert eval_test_from(given) == read
    for cfg in (TrainConfig(eval_test=given), TrainConfig.from_dict({"eval_test": given})):
        assert type(cfg.eval_test) is str and cfg.eval_test == read


def test_eval_test_refuses_other_values_naming_the_choices():
    for bad in ("sometimes", 1, None):
        with pytest.raises(ValueError, match=f"eval_test must be one of {', '.join(EVAL_TEST)}, got {bad!r}"):
            TrainConfig(eval_test=bad)


def test_pretraining_never_scores_the_test_split_by_default():
    assert PretrainConfig(model="vit_testing").eval_test == "never"


@pytest.mark.parametrize("old, read", [(True, "epoch"), (False, "never")])
def test_a_run_saved_with_a_boolean_eval_test_resumes_and_keeps_its_meaning(tmp_path, old, read):
    """A run whose config.json and checkpoint hold eval_test=True/False (as runs saved before
    did) resumes from the command line; the boolean decides whether the test split is scored."""
    run = tmp_path / "run"
    trainer = Trainer(TrainConfig(model="vit_testing", dataset="procedural", num_samples=96, val_size=32,
                                  batch_size=32, epochs=1, max_steps=1, progress=False, out_dir=str(run)))
    trainer.fit()
    trainer.cfg.eval_test = old  # what an older minivit wrote: no check runs on assignment
    trainer.save()
    saved = json.loads((run / "config.json").read_text())
    saved["train"]["eval_test"] = old
    (run / "config.json").write_text(json.dumps(saved))
    assert load_checkpoint(run / "checkpoint.npz")["meta"]["train_config"]["eval_test"] is old

    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    resumed = load_checkpoint(run / "checkpoint.npz")["meta"]
    assert resumed["train_config"]["eval_test"] == read and resumed["position"]["step"] == 2
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert ("test_acc" in last) == (read == "epoch")
