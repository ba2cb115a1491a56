"""Masked patch prediction (minivit/mpp.py, minivit/train/pretrain.py; paper Sec. 4.6, App. B.1.2):
the corruption's proportions (50% of patches; of those 80% [mask], 10% another patch, 10% kept),
the 3-bit mean-colour targets on constructed images (from the pixels before normalisation),
gradients against central differences, and pre-training then fine-tuning with `init_from`.

Shape letters: B batch, C channels, P patch, Np patches, D width, K colour classes (512).
"""
from __future__ import annotations

import numpy as np
import pytest

import minivit
from minivit import Tensor
from minivit.data.transforms import DATASET_STATS, normalize
from minivit.mpp import (Corruption, MaskedPatchPrediction, MPPConfig, corrupt, draw_corruption, mean_colour_targets,
                         mpp_loss, pixels_from_normalized)
from minivit.variants import model_config
from strategies import check_backward, reference_kernels


def mpp_model(dtype="float32", **kw):
    cfg = MPPConfig.from_dict({**model_config("vit_testing").to_dict(), "num_classes": 512, **kw})
    return MaskedPatchPrediction(config=cfg, dtype=dtype)


# ---- the corruption ---------------------------------------------------------------------------

def test_half_of_each_images_patches_are_corrupted_exactly():
    c = draw_corruption(64, 49, np.random.default_rng(0))
    assert (c.corrupted.sum(axis=1) == round(0.5 * 49)).all()
    assert not ((c.masked | c.randomised) & ~c.corrupted).any()  # only corrupted patches are replaced
    assert not (c.masked & c.randomised).any()


def test_corrupted_patches_are_80_percent_masked_10_percent_swapped_10_percent_kept():
    c = draw_corruption(400, 64, np.random.default_rng(1))  # 12,800 corrupted patches
    n = c.corrupted.sum()
    for got, p in ((c.masked.sum(), 0.8), (c.randomised.sum(), 0.1), ((c.corrupted & ~c.masked & ~c.randomised).sum(),
                                                                       0.1)):
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(got - n * p) < 5 * sigma, (got, n * p)  # binomial, 5 standard deviations


def test_a_swapped_patch_takes_another_patchs_embedding_from_anywhere_in_the_batch():
    B, Np = 50, 16
    c = draw_corruption(B, Np, np.random.default_rng(2))
    own = np.arange(B * Np).reshape(B, Np)
    src = c.source[c.randomised]
    assert (src != own[c.randomised]).all() and (src >= 0).all() and (src < B * Np).all()
    assert len(np.unique(src // Np)) > 10  # sources come from many images, not only the patch's own
    assert (c.source[~c.randomised] == own[~c.randomised]).all()


def test_corrupt_writes_the_mask_embedding_the_swapped_embedding_or_leaves_the_patch():
    rng = np.random.default_rng(3)
    B, Np, D = 4, 9, 5
    tokens, mask = rng.standard_normal((B, Np, D)), rng.standard_normal((1, 1, D))
    c = draw_corruption(B, Np, rng, mask_prob=0.5, random_prob=0.3)
    out = corrupt(Tensor(tokens), Tensor(mask), c).data
    flat = tokens.reshape(B * Np, D)
    for b in range(B):
        for i in range(Np):
            want = mask[0, 0] if c.masked[b, i] else flat[c.source[b, i]] if c.randomised[b, i] else tokens[b, i]
            np.testing.assert_array_equal(out[b, i], want)


def test_impossible_proportions_are_refused():
    with pytest.raises(ValueError, match="mask_prob"):
        draw_corruption(2, 4, np.random.default_rng(0), mask_prob=0.8, random_prob=0.3)


# ---- the targets --------------------------------------------------------------------------------

def _image(patches):
    """A (1, 3, 2P, 2P) uint8 image of 2x2 patches of P=4, patches[k] the (3, 4, 4) patch in raster order."""
    img = np.zeros((1, 3, 8, 8), np.uint8)
    for k, p in enumerate(patches):
        i, j = divmod(k, 2)
        img[0, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = p
    return img


def test_targets_are_the_top_3_bits_of_each_channels_mean_read_as_rgb():
    red = np.zeros((3, 4, 4), np.uint8)
    red[0] = 255  # mean (255, 0, 0) -> levels (7, 0, 0) -> 7 * 64
    grey = np.full((3, 4, 4), 100, np.uint8)  # 100 // 32 = 3 on each channel -> 3*64 + 3*8 + 3
    half = np.zeros((3, 4, 4), np.uint8)
    half[2, :, :2] = 64  # blue mean exactly 32: the boundary, level 1 (integers: never 31.999)
    below = np.zeros((3, 4, 4), np.uint8)
    below[1] = 31
    below[1, 0, 0] = 46  # green mean (15 * 31 + 46) / 16 = 31.9375 -> level 0
    targets = mean_colour_targets(_image([red, grey, half, below]), patch_size=4)
    assert targets.tolist() == [[7 * 64, 3 * 64 + 3 * 8 + 3, 1, 0]]


def test_there_are_512_colour_classes_and_fewer_bits_mean_fewer():
    x = np.random.default_rng(4).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    t3, t1 = mean_colour_targets(x, 4), mean_colour_targets(x, 4, bits=1)
    assert t3.shape == (8, 16) and t3.min() >= 0 and t3.max() < 512 and t1.max() < 8
    assert (t1 == ((t3 // 64 >= 4) * 4 + (t3 // 8 % 8 >= 4) * 2 + (t3 % 8 >= 4))).all()  # top bit of each level


def test_targets_come_from_the_pixels_behind_the_normalised_batch():
    pixels = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # (B, H, W, C) stored
    mean, std = DATASET_STATS["cifar10"]
    x = normalize(pixels, mean, std)  # what the loader gives the model: (B, C, H, W), normalised
    back = pixels_from_normalized(x, mean, std)
    np.testing.assert_array_equal(back, pixels.transpose(0, 3, 1, 2))
    naive = np.clip(np.floor(x * 255), 0, 255).astype(np.uint8)  # the normalised values read as pixels
    assert not np.array_equal(mean_colour_targets(naive, 4), mean_colour_targets(back, 4))


def test_targets_refuse_float_pixels():
    with pytest.raises(TypeError, match="uint8"):
        mean_colour_targets(np.zeros((1, 3, 4, 4)), 4)


# ---- the model and its gradients -------------------------------------------------------------------

def test_the_mpp_model_is_a_vit_plus_a_mask_embedding_and_a_512_way_patch_head():
    model, vit = mpp_model(), minivit.create_model("vit_testing", num_classes=0)
    extra = set(model.state_dict()) - set(vit.state_dict())
    assert extra == {"mask_token", "head.weight", "head.bias"}
    assert model.state_dict()["head.weight"].shape == (512, 32)
    logits = model(np.zeros((2, 3, 32, 32), np.float32))
    assert logits.shape == (2, 16, 512)  # every patch of the 4x4 grid


def test_any_named_vit_builds_as_its_masked_patch_predictor_with_arch_mpp():
    model = minivit.create_model("vit_testing", arch="mpp", num_classes=None)  # as PretrainConfig asks for it
    assert isinstance(model, MaskedPatchPrediction) and model.config.num_classes == 512
    assert set(model.state_dict()) - set(minivit.create_model("vit_testing").state_dict()) == {"mask_token"}
    with pytest.raises(ValueError, match="arch"):
        minivit.create_model("resnetv2_testing", arch="mpp")


def test_num_classes_must_be_the_number_of_colour_classes():
    with pytest.raises(ValueError, match="2\\^\\(mpp_bits \\* in_chans\\)"):
        mpp_model(num_classes=10)
    assert mpp_model(in_chans=1, num_classes=8, mpp_bits=3).config.num_classes == 8


def test_only_corrupted_patches_are_scored():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 16, 512))
    targets = rng.integers(0, 512, (2, 16))
    c = draw_corruption(2, 16, rng)
    loss, _ = mpp_loss(Tensor(logits), targets, c)
    changed = logits.copy()
    changed[~c.corrupted] += rng.standard_normal((int((~c.corrupted).sum()), 512))
    assert mpp_loss(Tensor(changed), targets, c)[0].item() == loss.item()
    changed[c.corrupted] += 1.0 + np.eye(512)[targets[c.corrupted]]  # raise the right class of each scored patch
    assert mpp_loss(Tensor(changed), targets, c)[0].item() < loss.item()


def test_corrupt_backward_matches_central_differences_for_tokens_and_the_mask_embedding():
    rng = np.random.default_rng(7)
    c = draw_corruption(3, 6, rng, mask_prob=0.4, random_prob=0.4)
    with reference_kernels():
        check_backward(lambda t, m: corrupt(t, m, c), [rng.standard_normal((3, 6, 4)), rng.standard_normal((1, 1, 4))],
                       seed=7)


def test_whole_mpp_loss_float64_gradients_match_central_differences():
    model = mpp_model("float64").eval()
    rng = np.random.default_rng(8)
    for p in model.parameters():
        p.data += 0.05 * rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 3, 32, 32))
    targets = rng.integers(0, 512, (2, 16))
    c = draw_corruption(2, 16, rng)
    mpp_loss(model(x, c), targets, c)[0].backward()
    eps = 1e-6
    for name, p in model.named_parameters():
        i = np.unravel_index(rng.integers(p.size), p.shape)
        old = p.data[i]
        with minivit.no_grad():
            p.data[i] = old + eps
            plus = mpp_loss(model(x, c), targets, c)[0].item()
            p.data[i] = old - eps
            minus = mpp_loss(model(x, c), targets, c)[0].item()
        p.data[i] = old
        assert p.grad[i] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8), name


def test_the_mask_embedding_learns_only_from_masked_patches():
    model = mpp_model()
    x = np.random.default_rng(9).standard_normal((2, 3, 32, 32)).astype(np.float32)
    targets = np.zeros((2, 16), np.int64)
    model.head.weight.data[:] = 0.01  # the zero head would stop every gradient below it
    none_masked = draw_corruption(2, 16, np.random.default_rng(0), mask_prob=0.0, random_prob=0.5)
    mpp_loss(model(x, none_masked), targets, none_masked)[0].backward()
    assert model.mask_token.grad is None or not model.mask_token.grad.any()
    model.zero_grad()
    some = draw_corruption(2, 16, np.random.default_rng(0))
    mpp_loss(model(x, some), targets, some)[0].backward()
    assert np.abs(model.mask_token.grad).max() > 0


def test_masked_patch_prediction_learns_the_colours_of_a_batch():
    model = mpp_model()
    images = np.random.default_rng(10).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    x = ((images / 255.0 - 0.5) / 0.25).astype(np.float32)
    targets = mean_colour_targets(images, 8)
    opt = minivit.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(11)
    losses = []
    for _ in range(30):
        c = draw_corruption(8, 16, rng)
        loss, _ = mpp_loss(model(x, c), targets, c)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


# ---- pre-training, then fine-tuning ---------------------------------------------------------------

def test_pretraining_exports_an_encoder_that_fine_tuning_loads_without_the_mpp_head(tmp_path):
    from minivit.train import TrainConfig, Trainer
    from minivit.train.pretrain import PretrainConfig, PretrainTrainer

    data = dict(dataset="procedural", num_samples=96, val_size=32, batch_size=16, progress=False)
    pre = PretrainTrainer(PretrainConfig(model="vit_testing", epochs=1, out_dir=str(tmp_path / "mpp"), **data))
    record = pre.fit()
    assert 0 < record["val_loss"] < 10 and 0 <= record["val_acc"] <= 1 and 0 <= record["train_acc"] <= 1
    assert isinstance(pre.model, MaskedPatchPrediction) and "mask_token" in dict(pre.model.named_parameters())
    fine = Trainer(TrainConfig(model="vit_testing", epochs=1, out_dir=str(tmp_path / "ft"),
                               init_from=str(tmp_path / "mpp" / "encoder.npz"), eval_test="never", **data))
    pretrained = pre.model.state_dict()
    for name, value in fine.model.state_dict().items():
        if name.startswith("head."):
            assert not fine.model.head.weight.data.any()  # the classifier's own zero head, not the colour head
        else:
            np.testing.assert_array_equal(value, pretrained[name], err_msg=name)


def test_pretraining_resumes_with_its_mask_embedding(tmp_path):
    from minivit.train.pretrain import PretrainConfig, PretrainTrainer

    cfg = PretrainConfig(model="vit_testing", dataset="procedural", num_samples=64, val_size=0, batch_size=16,
                         epochs=2, max_steps=3, out_dir=str(tmp_path), progress=False)
    first = PretrainTrainer(cfg)
    first.fit()
    again = PretrainTrainer(cfg, resume=True)
    assert again.step == 3
    np.testing.assert_array_equal(again.model.mask_token.data, first.model.mask_token.data)


def test_pretraining_refuses_a_model_that_is_not_a_plain_vit(tmp_path):
    from minivit.train.pretrain import PretrainConfig, PretrainTrainer

    with pytest.raises(ValueError, match="pre-trains a ViT"):
        PretrainTrainer(PretrainConfig(model="resnetv2_testing", dataset="procedural", num_samples=64, val_size=0,
                                       batch_size=16, out_dir=str(tmp_path), progress=False))


def test_a_corruption_is_plain_data():
    c = draw_corruption(2, 4, np.random.default_rng(0))
    assert isinstance(c, Corruption) and all(a.shape == (2, 4) for a in (c.corrupted, c.masked, c.randomised, c.source))


def test_minivit_pretrain_then_train_init_from_its_encoder_from_the_command_line(tmp_path, capsys):
    from minivit.cli import main
    from minivit.train.checkpoint import load_checkpoint

    data = ["--dataset", "procedural", "--num-samples", "256", "--val-size", "0", "--batch-size", "64",
            "--epochs", "1", "--no-progress"]
    run = tmp_path / "mpp"
    assert main(["pretrain", "--model", "vit_testing", "--mask-ratio", "0.25", *data, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "25% of each image's 16 patches corrupted, 512 colour classes" in out
    assert f"encoder for fine-tuning: {run / 'encoder.npz'}" in out
    saved = load_checkpoint(run / "checkpoint.npz")["meta"]["train_config"]
    assert saved["objective"] == "mpp" and saved["mask_ratio"] == 0.25
    assert main(["train", "--model", "vit_testing", "--init-from", str(run / "encoder.npz"), *data,
                 "--no-test", "--out", str(tmp_path / "ft")]) == 0
    encoder = load_checkpoint(run / "encoder.npz")["model"]
    tuned = load_checkpoint(tmp_path / "ft" / "checkpoint.npz")
    assert "mask_token" not in encoder and tuned["model"]["head.weight"].shape == (10, 32)
    # pre-training refuses what it cannot do, with one line and no traceback
    assert main(["pretrain", "--model", "vit_testing", *data, "--init-from", str(run / "encoder.npz"),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "init_from is for fine-tuning" in capsys.readouterr().err
    assert main(["pretrain", "--model", "resnetv2_testing", *data, "--out", str(tmp_path / "bad2")]) == 2
    assert "masked patch prediction pre-trains a ViT" in capsys.readouterr().err
