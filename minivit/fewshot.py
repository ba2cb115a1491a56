"""Few-shot linear evaluation (ViT paper Section 4.1, "Metrics"): frozen representations of
k labelled images per class, a closed-form regularised least-squares fit to {-1, 1}^K targets,
accuracy on held-out test images; averaged over a few random draws of the shots."""
from __future__ import annotations

import numpy as np

from .analysis import fewshot_linear_eval, sample_shots
from .autograd import no_grad
from .data import normalize


def extract_features(model, images, mean, std, batch_size=256):
    """Pre-logits representations (N, D) of uint8 images (N, H, W, C), without gradients."""
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
