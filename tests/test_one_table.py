"""Optimizers, learning-rate schedules and datasets are each listed once, in a table beside what
they name (optim.OPTIMIZERS, optim.SCHEDULES, minivit.data.DATASETS); TrainConfig and every
`minivit` command that takes one of them offer that table's keys. The proof that nothing else
lists them: an entry added to a table (monkeypatched in) is at once accepted by the config,
offered by the command line and used by the run, and an unknown name is refused naming the
choices. SGD's Nesterov momentum is an option of the config (on by default, as timm's "sgd").
"""
import argparse

import numpy as np
import pytest

from minivit import data as mdata
from minivit import optim
from minivit.cli import build_parser
from minivit.cli.args import add_train_args, train_config_from_args
from minivit.data.transforms import PADDING_MODES
from minivit.nn import Parameter
from minivit.train import TrainConfig, Trainer, build_optimizer
from minivit.train.config import _TRAJECTORY_KEYS, EVAL_TEST, INITS, SCHEDULE_BY
from minivit.train.recipes import RECIPES, get_recipe
from minivit.variants import create_model

TABLES = {"--optimizer": optim.OPTIMIZERS, "--schedule": optim.SCHEDULES, "--dataset": mdata.DATASETS,
          "--eval-test": EVAL_TEST, "--schedule-by": SCHEDULE_BY, "--init": INITS, "--crop-padding": PADDING_MODES}


def _choices(parser):
    """{option string: its choices} of an argparse parser."""
    return {s: a.choices for a in parser._actions for s in a.option_strings if a.choices is not None}


def _subparsers():
    """{command: its parser} of the `minivit` command."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _train_parser():
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser


def test_every_command_offers_exactly_the_tables_keys_in_their_order():
    checked = 0
    for command, parser in _subparsers().items():
        for option, choices in _choices(parser).items():
            if option in TABLES:
                assert list(choices) == list(TABLES[option]), f"minivit {command} {option}"
                checked += 1
    # train and pretrain take all seven; eval and fewshot take --dataset
    assert checked >= 2 * len(TABLES) + 2


@pytest.mark.parametrize("option, table", [("optimizer", optim.OPTIMIZERS), ("schedule", optim.SCHEDULES),
                                           ("dataset", mdata.DATASETS)])
def test_the_config_accepts_every_key_of_a_table_and_refuses_another_name_listing_them(option, table):
    for name in table:
        assert getattr(TrainConfig(**{option: name}), option) == name
    with pytest.raises(ValueError, match=f"{option} must be one of {', '.join(table)}, got 'lamb'"):
        TrainConfig(**{option: "lamb"})


def test_unknown_names_are_refused_by_the_functions_that_look_them_up():
    params = [create_model("vit_testing").head.weight]
    with pytest.raises(ValueError, match="optimizer must be one of adamw, adam, sgd, got 'lamb'"):
        optim.create_optimizer("lamb", params, TrainConfig())
    with pytest.raises(ValueError, match="schedule must be one of cosine, linear, constant, got 'cosinus'"):
        optim.lr_at(0, 0.1, 10, schedule="cosinus")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose one of cifar10, procedural"):
        mdata.load_dataset("imagenet")


def test_an_optimizer_added_to_the_table_is_accepted_offered_and_built(monkeypatch):
    def plain_sgd(groups, cfg):
        return optim.SGD(groups, lr=cfg.lr * 2, momentum=0.5)

    monkeypatch.setitem(optim.OPTIMIZERS, "half_momentum", plain_sgd)
    cfg = train_config_from_args(_train_parser().parse_args(["--optimizer", "half_momentum", "--out", "x"]))
    opt = build_optimizer(create_model("vit_testing"), cfg)
    assert type(opt) is optim.SGD and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["lr"] == 2 * cfg.lr


def test_a_schedule_added_to_the_table_is_accepted_offered_and_followed(monkeypatch):
    def halves(progress, base_lr, min_lr):
        return base_lr if progress < 0.5 else base_lr / 2

    monkeypatch.setitem(optim.SCHEDULES, "halves", halves)
    cfg = train_config_from_args(_train_parser().parse_args(["--schedule", "halves", "--out", "x"]))
    assert cfg.schedule == "halves"
    lrs = [optim.lr_at(step, 1.0, total_steps=10, warmup_steps=2, schedule="halves") for step in range(10)]
    assert lrs == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]


def test_a_dataset_added_to_the_table_is_accepted_offered_and_trained_on(monkeypatch, tmp_path):
    def stripes(root, split, download, cache_dir, num_samples, seed, **kwargs):
        images = np.zeros((64, 32, 32, 3), np.uint8)
        labels = np.arange(64) % 2
        images[labels == 1, ::2] = 255  # class 1: horizontal stripes
        return mdata.Dataset(images, labels, ["plain", "striped"], "stripes")

    monkeypatch.setitem(mdata.DATASETS, "stripes", stripes)
    assert len(mdata.load_dataset("stripes", num_samples=16)) == 16  # load_dataset's subset applies to it
    cfg = train_config_from_args(_train_parser().parse_args(
        ["--dataset", "stripes", "--model", "vit_testing", "--val-size", "0", "--batch-size", "32", "--epochs", "1",
         "--eval-test", "never", "--no-progress", "--out", str(tmp_path)]))
    final = Trainer(cfg).fit()
    assert final["step"] == 2 and final["train_loss"] > 0


def test_sgd_is_nesterov_by_default_and_plain_with_nesterov_false(tmp_path):
    model = create_model("vit_testing")
    assert TrainConfig().nesterov is True
    for nesterov in (True, False):
        opt = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=nesterov))
        assert all(g["nesterov"] is nesterov and g["momentum"] == 0.8 for g in opt.param_groups)
    assert "nesterov" in _TRAJECTORY_KEYS  # a resumed run may not switch it


def test_the_two_kinds_of_sgd_momentum_take_different_steps():
    grads = [np.full(3, 1.0), np.full(3, 2.0)]
    ends = {}
    for nesterov in (True, False):
        param = Parameter(np.zeros(3))
        opt = optim.create_optimizer("sgd", [param], TrainConfig(optimizer="sgd", lr=1.0, momentum=0.5,
                                                                 nesterov=nesterov))
        for g in grads:
            param.grad = g.copy()
            opt.step()
        ends[nesterov] = param.data[0]
    # heavy ball steps by the buffer: 1, then 0.5 * 1 + 2 = 2.5; Nesterov by g + momentum * buffer: 1.5, 3.25
    assert ends[False] == pytest.approx(-3.5) and ends[True] == pytest.approx(-(1.5 + 3.25))


def test_nesterov_without_momentum_is_refused_when_the_config_is_made():
    with pytest.raises(ValueError, match="nesterov=True needs a momentum > 0"):
        TrainConfig(optimizer="sgd", momentum=0.0)
    assert TrainConfig(optimizer="sgd", momentum=0.0, nesterov=False).momentum == 0.0
    with pytest.raises(TypeError, match="nesterov must be True or False, got 'yes'"):
        TrainConfig(nesterov="yes")


def test_the_command_line_sets_sgd_momentum_and_nesterov():
    parse = _train_parser().parse_args
    cfg = train_config_from_args(parse(["--optimizer", "sgd", "--momentum", "0.5", "--no-nesterov", "--out", "x"]))
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov) == ("sgd", 0.5, False)
    assert train_config_from_args(parse(["--optimizer", "sgd", "--out", "x"])).nesterov is True
    with pytest.raises(SystemExit):
        parse(["--momentum", "1.0"])


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_names_entries_of_the_tables(name):
    cfg = TrainConfig(**get_recipe(name))
    assert cfg.optimizer in optim.OPTIMIZERS and cfg.schedule in optim.SCHEDULES and cfg.dataset in mdata.DATASETS
