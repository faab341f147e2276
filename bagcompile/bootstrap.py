"""Bootstrap draws that respect the unit of independence.

- Whole sequences (classification, or independent sequences): sample indices with replacement,
  optionally within each class (stratified); out-of-bag = sequences never drawn.
- Time blocks (forecasting windows, which overlap): windows are grouped by start time into blocks
  of ``block_length`` steps, blocks are drawn with replacement, and out-of-bag windows are purged:
  a window counts as out-of-bag only if it shares no time step with any in-bag window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapDraw:
    in_bag: np.ndarray   # int64 indices into the training samples, with repeats
    out_of_bag: np.ndarray  # int64 indices of samples the member never saw (purged for windows)


def sequence_bootstrap(n_samples: int, rng: np.random.Generator, max_samples: float | int = 1.0,
                       stratify: np.ndarray | None = None) -> BootstrapDraw:
    n_draw = _n_draw(n_samples, max_samples)
    if stratify is None:
        in_bag = rng.integers(0, n_samples, size=n_draw)
    else:
        parts = []
        for cls in np.unique(stratify):
            members = np.flatnonzero(stratify == cls)
            k = max(1, int(round(n_draw * len(members) / n_samples)))
            parts.append(rng.choice(members, size=k, replace=True))
        in_bag = np.concatenate(parts)
    in_bag = np.sort(in_bag).astype(np.int64)
    out_of_bag = np.setdiff1d(np.arange(n_samples), in_bag).astype(np.int64)
    return BootstrapDraw(in_bag, out_of_bag)


def block_bootstrap(spans: np.ndarray, block_length: int, rng: np.random.Generator,
                    max_samples: float | int = 1.0) -> BootstrapDraw:
    """``spans``: (N, 2) [first, last+1) time steps of each window (input and target together)."""
    spans = np.asarray(spans, dtype=np.int64)
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    start = spans[:, 0]
    block_of = (start - start.min()) // block_length
    blocks = np.unique(block_of)
    n_draw = _n_draw(len(blocks), max_samples)
    drawn = rng.choice(blocks, size=n_draw, replace=True)
    counts = np.bincount(np.searchsorted(blocks, drawn), minlength=len(blocks))
    members_by_block = [np.flatnonzero(block_of == b) for b in blocks]
    in_bag = np.concatenate([np.repeat(members_by_block[i], c) for i, c in enumerate(counts) if c]
                            or [np.empty(0, np.int64)])
    in_bag = np.sort(in_bag).astype(np.int64)
    out_of_bag = purged_out_of_bag(spans, np.unique(in_bag))
    return BootstrapDraw(in_bag, out_of_bag)


def purged_out_of_bag(spans: np.ndarray, in_bag_unique: np.ndarray) -> np.ndarray:
    """Windows that overlap no in-bag window (so out-of-bag really means unseen time steps)."""
    covered_until = spans[:, 1].max() + 1
    covered = np.zeros(covered_until, dtype=np.int64)
    for first, stop in spans[in_bag_unique]:
        covered[first] += 1
        covered[stop] -= 1
    seen = np.cumsum(covered) > 0  # time steps inside at least one in-bag window
    seen_prefix = np.concatenate([[0], np.cumsum(seen)])
    hits = seen_prefix[spans[:, 1]] - seen_prefix[spans[:, 0]]
    return np.flatnonzero(hits == 0).astype(np.int64)


def _n_draw(n: int, max_samples: float | int) -> int:
    if isinstance(max_samples, (int, np.integer)) and not isinstance(max_samples, bool) and max_samples > 1:
        return int(max_samples)
    if not 0 < float(max_samples) <= 1:
        raise ValueError(f"max_samples must be a fraction in (0, 1] or a count > 1, got {max_samples}")
    return max(1, int(round(float(max_samples) * n)))
