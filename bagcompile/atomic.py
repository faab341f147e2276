"""Atomic file writes (no torch, no onnx: the predict path uses this too)."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, TextIO


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    with _temporary_beside(Path(path), "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_text_writer(path) -> Iterator[TextIO]:
    """A text handle onto a temporary file beside ``path``, renamed to ``path`` only on success."""
    with _temporary_beside(Path(path), "w", newline="") as handle:
        yield handle


@contextlib.contextmanager
def _temporary_beside(path: Path, mode: str, **open_args):
    if path.is_symlink():  # update the file the link points to; keep the link
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():  # a pipe or device (/dev/stdout): no rename possible
        with open(path, mode, **open_args) as handle:
            yield handle
        return
    created = _make_parents(path.parent)
    try:
        try:  # the temporary name stays short: the real name may already be near the 255 limit
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
        except OSError as error:  # name the file asked for, not the temporary one
            raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
        try:
            with os.fdopen(fd, mode, **open_args) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            _finish(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except BaseException:
        for directory in reversed(created):  # a failed write leaves no empty folders behind
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return those created, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(exist_ok=True)
        except OSError as error:
            raise OSError(error.errno, f"cannot create folder {folder}: {error.strerror}") from None
    return list(reversed(missing))


def _finish(tmp: str, path: Path) -> None:
    try:  # a file being replaced keeps its mode
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:  # mkstemp creates 0600; give a new file the usual mode
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, path)
