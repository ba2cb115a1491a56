"""Every `.npz` file minivit writes or reads (checkpoints, official JAX checkpoints, the decode
cache) goes through these two functions:

- `read(path, error)`: {name: array}, never unpickling (allow_pickle=False); every way a missing,
  damaged or crafted file makes NumPy or zipfile fail becomes one `error(...)` naming the file.
- `write(path, arrays)`: atomic: a new file beside the target (mode 0o666, so the process umask
  applies by itself; the umask is never read or changed), fsync, then os.replace, so a crash or
  Ctrl-C mid-write never destroys the previous file and never leaves a temporary one behind.
"""
from __future__ import annotations

import os
import secrets
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

# What np.load and zipfile raise for damaged bytes (found by fuzzing): besides the obvious ones,
# NotImplementedError for zip features Python cannot read, TokenError for a mangled .npy header,
# MemoryError for a header that declares an absurd shape.
DAMAGED = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, UnicodeDecodeError,
           tokenize.TokenError, NotImplementedError, MemoryError)


def read(path, error=ValueError, what="archive") -> dict[str, np.ndarray]:
    """All arrays of the .npz at `path`; `error(message)` for anything but a readable archive."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a regular file")
    try:
        archive = np.load(path, allow_pickle=False)
    except DAMAGED as e:
        if isinstance(e, ValueError) and "allow_pickle" in str(e):  # no NumPy magic: np.load would unpickle it
            raise error(f"{what} {path} is corrupt or truncated: it is neither an .npz archive nor an .npy "
                        "file (and minivit never reads pickles)") from e
        raise error(_damaged(e, f"{what} {path}")) from e
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file: one bare array
        raise error(f"{what} {path} holds a single array (a .npy file), not an .npz archive")
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except DAMAGED as e:
                raise error(_damaged(e, f"{what} {path}, entry {name!r},")) from e
    return arrays


def _damaged(e, where):
    if isinstance(e, ValueError) and "allow_pickle" in str(e):  # object arrays: refused, not unpickled
        return f"{where} holds Python objects, which minivit never unpickles"
    if isinstance(e, (PermissionError, IsADirectoryError)):
        return f"{where} cannot be read: {e.strerror}"
    if isinstance(e, MemoryError):
        return f"{where} declares arrays larger than the memory available"
    return f"{where} is corrupt or truncated ({type(e).__name__}: {e})"


def write(path, arrays: dict) -> Path:
    """np.savez(path, **arrays), atomically (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _create_beside(path: Path) -> tuple[int, Path]:
    """(fd, name) of a new, empty file in path's folder, opened for writing: O_EXCL and a random
    name, so never an existing file nor one another writer is using."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")
