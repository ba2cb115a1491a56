"""Few-shot linear evaluation (ViT paper Section 4.1, "Metrics"): frozen representations of
k labelled images per class, a closed-form regularised least-squares fit to {-1, 1}^K targets,
accuracy on held-out test images; averaged over a few random draws of the shots."""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..data import normalize


def sample_shots(labels, shots, seed=0, num_classes=None):
    """Indices (sorted) of exactly `shots` examples of each class, chosen by `seed`.

    Classes are range(num_classes) if given, else the labels present. Raises if a class has
    fewer than `shots` examples.
    """
    labels = np.asarray(labels).ravel()
    classes = np.arange(num_classes) if num_classes is not None else np.unique(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if idx.size < shots:
            raise ValueError(f"class {c} has {idx.size} examples, fewer than shots={shots}")
        picked.append(rng.choice(idx, size=shots, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def _ridge_solve(X, Y, l2_reg, dual=None):
    """W = (X^T X + l2 I)^{-1} X^T Y, via the smaller system: the dual form
    X^T (X X^T + l2 I)^{-1} Y is the same W and cheaper when X has more columns than rows."""
    n, f = X.shape
    if dual is None:
        dual = f > n
    if dual:
        return X.T @ np.linalg.solve(X @ X.T + l2_reg * np.eye(n), Y)
    return np.linalg.solve(X.T @ X + l2_reg * np.eye(f), X.T @ Y)


def fewshot_linear_eval(train_feats, train_labels, test_feats, test_labels, num_classes,
                        l2_reg=1.0, *, standardize=True, bias_constant=100.0):
    """Few-shot linear accuracy (Sec. 4.1 "Metrics"): ridge regression to {-1, 1}^K targets.

    W = argmin ||X W - Y||^2 + l2 ||W||^2 in closed form, X = [features, bias column], solved in
    float64 as (X^T X + l2 I) W = X^T Y, or in the equivalent dual form X^T (X X^T + l2 I)^{-1} Y
    when there are fewer examples than features (the usual few-shot case).
    Following big_vision's evaluator, features are standardised with the training mean/std and
    the bias column is a large constant (100) so the bias is almost unregularised.
    Returns the test accuracy of argmax(X_test W) in [0, 1].
    """
    Xtr = np.asarray(train_feats, dtype=np.float64).reshape(len(train_feats), -1)   # (n, F)
    Xte = np.asarray(test_feats, dtype=np.float64).reshape(len(test_feats), -1)     # (m, F)
    ytr = np.asarray(train_labels).astype(int).ravel()
    yte = np.asarray(test_labels).astype(int).ravel()
    if standardize:
        mean, std = Xtr.mean(axis=0), Xtr.std(axis=0) + 1e-5
        Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    Xtr = np.concatenate([Xtr, np.full((len(Xtr), 1), bias_constant)], axis=1)     # (n, F+1)
    Xte = np.concatenate([Xte, np.full((len(Xte), 1), bias_constant)], axis=1)     # (m, F+1)
    Y = 2.0 * np.eye(num_classes)[ytr] - 1.0                    # (n, K) in {-1, 1}
    W = _ridge_solve(Xtr, Y, l2_reg)                            # (F+1, K)
    pred = np.argmax(Xte @ W, axis=1)                           # (m,)
    return float(np.mean(pred == yte)) if len(yte) else 0.0


def extract_features(model, images, mean, std, batch_size=256):
    """Pre-logits representations (B, D) of uint8 images (B, H, W, C), without gradients."""
    feats = []
    was_training = model.training
    model.eval()
    with no_grad():
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size], mean, std)
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    model.train(was_training)
    return np.concatenate(feats).astype(np.float64)


def fewshot_from_checkpoint(model, normalization, train_set, test_set, shots, seeds=3, test_images=2000):
    """{k: mean accuracy over `seeds` draws} for each k in shots; normalization = (mean, std)."""
    mean, std = normalization
    rng = np.random.default_rng(0)
    test_idx = np.sort(rng.choice(len(test_set), min(test_images, len(test_set)), replace=False))
    test_feats = extract_features(model, test_set.images[test_idx], mean, std)
    test_labels = test_set.labels[test_idx]
    K = train_set.num_classes
    results = {}
    for k in shots:
        accs = []
        for seed in range(seeds):
            idx = sample_shots(train_set.labels, k, seed=seed, num_classes=K)
            feats = extract_features(model, train_set.images[idx], mean, std)
            accs.append(fewshot_linear_eval(feats, train_set.labels[idx], test_feats, test_labels, K))
        results[k] = float(np.mean(accs))
    return results
