"""The stronger augmentation as training options (TrainConfig, the loader, the trainer, the CLI):
checked values, batches that are a function of (seed, epoch, batch) for any rows loaded, the mixed
loss, and a run stopped and resumed with every option on that ends with the same weights."""
import numpy as np
import pytest

from minivit import data as mdata
from minivit import functional as F
from minivit.autograd import Tensor, no_grad
from minivit.cli import build_parser
from minivit.cli.args import train_config_from_args
from minivit.data import augment
from minivit.train import TrainConfig, Trainer

TINY = {"depth": 1}  # vit_testing with one block
ALL_ON = dict(trivial_augment=True, random_erase=0.5, mixup_alpha=0.8, cutmix_alpha=1.0)


def config(out_dir, **overrides):
    values = dict(model="vit_testing", model_kwargs=dict(TINY), dataset="procedural", num_samples=192,
                  val_size=64, epochs=2, batch_size=32, lr=2e-3, warmup_epochs=0.5, log_every=1,
                  eval_test="never", progress=False, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("bad,match", [(dict(random_erase=1.5), "random_erase"), (dict(mixup_alpha=-0.1), "mixup_alpha"),
                                       (dict(cutmix_alpha=float("nan")), "cutmix_alpha"),
                                       (dict(random_erase_mode="mean"), "random_erase_mode"),
                                       (dict(trivial_augment="yes"), "trivial_augment")])
def test_augmentation_options_are_checked_when_the_config_is_made(tmp_path, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        config(tmp_path, **bad)


def test_augmentation_options_change_the_trajectory_so_a_resume_may_not_change_them():
    keys = TrainConfig().trajectory_keys()
    assert {"trivial_augment", "random_erase", "random_erase_mode", "mixup_alpha", "cutmix_alpha"} <= set(keys)


def _loader(**kw):
    ds = mdata.load_dataset("procedural", split="train", seed=0, num_samples=64)
    return mdata.DataLoader(ds, 16, seed=3, prefetch=0, **kw)


def test_trivial_augment_and_random_erase_change_the_batch_deterministically():
    plain = _loader().batch(1, 2)[0]
    strong = _loader(trivial_augment=True, random_erase=1.0, random_erase_mode="zeros")
    x, y = strong.batch(1, 2)
    assert np.array_equal(x, strong.batch(1, 2)[0]) and np.array_equal(y, _loader().batch(1, 2)[1])
    assert not np.array_equal(x, plain)
    erased = (x == 0).all(1)                                       # (B, H, W): a zero in every channel
    assert erased.any((1, 2)).all()                                # p = 1: every image has its rectangle


def test_rows_of_a_batch_get_the_augmentation_they_get_in_the_whole_batch():
    kw = dict(trivial_augment=True, random_erase=0.7)
    whole = _loader(**kw).batch(0, 1)[0]
    part = _loader(rows=slice(4, 12), **kw).batch(0, 1)[0]
    assert np.array_equal(part, whole[4:12])


def test_the_mixed_loss_is_the_lam_weighted_loss_of_both_labels(tmp_path):
    trainer = Trainer(config(tmp_path, mixup_alpha=0.8, cutmix_alpha=1.0))
    x, y = next(trainer.train_loader.epoch(0))
    for step in range(3):  # draws from (seed, step): mixup or CutMix, and lam
        trainer.step = step
        xm, ya, yb, lam = augment.mix_batch(x, y, np.random.default_rng([0, step, 5]), 0.8, 1.0)
        assert lam < 1 and not np.array_equal(xm, x)
        with no_grad():
            logits = trainer.model(Tensor(xm))
            expected = lam * F.cross_entropy(logits, ya).item() + (1 - lam) * F.cross_entropy(logits, yb).item()
        loss, _ = trainer.train_step(x, y)
        assert loss == pytest.approx(expected, rel=1e-5)


def test_a_run_with_every_option_on_resumes_to_the_same_weights(tmp_path):
    weights = lambda trainer: trainer.model.state_dict()
    whole = Trainer(config(tmp_path / "a", **ALL_ON))
    whole.fit()
    Trainer(config(tmp_path / "b", max_steps=5, **ALL_ON)).fit()
    resumed = Trainer(config(tmp_path / "b", **ALL_ON), resume=True)
    assert resumed.step == 5
    resumed.fit()
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    plain = Trainer(config(tmp_path / "c"))
    plain.fit()
    assert any(not np.array_equal(a[k], weights(plain)[k]) for k in a)  # the options did change the run


def test_the_cli_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--dataset", "procedural", "--trivial-augment", "--random-erase",
                                      "0.25", "--random-erase-mode", "zeros", "--mixup-alpha", "0.8",
                                      "--cutmix-alpha", "1.0", "--out", "unused"])
    cfg = train_config_from_args(args)
    assert (cfg.trivial_augment, cfg.random_erase, cfg.random_erase_mode, cfg.mixup_alpha, cfg.cutmix_alpha) == \
        (True, 0.25, "zeros", 0.8, 1.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--random-erase", "2"])


def test_pretraining_refuses_mixing_and_erasing():
    from minivit.train.pretrain import PretrainConfig

    with pytest.raises(ValueError, match="masked patch"):
        PretrainConfig(model="vit_testing", dataset="procedural", mixup_alpha=0.8)
