"""Atomic file writes (no torch, no onnx: the predict path uses this too)."""
from __future__ import annotations

import contextlib
import errno
import os
import re
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


# /dev/stdout, /dev/fd/1, /proc/self/fd/1...: the caller's own descriptor, written as it is
# (a shell's `>> log` appends; reopening the path would truncate or rename it).
_DESCRIPTOR_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_DESCRIPTOR_PATTERN = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")


def _descriptor(path: Path) -> int | None:
    text = os.path.abspath(path)
    if text in _DESCRIPTOR_PATHS:
        return _DESCRIPTOR_PATHS[text]
    match = _DESCRIPTOR_PATTERN.match(text)
    if match and (match.group(1) is None or int(match.group(1)) == os.getpid()):
        return int(match.group(2))
    return None


def is_stream(path) -> bool:
    """True when writing ``path`` goes to a descriptor, pipe or device rather than a file
    (then a command's own summary belongs on stderr, not mixed into the output)."""
    path = Path(path)
    if _descriptor(path) is not None:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _temporary_beside(path: Path, mode: str, **open_args):
    descriptor = _descriptor(path)
    if descriptor is not None:
        with os.fdopen(os.dup(descriptor), mode, **open_args) as handle:
            yield handle
        return
    try:
        status = os.stat(path)  # follows links: a loop or a bad link fails here, before any work
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder")
        with open(path, mode, **open_args) as handle:  # a pipe or device: no rename possible
            yield handle
        return
    if path.is_symlink():  # update the file the link points to; keep the link
        path = Path(os.path.realpath(path))
    created = []
    try:
        created = _make_parents(path.parent)
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
    """Create ``directory`` and its missing parents; return those created, outermost first.
    If one cannot be created, those made before it are removed again."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by a concurrent writer: not ours to remove
            continue
        except OSError as error:
            for made in reversed(created):
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise OSError(error.errno, f"cannot create folder {folder}: {error.strerror}") from None
        created.append(folder)
    return created


def _finish(tmp: str, path: Path) -> None:
    try:  # a file being replaced keeps its mode
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:  # mkstemp creates 0600; give a new file the usual mode
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, path)
