"""Commands that read a trained checkpoint: `minivit eval`, `predict`, `analyze`, `fewshot` and
`convert` (to and from the official JAX checkpoint formats).
Each checks that the data fits the checkpoint (image size, channels, classes) before running, and
runs the model on --device (cpu, or cuda: checked first, before anything is loaded)."""
from __future__ import annotations

import time

import numpy as np

from .args import DATASETS, shown


def _device(args):
    """The --device asked for, checked now ("cpu" or "gpu"; DeviceUnavailable when it cannot run)."""
    from ..device import require

    return require(getattr(args, "device", None) or "cpu")


def _load_for_inference(path, device="cpu"):
    """(model in eval mode on `device`, checkpoint meta, (mean, std) of its input normalisation)."""
    from ..train.checkpoint import model_from_checkpoint, normalization

    model, ckpt = model_from_checkpoint(path)  # built and loaded on the host
    model.eval().to(device)
    return model, ckpt["meta"], normalization(ckpt, model.config.in_chans)


def _data_settings(meta, args):
    """(dataset, data_dir, seed): the flags, else what the checkpoint was trained on."""
    saved = meta.get("train_config") or {}
    dataset = getattr(args, "dataset", None) or saved.get("dataset", "cifar10")
    data_dir = args.data_dir or (saved.get("data_dir") if dataset == saved.get("dataset", "cifar10") else None)
    seed = saved.get("seed", 0)
    if dataset not in DATASETS:
        raise ValueError(f"{args.checkpoint} was trained on dataset {dataset!r}, which is not one of "
                         f"{', '.join(DATASETS)}; choose one with --dataset")
    if not (data_dir is None or isinstance(data_dir, str)) or not (type(seed) is int and seed >= 0):
        raise ValueError(f"{args.checkpoint}: its train_config has data_dir {data_dir!r} and seed {seed!r}; "
                         "expected a folder name (or null) and an integer >= 0")
    return dataset, data_dir, seed


def _check_images_fit(ds, model, what):
    """ValueError unless the dataset's images have the model's input size and channels."""
    cfg = model.config
    _, H, W, C = ds.images.shape
    if (H, W, C) != (cfg.img_size, cfg.img_size, cfg.in_chans):
        raise ValueError(f"{what} has {W}x{H} images with {C} channel(s); the checkpoint's model takes "
                         f"{cfg.img_size}x{cfg.img_size} with {cfg.in_chans}")


def _check_classes(ds, model, meta, what):
    """ValueError unless the dataset's labels mean what the model's outputs mean."""
    K, saved = model.config.num_classes, meta.get("classes")
    if saved is not None and list(saved) != list(ds.classes):
        raise ValueError(f"{what} has classes {shown(ds.classes)}, but the checkpoint was trained on "
                         f"{shown(saved)}: label k would not mean output k")
    if ds.num_classes != K:
        raise ValueError(f"{what} has {ds.num_classes} classes, the checkpoint's model predicts {K}")


def cmd_eval(args):
    from .. import data as mdata
    from ..train import evaluate

    device = _device(args)
    model, meta, (mean, std) = _load_for_inference(args.checkpoint, device)
    dataset, data_dir, seed = _data_settings(meta, args)
    ds = mdata.load_dataset(dataset, data_dir, args.split, seed=seed)
    what = f"{dataset} {args.split}" + (f" in {data_dir}" if data_dir else "")
    _check_images_fit(ds, model, what)
    _check_classes(ds, model, meta, what)
    loader = mdata.DataLoader(ds, args.batch_size, shuffle=False, augment=False, drop_last=False,
                              mean=mean, std=std, device=device)
    start = time.perf_counter()
    loss, acc = evaluate(model, loader)
    rate = len(ds) / (time.perf_counter() - start)
    print(f"{dataset} {args.split}: accuracy {acc:.4f} ({acc * len(ds):.0f}/{len(ds)}), loss {loss:.4f}, "
          f"{rate:.0f} images/s")
    return 0


def load_image(path, img_size, in_chans):
    """An image file as uint8 (H, W, C), converted and resized to the model's input."""
    from PIL import Image

    from ..data.decode import WIDE_MODES

    try:
        with Image.open(path) as im:
            if im.mode.split(";")[0] in WIDE_MODES:
                raise ValueError(f"its pixels are mode {im.mode} (16/32-bit or float); convert it to 8 bits")
            im = im.convert("L" if in_chans == 1 else "RGB")
            if im.size != (img_size, img_size):
                im = im.resize((img_size, img_size), Image.BILINEAR)
            return np.asarray(im).reshape(img_size, img_size, in_chans)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's ways to say "bad data"
        raise ValueError(f"cannot read image {shown(path)}: {e}") from e


def cmd_predict(args):
    from ..data import normalize
    from ..functional import softmax
    from ..train.checkpoint import CheckpointError

    model, meta, (mean, std) = _load_for_inference(args.checkpoint, _device(args))
    cfg = model.config
    if cfg.num_classes < 1:
        raise ValueError(f"{args.checkpoint} has no classification head (num_classes={cfg.num_classes})")
    classes = meta.get("classes") or [str(i) for i in range(cfg.num_classes)]
    if len(classes) != cfg.num_classes:
        raise CheckpointError(f"{args.checkpoint} names {len(classes)} classes for {cfg.num_classes} outputs")
    images = np.stack([load_image(p, cfg.img_size, cfg.in_chans) for p in args.images])
    x = normalize(images, mean, std)
    from ..autograd import no_grad

    with no_grad():
        probs = softmax(model(x)).numpy()  # x goes to the model's device in its first op; probs come back
    k = min(args.top, cfg.num_classes)
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:k]
        print(shown(path, limit=10_000))
        for i in top:
            print(f"  {shown(classes[i]):>12s}  {p[i]:.3f}")
    return 0


def cmd_analyze(args):
    from .. import data as mdata
    from ..analysis.report import analyze, sample_images

    device = _device(args)
    model, meta, (mean, std) = _load_for_inference(args.checkpoint, device)
    dataset, data_dir, _ = _data_settings(meta, args)
    ds = mdata.load_dataset(dataset, data_dir, "test", seed=0)
    _check_images_fit(ds, model, f"{dataset} test")
    ds = sample_images(ds, args.images)
    x = mdata.normalize(ds.images, mean, std)
    view = model if device == "cpu" else HostOutputs(model)
    paths = analyze(view, {"x": x, "display": ds.images}, args.out, distance_images=args.images)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_fewshot(args):
    from .. import data as mdata
    from ..analysis.fewshot import fewshot_from_checkpoint

    model, meta, (mean, std) = _load_for_inference(args.checkpoint, _device(args))
    dataset, data_dir, _ = _data_settings(meta, args)
    train, test = mdata.load_dataset(dataset, data_dir, "train"), mdata.load_dataset(dataset, data_dir, "test")
    for split, ds in (("train", train), ("test", test)):
        _check_images_fit(ds, model, f"{dataset} {split}")
    counts = np.bincount(train.labels, minlength=train.num_classes)
    if max(args.shots) > counts.min():
        raise ValueError(f"--shots {max(args.shots)} needs that many training images per class; class "
                         f"{shown(train.classes[counts.argmin()])} of {dataset} has {counts.min()}")
    results = fewshot_from_checkpoint(model, (mean, std), train, test, sorted(set(args.shots)), seeds=args.seeds,
                                      test_images=args.test_images)
    for k, acc in results.items():
        print(f"{k:>3d}-shot linear accuracy: {acc:.4f}")
    return 0


def cmd_convert(args):
    from ..interop import convert

    options = {k: v for k, v in (("img_size", args.img_size), ("num_classes", args.num_classes)) if v is not None}
    print(convert(args.input, args.output, layout=args.layout, **options))
    return 0


class HostOutputs:
    """A GPU model as `minivit.analysis.report.analyze` reads a model: the API its docstring names
    (config, num_prefix_tokens, grid_size, state_dict(), position_embedding() and the forward
    model(x, out=d)), with NumPy arrays where the model has GPU arrays. The forward passes run on
    the GPU; their intermediates come back to the host once per batch, where the analysis'
    NumPy measurements run."""

    def __init__(self, model):
        self.model = model
        self.config, self.num_prefix_tokens, self.grid_size = model.config, model.num_prefix_tokens, model.grid_size

    def state_dict(self):
        from ..device import to_host

        return {k: to_host(v) for k, v in self.model.state_dict().items()}

    def position_embedding(self):
        from ..device import to_host

        table = self.model.position_embedding()
        return None if table is None else to_host(table)

    def __call__(self, x, out=None):
        from ..device import to_host

        logits = self.model(x, out=out)
        if out is not None:
            for key, value in out.items():
                out[key] = [to_host(a) for a in value] if isinstance(value, list) else to_host(value)
        return logits
