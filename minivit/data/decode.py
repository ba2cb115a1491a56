"""Image files -> uint8 arrays, in this process or in fresh worker processes.

For small files such as CIFAR-10's 32x32 JPEGs, threads do not help (much of Pillow's work per
file is Python code, which holds the GIL): on a 2-core machine, decoding the 50,000 training
JPEGs, two threads ran at 0.68x the speed of one process, two of these workers at 1.65x and two
forked processes at 1.83x (`python benchmarks/decode.py`; benchmarks/results/decode_amd_zen4_2026-12-07.txt).
The workers start a little slower than forks (each is a new Python that imports NumPy and Pillow),
but they are not forked from the user's program, which may already run threads of its own (JAX,
PyTorch, a server) that a fork can leave holding locks in the child; and they are not started by
multiprocessing's spawn or forkserver, which re-run the user's script in each worker (without an
`if __name__ == "__main__":` guard, the whole script). Each worker is this file run as a script
by `subprocess` (which starts a new program rather than copying this one): it imports NumPy and
Pillow only, reads its list of chunks (lists of paths, JSON) from stdin and writes each decoded
chunk to stdout as a line "n h w c" and the n*h*w*c bytes, or one line "error <message>" for a
file it cannot decode.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
from PIL import Image

WIDE_MODES = ("I", "F")  # 32-bit int / float pixels (and I;16): no 8-bit RGB without knowing their range


def decode_image(path) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB; ValueError naming the file if it cannot be read."""
    try:
        with Image.open(path) as im:
            if im.mode.split(";")[0] in WIDE_MODES:
                raise ValueError(f"its pixels are mode {im.mode} (16/32-bit or float); minivit reads 8-bit "
                                 "images (L, RGB, RGBA, P, ...): convert it to 8 bits first")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's ways to say "bad data"
        raise ValueError(f"cannot decode image {path}: {e}") from e


def decode_chunk(paths: list[str]) -> np.ndarray:
    """Decode and stack equal-sized images -> uint8 (n, H, W, 3), else ValueError naming a file."""
    first = decode_image(paths[0])
    out = np.empty((len(paths),) + first.shape, np.uint8)  # (n, H, W, 3)
    out[0] = first
    for i, p in enumerate(paths[1:], 1):
        img = decode_image(p)
        if img.shape != first.shape:
            raise ValueError(f"image {p} has size {img.shape[1]}x{img.shape[0]}, but {paths[0]} has "
                             f"{first.shape[1]}x{first.shape[0]}; all images must be the same size")
        out[i] = img
    return out


class WorkerFailed(RuntimeError):
    """A worker process did not start or died without naming a bad file (the caller decodes here)."""


def decode_in_workers(chunks: list[list[str]], workers: int, on_chunk=lambda n: None) -> list[np.ndarray]:
    """decode_chunk of every chunk, in `workers` fresh processes (worker w takes chunks w, w+workers,
    ...), in the order of `chunks`; on_chunk(n) after each. ValueError naming a bad file (the first
    in the order of `chunks`), WorkerFailed if a worker cannot run."""
    parts: list = [None] * len(chunks)
    bad: dict[int, str] = {}  # chunk index -> the worker's message
    failed: list[WorkerFailed] = []

    def serve(w):
        mine = range(w, len(chunks), workers)
        try:
            for k, part in enumerate(run_worker([chunks[i] for i in mine])):
                parts[mine[k]] = part
                on_chunk(len(part))
        except BadImage as e:
            bad[mine[e.index]] = e.message
        except WorkerFailed as e:
            failed.append(e)
        except Exception as e:  # noqa: BLE001  (anything else: the caller decodes in its own process)
            failed.append(WorkerFailed(f"decode worker: {e!r}"))

    threads = [threading.Thread(target=serve, args=(w,), name=f"minivit-decode-{w}") for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bad:  # a bad file is the user's to fix, whatever else happened: the first in load order
        raise ValueError(bad[min(bad)])
    if failed:
        raise failed[0]
    return parts


class BadImage(Exception):
    """A worker's report of a file it cannot decode: the message names it; index is the chunk's."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.message, self.index = message, index


def run_worker(chunks: list[list[str]]):
    """Yield decode_chunk(chunk) for each chunk, decoded by one worker process; BadImage(message,
    index of the chunk) for a file it cannot decode, WorkerFailed if it does not run to the end."""
    if not sys.executable:
        raise WorkerFailed("no Python executable to start a decode worker with (sys.executable is empty)")
    # this file run as a script, with neither its folder (minivit/data) nor the current folder on the
    # worker's sys.path, so that no file there can stand in for a module NumPy or Pillow imports
    cmd = [sys.executable, "-c", "import runpy, sys; del sys.path[0]; "
           f"runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')"]
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty worker cannot block on it
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        except OSError as e:
            raise WorkerFailed(f"cannot start a decode worker ({cmd[0]}): {e}") from e
        finished = False
        try:
            with proc.stdin:
                proc.stdin.write(json.dumps(chunks).encode())
            for k in range(len(chunks)):
                header = proc.stdout.readline().decode(errors="replace")
                if header.startswith("error "):
                    raise BadImage(header[len("error "):].rstrip("\n"), k)
                try:
                    n, h, w, c = (int(v) for v in header.split())
                except ValueError:
                    raise WorkerFailed(f"decode worker stopped (it sent {header[:200]!r})") from None
                data = proc.stdout.read(n * h * w * c)
                if len(data) != n * h * w * c:
                    raise WorkerFailed(f"decode worker stopped after {len(data)} of {n * h * w * c} bytes")
                yield np.frombuffer(data, np.uint8).reshape(n, h, w, c)
            finished = True
        except OSError as e:  # a broken pipe: the worker died while reading its paths
            raise WorkerFailed(f"decode worker stopped: {e}") from e
        finally:
            if not finished:
                proc.kill()
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise WorkerFailed(f"decode worker exited with status {code}: {tail}")


def _serve() -> int:
    """The worker: chunks (JSON) from stdin, each decoded chunk (or the first error) to stdout."""
    chunks = json.load(sys.stdin)
    out = sys.stdout.buffer
    for paths in chunks:
        try:
            part = decode_chunk(paths)
        except ValueError as e:
            out.write(("error " + str(e).replace("\n", " ") + "\n").encode())
            out.flush()
            return 0
        out.write(("%d %d %d %d\n" % part.shape).encode())
        out.write(part.tobytes())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
