"""minivit.data: datasets as uint8 arrays in memory, and a deterministic batch loader.

    ds = load_dataset("cifar10", root=None, split="train")      # Dataset: images (N, H, W, C) uint8
    train, val = split_train_val(ds, val_size=5000, seed=0)
    mean, std = DATASET_STATS["cifar10"]
    loader = DataLoader(train, batch_size=128, mean=mean, std=std, seed=0)
    for x, y in loader.epoch(epoch, start=0): ...               # x (B, C, H, W) float32, y (B,) int64

Datasets (the table DATASETS): "cifar10" (official python batches, an image-folder copy, or a
checked download), "folder" (any root/<split>/<class>/* tree), "fashion_mnist" (IDX files) and
"procedural" (shapes generated in code; no files needed). Imports only numpy, pillow, tqdm and the stdlib.
"""
from __future__ import annotations

import numpy as np

from .cache import DataNotFoundError, cache_home, data_home
from .cifar import load_cifar10
from .folder import load_folder
from .idx import load_fashion_mnist
from .loader import DataLoader, Dataset, split_train_val, stats_for
from .procedural import make_procedural
from .transforms import DATASET_STATS, compute_stats, normalize, random_crop_flip


def _cifar10(root, split, download, cache_dir, num_samples, seed, **_):
    return load_cifar10(root, split, download, cache_dir)


def _folder(root, split, download, cache_dir, num_samples, seed, **_):
    if root is None:
        raise ValueError("load_dataset('folder') needs root=<folder with <split>/<class>/ images>")
    return load_folder(root, split, cache_dir=cache_dir)


def _fashion_mnist(root, split, download, cache_dir, num_samples, seed, **_):
    return load_fashion_mnist(root, split)


def _procedural(difficulty):
    """Shapes generated in code: num_samples is how many to make; kwargs go to the generator."""
    def load(root, split, download, cache_dir, num_samples, seed, **kwargs):
        return make_procedural(split, num_samples, seed, difficulty=difficulty, **kwargs)
    return load


# The datasets minivit knows, the one list of them (TrainConfig and `minivit train --dataset`
# offer its keys): name -> loader(root, split, download, cache_dir, num_samples, seed, **kwargs).
DATASETS = {
    "cifar10": _cifar10,
    "procedural": _procedural("hard"),
    "procedural_easy": _procedural("easy"),  # big centred objects, no distractor: the demo's task
    "folder": _folder,
    "fashion_mnist": _fashion_mnist,
}


def load_dataset(name: str, root=None, split: str = "train", download: bool = True,
                 num_samples: int | None = None, seed: int = 0, cache_dir=None,
                 **kwargs) -> Dataset:
    """Load dataset `name`, a key of DATASETS.

    "procedural_easy" is the procedural shapes with big centred objects and no distractor (the
    demo's task); "procedural" the harder default.

    num_samples: procedural generates that many; the others keep a random subset of that size
    (chosen with `seed`, original order kept). cache_dir: where decoded image folders are cached.
    kwargs go to the procedural generator (e.g. num_classes).
    """
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be a positive integer or None (all), got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    ds = DATASETS[name](root, split, download, cache_dir, num_samples, seed, **kwargs)
    if num_samples is not None and num_samples < len(ds):  # a generated set already has num_samples
        idx = np.sort(np.random.default_rng([seed, 777]).choice(len(ds), num_samples, replace=False))
        ds = ds.subset(idx)
    return ds


__all__ = ["load_dataset", "split_train_val", "DataLoader", "Dataset", "DATASET_STATS",
           "DataNotFoundError", "DATASETS", "compute_stats", "stats_for", "normalize",
           "random_crop_flip", "data_home", "cache_home", "load_cifar10", "load_folder",
           "load_fashion_mnist", "make_procedural"]
