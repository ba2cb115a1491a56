"""How fast an image-folder split decodes: minivit's worker processes (`data.folder.decode_all`,
started fresh by subprocess) against one process, a thread pool and a forked process pool of the
same size, taking turns in one process, medians of the rounds. No cache is read or written. NumPy
and PyTorch are imported first, as in a user's script.

    python benchmarks/decode.py --root ../shared/data/cifar10-jpeg --split test     # --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

try:
    import torch  # noqa: F401  (imported first, as a user's script does)
except ImportError:
    torch = None


def pool_decode(paths, pool):
    """The chunks decode_all makes, decoded by `pool` (a thread or process pool)."""
    from minivit.data import decode, folder

    chunks = [paths[i:i + folder.CHUNK] for i in range(0, len(paths), folder.CHUNK)]
    with pool:
        return np.concatenate(list(pool.map(decode.decode_chunk, chunks)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="an image-folder tree with <split>/<class>/ folders")
    p.add_argument("--split", default="test")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    args = p.parse_args(argv)

    from minivit.data import folder
    from minivit.train import runinfo

    info = runinfo.describe()
    print(json.dumps({k: info[k] for k in ("started_at", "minivit_source", "cpu", "env",
                                           "load_average_1min_at_start")}))
    paths = folder.list_images(args.root, args.split)[0]
    n = args.workers
    ways = {
        "one process": lambda: folder.decode_all(paths, workers=1),
        f"minivit's workers x{n}": lambda: folder.decode_all(paths, workers=n),
        f"threads x{n}": lambda: pool_decode(paths, ThreadPoolExecutor(n)),
        f"forked processes x{n}": lambda: pool_decode(
            paths, ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"))),
    }
    reference = ways["one process"]()
    times = {name: [] for name in ways}
    for _ in range(args.rounds):  # the ways take turns
        for name, way in ways.items():
            start = time.perf_counter()
            out = way()
            times[name].append(time.perf_counter() - start)
            assert np.array_equal(out, reference), name
    base = statistics.median(times["one process"])
    print(f"{len(paths)} images of {args.root}/{args.split}, medians of {args.rounds} rounds")
    print(f"{'way':>24s} {'s':>7s} {'images/s':>9s} {'x one process':>13s}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:>24s} {t:7.2f} {len(paths) / t:9.0f} {base / t:13.2f}")


if __name__ == "__main__":
    main()
