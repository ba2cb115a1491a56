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
    # The recipe to tune towards issue 12's goal (80% CIFAR-10 test accuracy within 60 minutes on 2
    # cores, plain ViT), with every trick of the trainer on. Its values are starting points, chosen
    # but not measured: its accuracy and time are owed until a run measures them; then the tuned
    # settings replace "cifar10-hour"'s. The time limit leaves ~5 minutes of the hour for building
    # the data and the model and for the final test evaluation (with flip TTA, two passes).
    "cifar10-hour-next": {
        "__doc__": ("vit_mini_patch4_32 on all 50k CIFAR-10 images for 55 min of training, lr decaying linearly "
                    "to 0 over that time, weight EMA, flip TTA, 16 px for the first 30%, reflect padding, mimetic "
                    "init; test set at the end only (candidate: not yet measured)"),
        "model": "vit_mini_patch4_32", "dataset": "cifar10", "epochs": 100, "batch_size": 128, "lr": 2e-3,
        "min_lr": 0.0, "weight_decay": 0.05, "warmup_epochs": 0.5, "label_smoothing": 0.1, "grad_clip": 1.0,
        "val_size": 0, "eval_test": "end", "schedule": "linear", "schedule_by": "time", "time_limit": 3300.0,
        "ema_decay": 0.999, "flip_tta": True, "low_res_size": 16, "low_res_fraction": 0.3, "crop_padding": "reflect",
        "init": "mimetic",
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
