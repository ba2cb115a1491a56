"""Labels are range-checked where reading them is free: on the host. functional.cross_entropy
refuses out-of-range host labels, naming the range; it does not read labels that are already on
a device (that would copy them back and make the host wait in every training step). The Trainer
checks every split's labels on the host, against the head's number of classes, before its
loaders copy any batch to the device, so out-of-range labels still stop a run with a clear error
before its first step; and a training step on device labels reads one array back, its
(loss, correct) pair.

The device is a CPU stand-in: `OnDevice`, a NumPy array that minivit's is-device check
(`device_of`, patched where functional.py and the trainer look it up) takes for a GPU array, and
that records every read of its values by the host. tests/test_gpu.py counts the same copies on a
real GPU, tests/test_device_cpu.py on a fuller fake one.
"""
from __future__ import annotations

import numpy as np
import pytest

import minivit.data
from minivit import device
from minivit import functional as F
from minivit.autograd import Tensor


class OnDevice(np.ndarray):
    """A NumPy array that stands for a GPU array; `reads` lists every value read by the host."""

    reads: list = []

    def _read(self, how):
        OnDevice.reads.append(how)
        return self.view(np.ndarray)

    def min(self, *args, **kwargs):
        return self._read("min").min(*args, **kwargs)

    def max(self, *args, **kwargs):
        return self._read("max").max(*args, **kwargs)

    def get(self):
        return self._read("get").copy()

    def item(self, *args):
        return self._read("item").item(*args)

    def tolist(self):
        return self._read("tolist").tolist()

    def __int__(self):
        return int(self._read("int"))

    def __float__(self):
        return float(self._read("float"))

    def __bool__(self):
        return bool(self._read("bool"))

    def __index__(self):
        return self._read("index").__index__()


@pytest.fixture
def on_device(monkeypatch):
    """Make device_of take OnDevice arrays for GPU arrays; returns a function that puts an array
    'on the device'."""
    real = device.device_of

    def device_of(a):
        return "gpu" if isinstance(a, OnDevice) else real(a)

    monkeypatch.setattr(device, "device_of", device_of)
    monkeypatch.setattr(F, "device_of", device_of)
    monkeypatch.setattr(OnDevice, "reads", [])
    return lambda a: np.asarray(a).view(OnDevice)


# ---------------------------------------------------------------- functional.cross_entropy
@pytest.mark.parametrize("labels, got", [([0, 4, 1], r"\[0, 4\]"), ([-1, 0, 3], r"\[-1, 3\]"),
                                         ([7, 9, 8], r"\[7, 9\]")])
def test_cross_entropy_refuses_out_of_range_host_labels_naming_the_range(labels, got):
    logits = Tensor(np.zeros((3, 4), np.float32))
    for given in (np.array(labels), labels, Tensor(np.array(labels))):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] for 4 classes, got values in " + got):
            F.cross_entropy(logits, given)


def test_cross_entropy_reads_nothing_back_from_labels_on_a_device(on_device):
    logits = Tensor(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32))
    labels = np.array([0, 4, 2, 1, 3, 4])
    want = F.cross_entropy(logits, labels, label_smoothing=0.1).item()
    got = F.cross_entropy(logits, on_device(labels), label_smoothing=0.1).item()
    assert got == want
    assert OnDevice.reads == []


def test_the_stand_in_records_a_read_of_its_values(on_device):
    """The check above can fail: min/max of a device array, as the range check took them, are reads."""
    labels = on_device(np.array([0, 2, 1]))
    assert device.device_of(labels) == F.device_of(labels) == "gpu"
    assert (int(labels.min()), int(labels.max())) == (0, 2)
    assert OnDevice.reads == ["min", "max"]


# ---------------------------------------------------------------- the Trainer
def _config(tmp_path, **overrides):
    from minivit.train import TrainConfig

    values = dict(model="vit_testing", dataset="procedural", num_samples=64, val_size=0, epochs=1, batch_size=16,
                  out_dir=str(tmp_path / "run"), progress=False, eval_test="never", grad_clip=1.0)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def with_a_bad_label(monkeypatch):
    """load_dataset with one label of the named split set to `value`; records the loaders built."""
    real_load, real_loader = minivit.data.load_dataset, minivit.data.DataLoader
    bad, loaders = {}, []

    def load_dataset(name, root=None, split="train", **kwargs):
        ds = real_load(name, root, split, **{"num_samples": 64, **kwargs})
        if split in bad:
            ds.labels[5] = bad[split]
        return ds

    def loader(*args, **kwargs):
        loaders.append(kwargs.get("device"))
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(minivit.data, "load_dataset", load_dataset)
    monkeypatch.setattr(minivit.data, "DataLoader", loader)
    return bad, loaders


@pytest.mark.parametrize("split, value, got", [("train", 10, r"\[0, 10\]"), ("train", -1, r"\[-1, 9\]"),
                                                ("test", 12, r"\[0, 12\]")])
def test_the_trainer_refuses_out_of_range_labels_before_building_a_loader(tmp_path, with_a_bad_label, split,
                                                                           value, got):
    from minivit.train import Trainer

    bad, loaders = with_a_bad_label
    bad[split] = value
    with pytest.raises(ValueError, match=rf"procedural {split} labels must lie in \[0, 9\] for 10 classes, "
                                         rf"got values in {got}"):
        Trainer(_config(tmp_path, eval_test="epoch"))
    assert loaders == []  # no batch was made, let alone copied to a device


def test_the_trainer_checks_the_labels_against_the_heads_classes(tmp_path, with_a_bad_label):
    from minivit.train import Trainer

    with pytest.raises(ValueError, match=r"procedural train labels must lie in \[0, 4\] for 5 classes"):
        Trainer(_config(tmp_path, model_kwargs={"num_classes": 5}))  # ten classes of shapes, a head of five
    _, loaders = with_a_bad_label
    assert loaders == []


def test_a_training_step_on_device_labels_reads_one_array_back(tmp_path, on_device, monkeypatch):
    from minivit.train import Trainer

    trainer = Trainer(_config(tmp_path))
    copies = []
    real_to_host = device.to_host
    monkeypatch.setattr(device, "to_host", lambda a: copies.append(np.shape(a)) or real_to_host(a))
    batches = [batch for batch, _ in zip(trainer.train_loader.epoch(0), range(3))]
    for x, y in batches:
        loss, correct = trainer.train_step(x, on_device(y))
        assert np.isfinite(loss) and 0 <= correct <= len(y)
    assert copies == [(2,)] * len(batches)  # the (loss, correct) pair, once a step
    assert OnDevice.reads == []  # the labels were never read back
