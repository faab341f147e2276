"""Numerical check of a compiled graph against the PyTorch ensemble, in onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bag import Bag, bag_forward

ATOL = 1e-4
RTOL = 1e-5


class ParityError(RuntimeError):
    """The compiled graph does not reproduce the PyTorch ensemble; nothing was written."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    max_rel_excess: float  # max over elements of |a-b| - (atol + rtol*|b|); <= 0 means within tolerance
    n_rows: int
    labels_equal: bool | None

    @property
    def ok(self) -> bool:
        return self.max_rel_excess <= 0 and self.labels_equal is not False

    def __str__(self) -> str:
        text = f"max |onnx - torch| = {self.max_abs_diff:.3g} over {self.n_rows} rows"
        return text + ("" if self.labels_equal is None else f", labels equal: {self.labels_equal}")


def onnxruntime_outputs(model_bytes: bytes, x: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {"x": np.ascontiguousarray(x, dtype=np.float32), "lengths": np.asarray(lengths, dtype=np.int64)}
    return dict(zip(names, session.run(names, feeds)))


def compare_outputs(got: dict, expected: dict, atol: float = ATOL, rtol: float = RTOL) -> ParityReport:
    abs_diff, excess, labels_equal, n_rows = 0.0, -np.inf, None, 0
    for name, want in expected.items():
        have = got[name]
        if have.shape != want.shape:
            raise ParityError(f"output {name!r} has shape {have.shape}, PyTorch gives {want.shape}")
        n_rows = have.shape[0]
        if name == "label":
            labels_equal = bool(np.array_equal(have, want))
            continue
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        if diff.size:
            abs_diff = max(abs_diff, float(np.nanmax(diff)))
            excess = max(excess, float(np.nanmax(diff - (atol + rtol * np.abs(want)))))
        if not np.array_equal(np.isfinite(have), np.isfinite(want)):
            excess = np.inf
    return ParityReport(abs_diff, float(excess), n_rows, labels_equal)


def verify_model(model_bytes: bytes, bag: Bag, x: np.ndarray, lengths: np.ndarray,
                 atol: float = ATOL, rtol: float = RTOL) -> ParityReport:
    """Run the graph and the PyTorch bag on the same padded batch and compare every output."""
    expected = bag_forward(bag, x, lengths)
    got = onnxruntime_outputs(model_bytes, x, lengths)
    report = compare_outputs(got, expected, atol, rtol)
    if report.labels_equal is False:
        # A label can flip only where two classes tie to rounding; accept that, nothing else.
        probs = expected["probabilities"]
        top2 = np.sort(probs, axis=1)[:, -2:]
        flipped = got["label"] != expected["label"]
        if np.all((top2[flipped, 1] - top2[flipped, 0]) <= 2 * atol):
            report = ParityReport(report.max_abs_diff, report.max_rel_excess, report.n_rows, True)
    return report


def ragged_probe(x: np.ndarray, lengths: np.ndarray, seed: int = 0, garbage: float = 1e3):
    """Re-pad a batch with extra padded steps full of garbage and shuffled lengths: padding must not matter."""
    rng = np.random.default_rng(seed)
    n, t, f = x.shape
    extra = max(1, t // 3)
    padded = rng.normal(0, garbage, size=(n, t + extra, f)).astype(np.float32)
    for i, length in enumerate(lengths):
        padded[i, :length] = x[i, :length]
    order = rng.permutation(n)
    return padded[order], np.asarray(lengths)[order]
