"""Evaluation: the mean loss and the accuracy of a model over a loader, optionally with flip
test-time augmentation."""
from __future__ import annotations

from .. import device as _device
from .. import functional as F
from ..autograd import Tensor, no_grad


def evaluate(model, loader, label_smoothing=0.0, flip_tta=False):
    """(mean loss, accuracy) over a loader, without gradients, in eval mode. The totals stay on
    the model's device until the end: one copy to the host per pass, not per batch.

    flip_tta: the logits are the mean of the logits of each image and of its mirror image (test-
    time augmentation with the training's flip, as the CIFAR speed-run trainers do), and the loss
    and the accuracy are those of the mean. Logits, not probabilities: their mean is the
    normalised geometric mean of the two predictions, and the loss stays a cross-entropy."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with no_grad():
        for x, y in loader.epoch(0):
            logits = model(Tensor(x))  # a Tensor: the model takes NumPy and CuPy batches alike
            if flip_tta:
                mirrored = model(Tensor(_device.array_module(x).ascontiguousarray(x[..., ::-1])))  # W reversed
                logits = Tensor((logits.data + mirrored.data) * 0.5)
            y = _device.array_module(logits.data).asarray(y)  # labels where the logits are
            total_loss = total_loss + F.cross_entropy(logits, y, label_smoothing).data.astype("float64") * len(y)
            correct = correct + (logits.data.argmax(axis=1) == y).sum()
            count += len(y)
    model.train(was_training)
    total_loss, correct = float(_device.to_host(total_loss)), int(_device.to_host(correct))
    return total_loss / max(count, 1), correct / max(count, 1)


def confusion_matrix(model, loader, num_classes):
    """(K, K) int64 counts over a loader: row = true class, column = predicted class."""
    import numpy as np

    was_training = model.training
    model.eval()
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    with no_grad():
        for x, y in loader.epoch(0):
            predicted = _device.to_host(model(Tensor(x)).data.argmax(axis=1))
            np.add.at(counts, (_device.to_host(y), predicted), 1)
    model.train(was_training)
    return counts
