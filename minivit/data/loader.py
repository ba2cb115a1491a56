"""In-memory datasets, train/val splits, and a deterministic, resumable, prefetching batch loader.

B=batch, H/W=image size, C=channels, N=images.

Determinism: `DataLoader.epoch(e, start)` draws the shuffle order from `default_rng([seed, e, 1])`
and each batch's augmentation from `default_rng([seed, e, 2, b])` (the crop and flip), `[seed, e,
3, b]` (TrivialAugment) and `[seed, e, 4, b]` (Random Erasing), so batch b of epoch e is the same
whether the epoch runs from 0 or is resumed at `start=b` (how `--resume` reproduces a run).
(The tags keep the streams apart: SeedSequence treats trailing zeros as absent, so `[seed, e]`
and `[seed, e, 0]` would be one and the same stream.)

Prefetch: a daemon thread builds up to `prefetch` batches ahead into a bounded queue; errors in it
re-raise in the consumer, and leaving the loop early sets a stop event so the thread exits.

To the GPU (`device="cuda"`): the thread also copies each batch into a pinned (page-locked) host
buffer, one of a ring of `prefetch + 2`; the consumer queues the copy of batch b to the device on
a side stream before it hands out batch b - 1, so the copy overlaps the step that computes on
b - 1, and the compute stream waits for the copy (an event, not the host) before using b. The
ordering that keeps this correct without host synchronisation, in `to_device_batches`: the
device arrays are allocated on the compute stream (the memory pool reuses them in its order),
the side stream waits for the compute stream's work queued so far before writing them, and a
pinned buffer is refilled only after the copy that read it has finished. The CUDA calls go
through one small object (minivit.device.CudaCopies), which the tests replace by a fake that runs
each copy as late as the protocol allows and so catches a buffer reused too early.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from . import augment as _augment
from .transforms import DATASET_STATS, PADDING_MODES, compute_stats, crop_flip, crop_flip_draws, normalize


@dataclass
class Dataset:
    """Images uint8 (N, H, W, C), labels int64 (N,), class names, and the dataset's name."""
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str = "dataset"
    meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), not {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels {self.labels.shape} do not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, images={self.images.shape}, "
                f"classes={len(self.classes)})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> "Dataset":
        """A new Dataset of the given indices (copies the selected images)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.images[idx], self.labels[idx], list(self.classes), self.name, dict(self.meta))


def split_train_val(ds: Dataset, val_size: int | float = 5000, seed: int = 0,
                    stratify: bool = True) -> tuple[Dataset, Dataset]:
    """Deterministic train/val split; `val_size` is a count or a fraction in (0, 1).

    Stratified: each class gives its share of the validation set (largest-remainder rounding),
    chosen at random within the class. Both parts keep the original image order.
    """
    n = len(ds)
    n_val = val_count(val_size, n)
    rng = np.random.default_rng([seed, 12345])
    perm = rng.permutation(n)
    if not stratify:
        val = perm[:n_val]
    else:
        by_class = perm[np.argsort(ds.labels[perm], kind="stable")]  # classes grouped, random within
        classes, starts, counts = np.unique(ds.labels[by_class], return_index=True, return_counts=True)
        share = n_val * counts / n
        take = np.floor(share).astype(np.int64)
        extra = np.argsort(-(share - take), kind="stable")[: n_val - take.sum()]
        take[extra] += 1
        val = np.concatenate([by_class[s:s + t] for s, t in zip(starts, take)])
    is_val = np.zeros(n, bool)
    is_val[val] = True
    return ds.subset(np.flatnonzero(~is_val)), ds.subset(np.flatnonzero(is_val))


def val_count(val_size, n: int) -> int:
    """Images to hold out: val_size is a fraction in [0, 1) or a whole count; between 0 and n - 1."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"val_size must be a number (a count, or a fraction < 1), got {val_size!r}")
    if not math.isfinite(val_size) or val_size < 0:
        raise ValueError(f"val_size must be a count >= 0 or a fraction in [0, 1), got {val_size}")
    if val_size < 1 and isinstance(val_size, (float, np.floating)):
        n_val = int(round(val_size * n))
    elif val_size != int(val_size):
        raise ValueError(f"val_size {val_size} is neither a fraction below 1 nor a whole number of images")
    else:
        n_val = int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"val_size={val_size} must give between 0 and {n - 1} images of {n}")
    return n_val


def stats_for(ds: Dataset):
    """(mean, std) for normalising `ds`: the published table if known, else measured on ds."""
    if ds.name in DATASET_STATS and len(DATASET_STATS[ds.name][0]) == ds.images.shape[-1]:
        return DATASET_STATS[ds.name]
    return compute_stats(ds.images)


_DONE = object()


class DataLoader:
    """Batches of (x float32 (B, C, H, W) normalised, y int64 (B,)), deterministic in (seed, epoch).

    For evaluation use shuffle=False, augment=False, drop_last=False. crop_padding: what the
    random crop's `pad` pixels of border hold, "zeros" or "reflect" (transforms.random_crop_flip).
    device="cuda": the batches are CuPy arrays, handed over through pinned memory on a side stream
    (the module docstring); `copies` replaces the CUDA calls of that hand-off (the tests pass a fake).
    rows: a slice, to load only those rows of every batch (one process's part of each global batch
    in a multi-process run), each cropped and flipped as it is in the whole batch.
    trivial_augment, random_erase (a probability), random_erase_mode: the stronger augmentation of
    data/augment.py, after the crop and flip (TrivialAugment, on the uint8 pixels) and after the
    normalisation (Random Erasing); both drawn for the whole batch, as the crop is.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 128, shuffle: bool = True,
                 augment: bool = True, mean=None, std=None, seed: int = 0,
                 drop_last: bool = True, prefetch: int = 2, pad: int = 4, device: str = "cpu",
                 copies=None, crop_padding: str = "zeros", rows: slice = slice(None),
                 trivial_augment: bool = False, random_erase: float = 0.0, random_erase_mode: str = "pixel"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
        if crop_padding not in PADDING_MODES:
            raise ValueError(f"crop_padding must be one of {', '.join(PADDING_MODES)}, got {crop_padding!r}")
        if mean is None or std is None:
            m, s = stats_for(dataset)
            mean = m if mean is None else mean
            std = s if std is None else std
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.prefetch, self.pad, self.crop_padding = seed, int(prefetch), int(pad), crop_padding
        self.rows = rows
        _augment.check_erase(random_erase, random_erase_mode)
        self.trivial_augment, self.random_erase = bool(trivial_augment), float(random_erase)
        self.random_erase_mode = random_erase_mode
        self._next_epoch = 0
        self.device, self.copies = "cpu", None
        if copies is not None or device not in (None, "cpu"):  # batches go to the GPU
            from .. import device as _device

            self.device = "gpu" if copies is not None else _device.require(device)
            self.copies = copies or _device.CudaCopies()  # tests hand in a fake

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def order(self, epoch: int) -> np.ndarray:
        """The image order of an epoch: a permutation from default_rng([seed, epoch, 1]) if shuffling."""
        n = len(self.dataset)
        return np.random.default_rng([self.seed, epoch, 1]).permutation(n) if self.shuffle else np.arange(n)

    def batch(self, epoch: int, b: int, order: np.ndarray | None = None):
        """Batch b of an epoch, built from nothing but (seed, epoch, b)."""
        order = self.order(epoch) if order is None else order
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        x = self.dataset.images[idx[self.rows]]                      # (B, H, W, C) uint8, or its rows
        if self.augment:  # drawn for the whole batch, so a row's crop does not depend on the rows loaded
            draws = crop_flip_draws(np.random.default_rng([self.seed, epoch, 2, b]), len(idx), self.pad)
            x = crop_flip(x, *(d[self.rows] for d in draws), self.pad, self.crop_padding)
        if self.trivial_augment:
            draws = _augment.trivial_augment_draws(np.random.default_rng([self.seed, epoch, 3, b]), len(idx))
            x = _augment.apply_trivial_augment(x, *(d[self.rows] for d in draws))
        x = normalize(x, self.mean, self.std)                         # (B, C, H, W) float32
        if self.random_erase:
            mask, fill = _augment.random_erase_draws(np.random.default_rng([self.seed, epoch, 4, b]),
                                                     (len(idx), *x.shape[1:]), self.random_erase,
                                                     mode=self.random_erase_mode)
            x = _augment.apply_random_erase(x, mask[self.rows], fill[self.rows])
        return x, self.dataset.labels[idx[self.rows]]

    def epoch(self, epoch: int, start: int = 0):
        """Yield the batches start, start+1, ... of `epoch` (on the loader's device)."""
        order = self.order(epoch)
        batches = range(start, len(self))
        if self.device == "gpu":
            ring = PinnedRing(self.copies, max(self.prefetch, 0) + 2)
            host = self._built(epoch, batches, order, ring.fill)
            yield from to_device_batches(host, self.copies, ring)
            return
        yield from self._built(epoch, batches, order, None)

    def _built(self, epoch, batches, order, stage):
        """The host batches, each passed through stage (into pinned memory) where one is given:
        in the prefetch thread, or here when prefetch is 0."""
        def make(b):
            batch = self.batch(epoch, b, order)
            return batch if stage is None else stage(batch)

        if self.prefetch <= 0:
            for b in batches:
                yield make(b)
            return
        yield from self._prefetched(make, batches)

    def __iter__(self):
        """Iterate the next epoch (0, 1, 2, ... on successive calls)."""
        self._next_epoch += 1
        return self.epoch(self._next_epoch - 1)

    def _prefetched(self, make, batches):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():  # a timeout loop, so a consumer that left never blocks us
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def work():
            try:
                for b in batches:
                    if not put(make(b)):
                        return
                put(_DONE)
            except BaseException as e:  # handed to the consumer, which re-raises it
                put(e)

        thread = threading.Thread(target=work, name="minivit-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = q.get(timeout=0.1)
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        raise RuntimeError("prefetch thread exited without finishing the epoch")
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # runs on normal end, on error, and on break (generator close)
            stop.set()
            thread.join(timeout=5.0)


# ---------------------------------------------------------------- the hand-off to the GPU
class PinnedRing:
    """`size` pinned host buffers for (x, y), used round-robin. fill() (in the prefetch thread)
    waits until the copy that last read a buffer has finished (copies record it with release()),
    then copies a batch in; a stop event ends the wait when the consumer has gone."""

    def __init__(self, copies, size):
        self.copies, self.size = copies, size
        self.slots = [None] * size  # [x buffer, y buffer] once the first batch's shape is known
        self.copied = [None] * size  # the event after which the device copy of slot i is done
        self.free = [threading.Event() for _ in range(size)]
        for e in self.free:
            e.set()
        self.next = 0
        self.stop = threading.Event()

    def fill(self, batch):
        x, y = batch
        i = self.next
        self.next = (i + 1) % self.size
        while not self.free[i].wait(timeout=0.05):  # the consumer has queued the last copy from it
            if self.stop.is_set():
                raise RuntimeError("the data loader stopped while a pinned buffer was still in use")
        self.free[i].clear()
        if self.copied[i] is not None:
            self.copied[i].synchronize()  # ... and the device has finished reading it
        if self.slots[i] is None or self.slots[i][0].shape[1:] != x.shape[1:] or len(self.slots[i][0]) < len(x):
            self.slots[i] = [self.copies.pinned_empty(x.shape, x.dtype), self.copies.pinned_empty(y.shape, y.dtype)]
        px, py = self.slots[i][0][:len(x)], self.slots[i][1][:len(y)]
        np.copyto(px, x)
        np.copyto(py, y)
        return i, px, py

    def release(self, i, event):
        self.copied[i] = event
        self.free[i].set()


def to_device_batches(staged, copies, ring):
    """Device batches from pinned ones: the copy of batch b is queued on a side stream before
    batch b - 1 is handed out (the ordering rules are in the module docstring)."""
    side = copies.new_stream()
    compute = copies.current_stream()

    def issue(item):
        i, px, py = item
        x, y = copies.empty(px.shape, px.dtype), copies.empty(py.shape, py.dtype)  # on the compute stream
        copies.wait(side, copies.record(compute))  # what last used this memory has run
        copies.copy_async(x, px, side)
        copies.copy_async(y, py, side)
        done = copies.record(side)
        ring.release(i, done)
        return x, y, done

    pending = None
    try:
        for item in staged:
            issued = issue(item)
            if pending is not None:
                copies.wait(compute, pending[2])  # the step on this batch waits for its copy
                yield pending[0], pending[1]
            pending = issued
        if pending is not None:
            copies.wait(compute, pending[2])
            yield pending[0], pending[1]
    finally:
        ring.stop.set()
        staged.close()
