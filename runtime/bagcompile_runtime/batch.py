"""Batch scoring over many files with one session per worker process (Dask, Ray, multiprocessing).

``score_npz`` is a plain function of file paths, so any task engine can map it over files; the
session is created once per process (``session_for`` caches it) instead of once per file.
See docs/batch_scoring.md for Dask and Ray Data recipes.
"""
from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from .session import EnsembleSession


@functools.lru_cache(maxsize=4)
def session_for(model_path: str, providers: str = "cpu", intra_op_threads: int | None = 1) -> EnsembleSession:
    """This process's session for ``model_path`` (created on first use, then reused)."""
    return EnsembleSession(model_path, providers=providers, intra_op_threads=intra_op_threads)


def score_npz(model_path: str, input_path: str, output_path: str, providers: str = "cpu") -> dict:
    """Score one NPZ (``x`` and optional ``lengths``) into an NPZ of the model's outputs, written
    atomically; returns a small summary (rows, process id) for the caller's bookkeeping."""
    session = session_for(os.fspath(model_path), providers)
    with np.load(input_path, allow_pickle=False) as data:
        x = data["x"]
        lengths = data["lengths"] if "lengths" in data.files else None
    outputs = session.run(x, lengths)
    directory = os.path.dirname(os.path.abspath(output_path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **outputs)
        os.replace(tmp, output_path)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"input": os.fspath(input_path), "rows": int(len(x)), "pid": os.getpid()}
