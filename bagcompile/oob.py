"""Member weights derived from each member's own out-of-bag score (the compiler's weighted mean)."""
from __future__ import annotations

import numpy as np


def oob_member_weights(task: str, member_scores, n_classes: int | None = None) -> np.ndarray:
    """Normalised weights, one per member.

    Classification: skill above chance, ``max(accuracy - 1/classes, 0)``; regression: inverse
    out-of-bag MSE. A member without out-of-bag samples (score NaN) gets the mean weight of the
    others; if no member has any skill, the weights are uniform.
    """
    scores = np.asarray(member_scores, dtype=np.float64)
    if task == "classification":
        raw = np.maximum(scores - 1.0 / n_classes, 0.0)
    else:
        raw = 1.0 / np.maximum(scores, 1e-12)
    known = np.isfinite(raw)
    if not known.any() or raw[known].sum() <= 0:
        return np.full(len(scores), 1.0 / len(scores), np.float32)
    raw = np.where(known, raw, raw[known].mean())
    return (raw / raw.sum()).astype(np.float32)
