"""Named training recipes for `minivit train --recipe NAME`: tested settings that users can start
from; any explicit flag overrides the recipe."""
from __future__ import annotations

RECIPES: dict[str, dict] = {
    "cifar10-mini": {
        "__doc__": "vit_mini_patch4_32 (0.8M parameters) on CIFAR-10 for 6 epochs: about 45 minutes on 2 cores",
        "model": "vit_mini_patch4_32", "dataset": "cifar10", "epochs": 6, "batch_size": 128, "lr": 1e-3,
        "min_lr": 1e-5, "weight_decay": 0.05, "warmup_epochs": 0.5, "label_smoothing": 0.1, "grad_clip": 1.0,
        "val_size": 5000,
    },
    "cifar10-hour": {
        "__doc__": ("vit_mini_patch4_32 on CIFAR-10 for 8 epochs at a higher learning rate: about an hour on 2 cores "
                    "(64.0% test in 62 min, measured)"),
        "model": "vit_mini_patch4_32", "dataset": "cifar10", "epochs": 8, "batch_size": 128, "lr": 2e-3,
        "min_lr": 1e-5, "weight_decay": 0.05, "warmup_epochs": 0.5, "label_smoothing": 0.1, "grad_clip": 1.0,
        "val_size": 5000,
    },
    "cifar10-quick": {
        "__doc__": "vit_cifar_patch4_32 on CIFAR-10 for 10 epochs: a first result in about half an hour on 2 cores",
        "model": "vit_cifar_patch4_32", "dataset": "cifar10", "epochs": 10, "batch_size": 128, "lr": 1e-3,
        "min_lr": 1e-5, "weight_decay": 0.05, "warmup_epochs": 1, "label_smoothing": 0.1, "grad_clip": 1.0,
        "val_size": 5000,
    },
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return {k: v for k, v in RECIPES[name].items() if k != "__doc__"}
