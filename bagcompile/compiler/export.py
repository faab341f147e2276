"""Compile, check, verify against PyTorch, then write atomically. Nothing unverified is written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..atomic import atomic_write_bytes
from ..bag import Bag
from .ensemble import DEFAULT_OPSET, compile_bag
from .verify import ATOL, RTOL, ParityError, ParityReport, ragged_probe, verify_model


@dataclass(frozen=True)
class ExportResult:
    path: Path
    parity: list[ParityReport]
    size_bytes: int
    n_nodes: int
    opset: int


def _probe_batches(bag: Bag, x: np.ndarray | None, lengths: np.ndarray | None, seed: int):
    """The verification inputs: the user's real batch, the same re-padded with garbage and shuffled,
    and a synthetic ragged batch that includes length 1."""
    rng = np.random.default_rng(seed)
    f = bag.input_transform.n_features
    if x is None:
        t = bag.input_length or 16
        x = (rng.normal(size=(8, t, f)) * bag.input_transform.scale + bag.input_transform.mean).astype(np.float32)
        lengths = np.full(8, t, dtype=np.int64)
    x = np.asarray(x, dtype=np.float32)
    lengths = np.full(len(x), x.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    batches = [(x, lengths), ragged_probe(x, lengths, seed)]
    ragged = np.maximum(1, rng.integers(1, x.shape[1] + 1, size=len(x)))
    ragged[0] = 1
    batches.append((x, ragged))
    return batches


def export_bag(bag: Bag, path, *, opset: int = DEFAULT_OPSET, verify_x=None, verify_lengths=None,
               atol: float = ATOL, rtol: float = RTOL, member_outputs: bool = False,
               seed: int = 0) -> ExportResult:
    """Compile ``bag`` to one ONNX file at ``path`` after checking it and proving parity.

    ``verify_x``/``verify_lengths``: a real padded batch (e.g. the test split) to verify on; the
    export also verifies that batch re-padded with garbage and shuffled, and with ragged lengths.
    Raises ``ParityError`` (and writes nothing) when any output differs beyond the tolerance.
    """
    model = compile_bag(bag, opset=opset, member_outputs=member_outputs)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    reports = [verify_model(data, bag, x, lengths, atol, rtol)
               for x, lengths in _probe_batches(bag, verify_x, verify_lengths, seed)]
    failed = [r for r in reports if not r.ok]
    if failed:
        raise ParityError(f"compiled graph differs from the PyTorch ensemble beyond atol={atol}, "
                          f"rtol={rtol}: {failed[0]}; nothing was written")
    atomic_write_bytes(Path(path), data)
    return ExportResult(Path(path), reports, len(data), len(model.graph.node), opset)
