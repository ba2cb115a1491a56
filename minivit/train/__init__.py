"""Training a ViT: the trainer and its loop, checkpoints, fine-tuning, named recipes and sweeps.

    from minivit.train import TrainConfig, Trainer
    Trainer(TrainConfig(model="vit_cifar_patch4_32", data_dir="../shared/data/cifar10-jpeg")).fit()
"""
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .trainer import TrainConfig, Trainer, build_optimizer, evaluate, param_groups

__all__ = ["CheckpointError", "TrainConfig", "Trainer", "build_optimizer", "evaluate", "load_checkpoint",
           "model_from_checkpoint", "param_groups", "save_checkpoint"]
