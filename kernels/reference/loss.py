"""Softmax cross-entropy with label smoothing (Szegedy et al. 2016), mean over the batch,
with torch.nn.functional.cross_entropy's semantics:

    t = (1 - eps) * onehot(label) + eps / K          # smoothed target, rows sum to 1
    loss = mean_b( -sum_k t[b, k] * log_softmax(logits)[b, k] )
    dlogits = (softmax(logits) - t) / B
"""
import numpy as np


def smoothed_targets(labels, num_classes, label_smoothing, dtype):
    t = np.full((labels.shape[0], num_classes), label_smoothing / num_classes, dtype=dtype)
    t[np.arange(labels.shape[0]), labels] += 1.0 - label_smoothing
    return t


def softmax_cross_entropy_forward(logits, labels, label_smoothing=0.0):
    B, K = logits.shape
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (B, K)
    t = smoothed_targets(labels, K, label_smoothing, logits.dtype)
    loss = -(t * logp).sum() / B
    return np.asarray(loss, dtype=logits.dtype), (logp, t)


def softmax_cross_entropy_backward(grad, cache):
    logp, t = cache
    return ((np.exp(logp) - t) * (grad / logp.shape[0]),)
