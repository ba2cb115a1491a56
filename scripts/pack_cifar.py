"""Pack CIFAR-10's JPEG tree into one file (about 53 MiB), and unpack it again: how the data
reaches a GPU machine that sees the checkout and the paths a call carries, but not ../shared.

    python scripts/pack_cifar.py                        # ../shared/data/cifar10-jpeg -> runs/gpu_data/cifar10-jpeg.npz
    python scripts/pack_cifar.py --unpack /tmp/cifar10  # the pack -> /tmp/cifar10/{train,test}/<class>/NNNN.jpg
    python scripts/pack_cifar.py --check                # unpack to a temporary folder, compare every file

The pack is an .npz written by minivit.npz (atomic, never pickled): "jpeg" (every file's bytes,
one after another, uint8), "offsets" (int64, n + 1: file i is jpeg[offsets[i]:offsets[i + 1]]) and
"index.json" (UTF-8 JSON as uint8: the relative path of each file, in order). The JPEG bytes are
stored as they are, so an unpacked tree is byte for byte the original. runs/ is git-ignored, so
the pack travels to the GPU machine only where a call names it: carry ["runs/gpu_data"].
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivit import npz  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
PACK = ROOT / "runs" / "gpu_data" / "cifar10-jpeg.npz"


def pack(source: Path, dest: Path) -> Path:
    files = sorted(p for split in ("train", "test") for p in (source / split).rglob("*.jpg"))
    if len(files) != 60000:
        raise SystemExit(f"{source}: expected 60,000 JPEGs under train/ and test/, found {len(files)}")
    blobs = [p.read_bytes() for p in files]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    index = json.dumps([p.relative_to(source).as_posix() for p in files]).encode()
    return npz.write(dest, {"jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8), "offsets": offsets,
                            "index.json": np.frombuffer(index, dtype=np.uint8)})


def unpack(pack_path: Path, dest: Path) -> int:
    arrays = npz.read(pack_path, SystemExit, "CIFAR-10 pack")
    jpeg, offsets = arrays["jpeg"], arrays["offsets"]
    names = json.loads(arrays["index.json"].tobytes().decode())
    for i, name in enumerate(names):
        path = dest / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise SystemExit(f"{pack_path}: refusing the path {name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg[offsets[i]:offsets[i + 1]].tobytes())
    return len(names)


def check(pack_path: Path, source: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        n = unpack(pack_path, Path(tmp))
        for p in sorted(source.rglob("*.jpg")):
            if (Path(tmp) / p.relative_to(source)).read_bytes() != p.read_bytes():
                raise SystemExit(f"{p.relative_to(source)} differs after unpacking")
    return n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=SOURCE, help=f"the JPEG tree (default {SOURCE})")
    p.add_argument("--pack", type=Path, default=PACK, help=f"the packed file (default {PACK.relative_to(ROOT)})")
    p.add_argument("--unpack", type=Path, metavar="DEST", help="unpack the pack into DEST instead")
    p.add_argument("--check", action="store_true", help="unpack to a temporary folder and compare with --source")
    args = p.parse_args(argv)
    if args.unpack:
        print(f"unpacked {unpack(args.pack, args.unpack)} files into {args.unpack}")
    elif args.check:
        print(f"{args.pack}: all {check(args.pack, args.source)} files unpack byte for byte")
    else:
        path = pack(args.source, args.pack)
        print(f"packed {args.source} into {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
