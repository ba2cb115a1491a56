"""Tests for minivit.train.sweep: grid parsing, explicit points, and a tiny sweep on procedural data that
writes its tables and resumes by skipping finished points."""
import json

import pytest

from minivit.train import sweep
from minivit.cli import main
from minivit.train import TrainConfig

TINY = {"embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 32, "patch_size": 8}


def tiny_base(out_dir=None):
    return TrainConfig(model="vit_testing", model_kwargs=dict(TINY), dataset="procedural", num_samples=96,
                       val_size=32, epochs=1, batch_size=32, lr=1e-3, warmup_epochs=0.0, log_every=1,
                       eval_test="never", progress=False, out_dir=out_dir)


def test_parse_grid_casts_values_and_keeps_order():
    grid = sweep.parse_grid(["pos_embed=none,learn", "depth=2,4", "lr=1e-3", "class_token=false"])
    assert grid == {"pos_embed": ["none", "learn"], "depth": [2, 4], "lr": [1e-3], "class_token": [False]}
    assert sweep.grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


@pytest.mark.parametrize("item, message", [("depth", "key=v1,v2"), ("depth=", "key=v1,v2"),
                                           ("depht=2", "unknown sweep key 'depht'")])
def test_parse_grid_rejects_malformed_entries(item, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_grid([item])


def test_parse_point_takes_one_value_per_key():
    assert sweep.parse_point(["depth=8", "embed_dim=64"]) == {"depth": 8, "embed_dim": 64}
    with pytest.raises(ValueError, match="one value per option"):
        sweep.parse_point(["depth=2,4"])


def test_sweep_without_points_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--grid or at least one --point"):
        sweep.run_sweep(tiny_base(), {}, tmp_path)


def test_tiny_sweep_writes_tables_and_skips_finished_points_on_rerun(tmp_path, monkeypatch):
    rows = sweep.run_sweep(tiny_base(), {"pos_embed": ["none", "learn"]}, tmp_path,
                           points=[{"depth": 2, "embed_dim": 8}])
    names = ["pos_embed=none", "pos_embed=learn", "depth=2-embed_dim=8"]
    assert [r["point"] for r in rows] == names
    for r in rows:
        assert 0.0 <= r["val_acc"] <= 1.0 and r["params"] > 0
        assert (tmp_path / r["point"] / "checkpoint.npz").exists()
    # the point's options reached the model: no position embedding has fewer parameters
    by_name = {r["point"]: r for r in rows}
    assert by_name["pos_embed=none"]["params"] < by_name["pos_embed=learn"]["params"]
    assert by_name["depth=2-embed_dim=8"]["params"] != by_name["pos_embed=learn"]["params"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["point"] for line in lines] == names
    table = (tmp_path / "results.md").read_text()
    assert table.splitlines()[0].startswith("| pos_embed | depth | embed_dim | params | val_acc")
    assert len(table.splitlines()) == 2 + len(names)
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(sweep, "Trainer", no_training)
    again = sweep.run_sweep(tiny_base(), {"pos_embed": ["none", "learn"]}, tmp_path,
                            points=[{"depth": 2, "embed_dim": 8}])
    assert [r["point"] for r in again] == names


def test_cli_sweep_needs_a_grid_or_a_point_and_names_bad_keys(tmp_path):
    with pytest.raises(SystemExit, match="--grid key=v1,v2 ... or one or more --point"):
        main(["sweep", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown sweep key 'widht'"):
        main(["sweep", "--out", str(tmp_path), "--dataset", "procedural", "--point", "widht=3"])
