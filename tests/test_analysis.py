"""Tests for minivit.analysis (Sec. 4.5 numbers), minivit.analysis.plots and minivit.analysis.report, on
constructed cases whose answer is known."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from minivit.analysis import measures as analysis
from minivit.analysis import plots
from minivit.analysis import fewshot
from minivit.analysis.fewshot import fewshot_linear_eval, sample_shots
from minivit.analysis.report import analyze, sample_images


def one_hot_attention(targets, B=2, Hh=3, prefix=1):
    """(B, Hh, T, T) attention where patch query q attends only to patch targets[q]; prefix
    rows/columns get some weight too, to check that they are ignored."""
    N = len(targets)
    T = prefix + N
    a = np.zeros((B, Hh, T, T))
    a[:, :, :, :prefix] = 0.3
    for q, k in enumerate(targets):
        a[:, :, prefix + q, prefix + k] = 0.7
    a[:, :, :prefix, prefix:] = 0.7 / N
    return a


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sincos_2d(gh, gw, D):
    """MAE-style 2D sin-cos position embedding (gh*gw, D)."""
    def one_d(pos, d):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    return np.concatenate([one_d(rows, D // 2), one_d(cols, D // 2)], axis=1)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def assert_png(path, min_w=100, min_h=100):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert w >= min_w and h >= min_h
    return w, h


# ---------------------------------------------------------------------------------------------
# mean attention distance
# ---------------------------------------------------------------------------------------------
def test_attention_to_own_patch_has_mean_distance_zero():
    a = one_hot_attention(list(range(9)))
    d = analysis.mean_attention_distance(a, (3, 3), patch_size=16)
    assert d.shape == (3,)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)


def test_uniform_attention_on_2x2_grid_has_analytic_mean_distance():
    P = 8
    a = np.full((4, 2, 5, 5), 1 / 5)
    # from any corner of a 2x2 grid: distances 0, P, P, P*sqrt(2), each weighted 1/4
    expected = P * (2 + math.sqrt(2)) / 4
    np.testing.assert_allclose(analysis.mean_attention_distance(a, 2, P), expected, rtol=1e-12)


def test_attention_one_step_right_has_distance_one_patch():
    gh, gw, P = 3, 4, 16
    # one step right; the last column looks one step left (the only neighbour it has that way)
    targets = [r * gw + (c + 1 if c < gw - 1 else c - 1) for r in range(gh) for c in range(gw)]
    d = analysis.mean_attention_distance(one_hot_attention(targets), (gh, gw), P)
    np.testing.assert_allclose(d, P, rtol=1e-12)


def test_attention_distance_of_a_layer_list_is_layers_by_heads():
    own = one_hot_attention(list(range(4)), prefix=0)
    uni = np.full((2, 3, 4, 4), 0.25)
    d = analysis.mean_attention_distance([own, uni], 2, 4, num_prefix_tokens=0)
    assert d.shape == (2, 3)
    np.testing.assert_allclose(d[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(d[1], 4 * (2 + math.sqrt(2)) / 4)
    np.testing.assert_allclose(analysis.mean_attention_distance(np.stack([own, uni]), 2, 4, 0), d)


# ---------------------------------------------------------------------------------------------
# attention rollout
# ---------------------------------------------------------------------------------------------
def test_identity_attention_with_residual_rolls_out_to_identity():
    eye = np.broadcast_to(np.eye(5), (2, 4, 5, 5))
    r = analysis.attention_rollout([eye, eye, eye])
    np.testing.assert_allclose(r, np.broadcast_to(np.eye(5), (2, 5, 5)), atol=1e-12)


def test_one_hot_attention_rolls_out_to_one_hot_rows():
    perm = np.array([2, 0, 1, 3])
    A = np.eye(4)[perm][None, None]                            # token i attends to perm[i]
    r = analysis.attention_rollout([A, A], add_residual=False)
    np.testing.assert_allclose(r[0], np.eye(4)[perm[perm]], atol=1e-12)


def test_single_layer_rollout_without_residual_is_head_mean():
    a = softmax(np.random.default_rng(0).normal(size=(2, 3, 6, 6)))
    r = analysis.attention_rollout([a], add_residual=False)
    np.testing.assert_allclose(r, a.mean(axis=1), rtol=1e-12)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_rows_sum_to_one(fusion):
    rng = np.random.default_rng(1)
    attns = [softmax(rng.normal(size=(2, 4, 7, 7)) * 3) for _ in range(5)]
    r = analysis.attention_rollout(attns, head_fusion=fusion)
    assert r.shape == (2, 7, 7)
    np.testing.assert_allclose(r.sum(axis=-1), 1.0, rtol=1e-12)


def test_rollout_multiplies_later_layers_on_the_left():
    rng = np.random.default_rng(2)
    a1, a2 = (softmax(rng.normal(size=(1, 1, 5, 5))) for _ in range(2))
    r = analysis.attention_rollout([a1, a2], add_residual=False)
    np.testing.assert_allclose(r[0], a2[0, 0] @ a1[0, 0], rtol=1e-12)


def test_class_token_map_reads_row_zero_and_peaks_at_one():
    r = np.zeros((1, 5, 5))
    r[0, 0, 1:] = [0.1, 0.4, 0.2, 0.3]
    m = analysis.class_token_attention_map(r, (2, 2))
    np.testing.assert_allclose(m[0], np.array([[0.25, 1.0], [0.5, 0.75]]))


def test_map_without_class_token_averages_all_query_rows():
    r = np.array([[[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], float)
    m = analysis.class_token_attention_map(r, (2, 2), num_prefix_tokens=0)
    np.testing.assert_allclose(m[0], np.array([[0.5, 1.5], [1.0, 1.0]]) / 1.5)


def test_upsample_nearest_repeats_each_cell_and_bilinear_keeps_constants():
    m = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(analysis.upsample_map(m, (4, 6), mode="nearest"),
                                  np.repeat(np.repeat(m, 2, axis=0), 2, axis=1))
    up = analysis.upsample_map(np.full((3, 2, 2), 0.7), 32)
    assert up.shape == (3, 32, 32)
    np.testing.assert_allclose(up, 0.7)
    lin = analysis.upsample_map(m, (2, 30))                    # linear ramp stays monotone
    assert np.all(np.diff(lin, axis=1) >= 0) and lin.min() == 0 and lin.max() == 5


# ---------------------------------------------------------------------------------------------
# position embeddings and filters
# ---------------------------------------------------------------------------------------------
def test_orthogonal_position_embeddings_give_identity_similarity():
    gh, gw = 3, 4
    pe = np.concatenate([np.ones((1, 12)), np.eye(12)])[None]   # (1, 1+12, 12), class row first
    sim = analysis.position_embedding_similarity(pe, (gh, gw))
    assert sim.shape == (gh, gw, gh, gw)
    np.testing.assert_allclose(sim.reshape(12, 12), np.eye(12), atol=1e-12)


def test_sincos_position_similarity_is_symmetric_and_maximal_on_the_diagonal():
    gh, gw = 5, 6
    sim = analysis.position_embedding_similarity(sincos_2d(gh, gw, 64), (gh, gw), 0)
    s = sim.reshape(gh * gw, gh * gw)
    np.testing.assert_allclose(s, s.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(s), 1.0)
    assert np.all(np.argmax(s, axis=1) == np.arange(gh * gw))


def test_filters_that_are_multiples_of_one_pattern_have_one_component():
    rng = np.random.default_rng(3)
    pattern = rng.normal(size=(3, 4, 4))                        # (C, P, P)
    w = rng.normal(size=(32, 1, 1, 1)) * pattern[None]          # (D, C, P, P)
    comps, ratio = analysis.patch_embedding_pcs(w, k=5)
    assert comps.shape == (5, 4, 4, 3) and ratio.shape == (5,)
    np.testing.assert_allclose(ratio, [1, 0, 0, 0, 0], atol=1e-10)
    unit = pattern.transpose(1, 2, 0) / np.linalg.norm(pattern)  # (P, P, C)
    assert abs(np.sum(comps[0] * unit)) == pytest.approx(1.0, abs=1e-10)


def test_pca_component_count_is_clipped_to_the_rank_available():
    comps, ratio = analysis.patch_embedding_pcs(np.random.default_rng(4).normal(size=(6, 1, 2, 2)))
    assert comps.shape == (4, 2, 2, 1)
    assert ratio.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# few-shot linear evaluation
# ---------------------------------------------------------------------------------------------
def gaussian_blobs(n_per_class, K, F, seed, sep=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, F)) * sep
    y = np.repeat(np.arange(K), n_per_class)
    return centres[y] + rng.normal(size=(len(y), F)), y


@pytest.mark.parametrize("F", [8, 200])  # primal (n >= F) and dual (F > n) solves
def test_fewshot_on_separable_features_is_perfect(F):
    x, y = gaussian_blobs(30, 5, F, seed=5)
    idx = sample_shots(y, 10, seed=0)
    test = np.setdiff1d(np.arange(len(y)), idx)
    acc = fewshot_linear_eval(x[idx], y[idx], x[test], y[test], num_classes=5)
    assert acc == 1.0


def test_fewshot_on_random_labels_is_near_chance():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4000, 16))
    y = rng.integers(0, 4, size=4000)
    acc = fewshot_linear_eval(x[:2000], y[:2000], x[2000:], y[2000:], 4)
    assert abs(acc - 0.25) < 0.05


def test_ridge_primal_and_dual_solves_give_the_same_weights():
    rng = np.random.default_rng(7)
    for n, f in [(12, 30), (30, 12)]:                           # wide and tall
        X, Y = rng.normal(size=(n, f)), rng.normal(size=(n, 4))
        np.testing.assert_allclose(fewshot._ridge_solve(X, Y, 2.0, dual=True),
                                   fewshot._ridge_solve(X, Y, 2.0, dual=False), atol=1e-10)


def test_sample_shots_returns_exactly_k_per_class_deterministically():
    y = np.random.default_rng(8).integers(0, 7, size=500)
    idx = sample_shots(y, 5, seed=3)
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=7), np.full(7, 5))
    assert len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(idx, sample_shots(y, 5, seed=3))
    assert not np.array_equal(idx, sample_shots(y, 5, seed=4))
    with pytest.raises(ValueError):
        sample_shots(y, 1000, seed=0)


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def saved(fig, path):
    """The plot functions return the figure and, given a path, write it there as a PNG."""
    assert isinstance(fig, plots.Figure)
    png = fig._repr_png_()  # what a notebook shows: the same image as the file
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == open(path, "rb").read()
    return str(path)


@pytest.mark.parametrize("C", [1, 3])
def test_embedding_filter_plot_is_a_png(tmp_path, C):
    comps = np.random.default_rng(0).normal(size=(28, 4, 4, C))
    p = tmp_path / "f.png"
    w, h = assert_png(saved(plots.plot_embedding_filters(comps, p, explained=np.full(28, 1 / 28)), p), 500, 300)
    assert w > h                                                # 7 columns x 4 rows


def test_position_similarity_plot_is_a_png(tmp_path):
    sim = analysis.position_embedding_similarity(sincos_2d(8, 8, 32), 8, 0)
    p = tmp_path / "s.png"
    assert_png(saved(plots.plot_position_similarity(sim, p), p), 300, 300)


def test_a_plot_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = np.random.default_rng(0).uniform(0, 100, size=(12, 6))
    fig = plots.plot_attention_distance(d, 16, 224)
    assert isinstance(fig, plots.Figure) and fig._repr_png_()[:4] == b"\x89PNG"
    assert list(tmp_path.iterdir()) == []


def test_attention_distance_plot_is_a_png(tmp_path):
    d = np.random.default_rng(0).uniform(0, 100, size=(12, 6))
    p = tmp_path / "d.png"
    assert_png(saved(plots.plot_attention_distance(d, 16, 224, p), p), 400, 300)


@pytest.mark.parametrize("C,dtype", [(3, np.uint8), (1, np.float64)])
def test_attention_maps_plot_is_a_png(tmp_path, C, dtype):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(0, 1, size=(5, 32, 32, C))
    imgs = (imgs * 255).astype(np.uint8) if dtype == np.uint8 else imgs
    maps = rng.uniform(size=(5, 4, 4))
    p = tmp_path / "m.png"
    assert_png(saved(plots.plot_attention_maps(imgs, maps, p, titles=list("abcde")), p), 400, 150)


def test_training_curves_plot_survives_sparse_and_missing_keys(tmp_path):
    recs = [{"step": s, "epoch": s // 10, "train_loss": 2 / (s + 1), "lr": 1e-3} for s in range(30)]
    recs += [{"epoch": e, "step": 10 * e, "val_loss": 1.0 / (e + 1), "val_acc": 0.3 + 0.1 * e}
             for e in range(3)]
    recs += [{"test_acc": 0.6}, {"train_loss": None}, "not a dict"]
    assert_png(saved(plots.plot_training_curves(recs, tmp_path / "c.png"), tmp_path / "c.png"), 600, 250)
    assert_png(saved(plots.plot_training_curves([], tmp_path / "e.png"), tmp_path / "e.png"), 600, 250)


def test_sweep_plot_draws_lines_for_numbers_and_bars_for_names(tmp_path):
    rows = [{"patch": p, "acc": 0.5 + p / 100, "model": m} for p in (4, 8) for m in ("S", "T")]
    assert_png(saved(plots.plot_sweep(rows, "patch", "acc", tmp_path / "l.png", label_key="model"), tmp_path / "l.png"))
    rows = [{"opt": o, "acc": a} for o, a in (("adam", 0.8), ("sgd", 0.7))]
    assert_png(saved(plots.plot_sweep(rows, "opt", "acc", tmp_path / "b.png"), tmp_path / "b.png"))


# ---------------------------------------------------------------------------------------------
# analyze() with a fake model implementing the contract
# ---------------------------------------------------------------------------------------------
class FakeViT:
    def __init__(self, class_token=True, pos_embed=True, img=16, patch=4, C=3, D=24, L=3, Hh=2):
        self.config = SimpleNamespace(img_size=img, patch_size=patch, in_chans=C,
                                      class_token=class_token,
                                      global_pool="token" if class_token else "avg")
        self.num_prefix_tokens = 1 if class_token else 0
        self.grid_size = (img // patch, img // patch)
        self.T = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.L, self.Hh, self.batches = L, Hh, []
        rng = np.random.default_rng(0)
        w = rng.normal(size=(D, C, patch, patch)).astype(np.float32)
        self.sd = {"patch_embed.proj.weight": w}
        if pos_embed:
            self.sd["pos_embed"] = rng.normal(size=(1, self.T, D)).astype(np.float32)

    def state_dict(self):
        return dict(self.sd)

    def position_embedding(self):
        return self.sd["pos_embed"][0] if "pos_embed" in self.sd else None

    def __call__(self, x, out):
        B = len(x)
        self.batches.append(B)
        rng = np.random.default_rng(B)
        out["attention"] = [softmax(rng.normal(size=(B, self.Hh, self.T, self.T))).astype(np.float32)
                            for _ in range(self.L)]
        out["logits"] = rng.normal(size=(B, 10)).astype(np.float32)
        return out["logits"]


def fake_images(B, img=16, C=3):
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(B, C, img, img)).astype(np.float32),
            "display": rng.integers(0, 256, size=(B, img, img, C), dtype=np.uint8)}


FIGURES = ["embedding_filters", "position_similarity", "attention_distance", "attention_maps"]


def test_analyze_writes_four_figures_and_json_with_expected_shapes(tmp_path):
    model = FakeViT()
    paths = analyze(model, fake_images(40), str(tmp_path), num_images=6, batch_size=16)
    for name in FIGURES:
        assert paths[name].endswith(name + ".png")
        assert_png(paths[name], 100, 100)
    assert max(model.batches) <= 16 and sum(model.batches) == 40
    rep = read_json(paths["analysis_json"])
    assert set(rep) >= {"model", "embedding_filters", "position_similarity",
                        "attention_distance", "attention_maps"}
    assert len(rep["embedding_filters"]["explained_variance_ratio"]) == 24   # min(D=24, 48)
    assert np.array(rep["attention_distance"]["per_layer_head"]).shape == (3, 2)
    assert rep["attention_distance"]["num_images"] == 40
    assert len(rep["attention_maps"]["predictions"]) == 6
    assert rep["model"]["grid_size"] == [4, 4]


def test_analyze_without_class_token_or_pos_embed_skips_the_position_figure(tmp_path):
    model = FakeViT(class_token=False, pos_embed=False, C=1)
    paths = analyze(model, fake_images(5, C=1), str(tmp_path), num_images=8, distance_images=3)
    assert "position_similarity" not in paths
    assert not (tmp_path / "position_similarity.png").exists()
    rep = read_json(paths["analysis_json"])
    assert "skipped" in rep["position_similarity"]
    assert rep["attention_distance"]["num_images"] == 3
    assert len(rep["attention_maps"]["predictions"]) == 5
    assert_png(paths["attention_maps"], 100, 100)


def test_sample_images_spreads_over_a_class_sorted_split_and_is_seeded():
    from minivit.data.loader import Dataset

    labels = np.repeat(np.arange(10), 25)  # an image-folder split: sorted by class
    images = np.arange(250, dtype=np.uint8).reshape(250, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)  # pixel = index
    ds = Dataset(images, labels, [str(c) for c in range(10)], "sorted", {})
    first = sample_images(ds, 8)
    assert len(first) == 8 and len(np.unique(first.labels)) >= 4  # the first 8 images would be one class
    np.testing.assert_array_equal(first.labels, labels[first.images[:, 0, 0, 0]])  # images keep their labels
    np.testing.assert_array_equal(sample_images(ds, 8).labels, first.labels)
    assert len(sample_images(ds, 1000)) == 250


def test_position_similarity_summary_separates_rows_from_columns():
    from minivit.analysis.report import _similarity_by_distance

    gh = gw = 4
    r, c = np.divmod(np.arange(gh * gw), gw)
    rows = np.eye(gh)[r]  # an embedding that encodes only the row: same row -> cosine 1, else 0
    sim = analysis.position_embedding_similarity(rows, (gh, gw), num_prefix_tokens=0)
    summary = _similarity_by_distance(sim)
    assert summary["same_row_apart"] == pytest.approx(1.0)
    assert summary["same_column_apart"] == pytest.approx(0.0)
    assert summary["other_apart"] == pytest.approx(0.0)
    # neighbours: of the 2*(4*3)*2 ordered adjacent pairs half share a row
    assert summary["neighbours"] == pytest.approx(0.5)
