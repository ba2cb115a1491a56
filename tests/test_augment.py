"""minivit.data.augment: TrivialAugment's operations against PIL's definitions, Random Erasing's
rectangles, mixup and CutMix's weights, and that every draw comes from the generator given."""
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from minivit.data import augment


def _images(n=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, size=(n, size // 4, size // 4, 3)).repeat(4, 1).repeat(4, 2)
    noise = rng.integers(-20, 21, size=(n, size, size, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)  # structure and texture


def _ours(name, x, m):
    out = getattr(augment, name)(x.astype(np.float32), None if m is None else np.full(len(x), m, np.float32))
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


PIL_OPS = {
    "brightness": lambda im, m: ImageEnhance.Brightness(im).enhance(1 + m),
    "color": lambda im, m: ImageEnhance.Color(im).enhance(1 + m),
    "contrast": lambda im, m: ImageEnhance.Contrast(im).enhance(1 + m),
    "sharpness": lambda im, m: ImageEnhance.Sharpness(im).enhance(1 + m),
    "posterize": lambda im, m: ImageOps.posterize(im, int(m)),
    "solarize": lambda im, m: ImageOps.solarize(im, m),
    "autocontrast": lambda im, m: ImageOps.autocontrast(im),
    "equalize": lambda im, m: ImageOps.equalize(im),
}


@pytest.mark.parametrize("name,m", [("brightness", 0.6), ("brightness", -0.7), ("color", 0.8), ("color", -0.5),
                                    ("contrast", 0.9), ("contrast", -0.6), ("sharpness", 0.9),
                                    ("sharpness", -0.9), ("posterize", 3), ("posterize", 6),
                                    ("solarize", 128), ("solarize", 40), ("autocontrast", None),
                                    ("equalize", None)])
def test_photometric_operation_matches_pil_within_one_level(name, m):
    x = _images()
    ours = _ours(name, x, m).astype(int)
    theirs = np.stack([np.asarray(PIL_OPS[name](Image.fromarray(img), m)) for img in x]).astype(int)
    assert np.abs(ours - theirs).max() <= 1, f"{name}({m}): max difference {np.abs(ours - theirs).max()}"
    assert (ours != x).any() or name == "identity"  # the operation did something to these images


def test_rotate_by_90_degrees_is_a_counter_clockwise_quarter_turn():
    x = _images(n=2)
    assert np.array_equal(_ours("rotate", x, 90.0), np.rot90(x, 1, axes=(1, 2)))


def test_rotate_agrees_with_pil_nearest_except_at_rounding_ties():
    x = _images(n=2, size=32)
    theirs = np.stack([np.asarray(Image.fromarray(img).rotate(30, resample=Image.NEAREST)) for img in x])
    differs = (_ours("rotate", x, 30.0) != theirs).any(-1).mean()
    assert differs < 0.03, f"{differs:.1%} of the pixels differ from PIL's rotation"


def test_translate_moves_content_and_fills_black():
    x = _images(n=2)
    out = _ours("translate_x", x, 5.0)
    assert np.array_equal(out[:, :, 5:], x[:, :, :-5]) and (out[:, :, :5] == 0).all()
    out = _ours("translate_y", x, -3.0)
    assert np.array_equal(out[:, :-3], x[:, 3:]) and (out[:, -3:] == 0).all()


def test_shear_keeps_row_zero_and_shifts_later_rows():
    x = _images(n=1)
    out = _ours("shear_x", x, 0.5)  # source column = column + 0.5 * row
    assert np.array_equal(out[0, 0], x[0, 0])
    assert np.array_equal(out[0, 4, :-2], x[0, 4, 2:])


def test_trivial_augment_applies_one_drawn_operation_per_image():
    x = _images(n=64, size=16)
    out = augment.trivial_augment(x, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    names = list(augment.OPERATIONS)
    ops = rng.integers(0, len(names), size=64)
    bins = rng.integers(0, augment.BINS, size=64)
    signs = np.where(rng.random(64) < 0.5, -1.0, 1.0)
    for i in range(64):
        _, table, signed = augment.OPERATIONS[names[ops[i]]]
        m = None if table is None else table[bins[i]] * (signs[i] if signed else 1.0)
        expected = x[i:i + 1] if names[ops[i]] == "identity" else _ours(names[ops[i]], x[i:i + 1], m)
        assert np.array_equal(out[i:i + 1], expected), f"image {i}: {names[ops[i]]}({m})"
    assert out.dtype == np.uint8 and out.shape == x.shape and (out != x).any()


def test_trivial_augment_is_a_function_of_the_generator_and_leaves_its_input_alone():
    x = _images(n=16)
    before = x.copy()
    a = augment.trivial_augment(x, np.random.default_rng([1, 2, 3]))
    b = augment.trivial_augment(x, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a, b) and np.array_equal(x, before)


def test_trivial_augment_refuses_float_images():
    with pytest.raises(ValueError, match="uint8"):
        augment.trivial_augment(np.zeros((2, 8, 8, 3), np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("mode", augment.ERASE_MODES)
def test_random_erase_replaces_one_rectangle_of_the_stated_size_per_erased_image(mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3, 16, 16)).astype(np.float32) + 10  # no value near 0 or noise
    out = augment.random_erase(x.copy(), np.random.default_rng(5), p=0.5, mode=mode)
    changed = (out != x + 0).any(1)                                   # (B, H, W)
    erased = changed.any((1, 2))
    assert 0.35 < erased.mean() < 0.65                                # p = 0.5
    for img in np.flatnonzero(erased):
        rows, cols = np.flatnonzero(changed[img].any(1)), np.flatnonzero(changed[img].any(0))
        box = changed[img][rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and changed[img].sum() == box.size          # one filled rectangle
        assert 0.02 * 256 - 4 <= box.size <= 256 / 3 + 8              # 2% to 1/3 of the area, rounded
        if mode == "zeros":
            assert (out[img][:, changed[img]] == 0).all()
    assert np.array_equal(out[~erased], x[~erased])


def test_random_erase_rejects_unknown_mode_and_probability():
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="mode"):
        augment.random_erase(x, np.random.default_rng(0), mode="mean")
    with pytest.raises(ValueError, match="probability"):
        augment.random_erase(x, np.random.default_rng(0), p=1.5)


def test_mixup_mixes_each_image_with_its_mirror_by_lam():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    y = np.arange(6)
    out, ya, yb, lam = augment.mix_batch(x, y, np.random.default_rng(1), mixup_alpha=0.8)
    assert 0 < lam < 1 and np.array_equal(ya, y) and np.array_equal(yb, y[::-1])
    np.testing.assert_allclose(out, lam * x + (1 - lam) * x[::-1], rtol=1e-6)


def test_cutmix_pastes_one_box_and_lam_is_the_share_left_to_the_image():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    for seed in range(20):
        out, ya, yb, lam = augment.mix_batch(x, np.arange(4), np.random.default_rng(seed), cutmix_alpha=1.0)
        from_partner = (out == x[::-1]).all(1) & (out != x).any(1)   # (B, H, W)
        assert np.isclose(1 - from_partner[0].mean(), lam)
        assert np.array_equal(from_partner[0], from_partner[1])     # the same box in every image


def test_no_mixing_returns_the_batch_unchanged_and_lam_one():
    x = np.ones((2, 3, 4, 4), np.float32)
    out, ya, yb, lam = augment.mix_batch(x, np.arange(2), np.random.default_rng(0))
    assert out is x and lam == 1.0 and np.array_equal(ya, yb)
    with pytest.raises(ValueError, match=">= 0"):
        augment.mix_batch(x, np.arange(2), np.random.default_rng(0), mixup_alpha=-1)
