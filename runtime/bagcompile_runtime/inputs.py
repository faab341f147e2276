"""Turn user data (ragged rows or a padded 3-D array) into the graph's ``x`` / ``lengths`` pair."""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


class Batch:
    """Validated input, padded one chunk at a time.

    Ragged rows are kept as a list and padded per chunk, so one very long sequence only widens
    its own chunk instead of the whole batch.
    """

    __slots__ = ("lengths", "_rows", "_dense")

    def __init__(self, lengths, rows=None, dense=None):
        self.lengths, self._rows, self._dense = lengths, rows, dense

    def __len__(self):
        return len(self.lengths)

    def slice(self, start, stop):
        lengths = self.lengths[start:stop]
        if self._dense is not None:
            return self._dense[start:stop], lengths  # axis-0 slice of a C array stays C-contiguous
        rows = self._rows[start:stop]
        x = np.zeros((len(rows), int(lengths.max()), rows[0].shape[1]), dtype=np.float32)
        for i, row in enumerate(rows):
            x[i, : len(row)] = row
        return x, lengths

    def chunks(self, size):
        for start in range(0, len(self), size):
            yield self.slice(start, start + size)


def pad_sequences(X, n_features, lengths=None, allow_nonfinite=False):
    """Validate ``X``; return float32 ``x`` ``[N, T, F]`` (C-contiguous) and int64 ``lengths``.

    ``X`` is a list/tuple of 2-D ``(T_i, F)`` arrays (ragged; ``lengths``, if given, cuts row i
    to ``lengths[i]`` steps) or an ``(N, T, F)`` array (``lengths`` defaults to ``T`` per row).
    Padding is 0. The result may share memory with ``X`` when no conversion was needed.
    """
    batch = prepare(X, n_features, lengths, allow_nonfinite)
    return batch.slice(0, len(batch))


def prepare(X, n_features, lengths=None, allow_nonfinite=False) -> Batch:
    """Validate and convert ``X`` without padding ragged rows yet (see :class:`Batch`)."""
    ragged = isinstance(X, (list, tuple)) or (
        isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 1
    )
    batch = _ragged(X, n_features, lengths) if ragged else _dense(X, n_features, lengths)
    if not allow_nonfinite:
        _check_finite(batch)
    return batch


def _as_float32(value, what):
    try:  # ValueError here: nested lists of unequal lengths, non-numeric objects
        array = np.asarray(value)
        if array.dtype.kind not in "biufO":
            raise InvalidInputError(f"{what} must hold numbers, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # float64 beyond float32 range becomes Inf, caught later
            return np.ascontiguousarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{what} cannot be read as a numeric array: {exc}") from None


def _empty_row(i):
    return InvalidInputError(f"row {i} is empty (length 0): every sequence needs at least one step")


def _ragged(X, n_features, lengths):
    if len(X) == 0:
        raise InvalidInputError("empty batch: X has no sequences")
    rows = []
    for i, value in enumerate(X):
        row = _as_float32(value, f"row {i}")
        if row.shape[:1] == (0,):
            raise _empty_row(i)
        if row.ndim != 2:
            raise InvalidInputError(
                f"row {i}: expected a 2-D (time, features) array, got shape {row.shape}"
            )
        if row.shape[1] != n_features:
            raise InvalidInputError(f"row {i}: expected {n_features} features, got {row.shape[1]}")
        rows.append(row)
    steps = np.array([len(row) for row in rows], dtype=np.int64)
    if lengths is None:
        return Batch(steps, rows=rows)
    lengths = _check_lengths(lengths, steps)
    return Batch(lengths, rows=[row[:n] for row, n in zip(rows, lengths)])


def _dense(X, n_features, lengths):
    try:
        array = np.asarray(X)
    except ValueError as exc:
        raise InvalidInputError(f"X cannot be read as a numeric array: {exc}") from None
    if array.ndim != 3:
        hint = " (wrap a single sequence in a list: [X])" if array.ndim == 2 else ""
        raise InvalidInputError(
            f"expected X of shape (batch, time, features), got shape {array.shape}{hint}"
        )
    n, steps, features = array.shape
    if n == 0:
        raise InvalidInputError("empty batch: X has no sequences")
    if features != n_features:
        raise InvalidInputError(f"expected {n_features} features, got {features}")
    if steps == 0:
        raise _empty_row(0)
    x = _as_float32(array, "X")
    if lengths is None:
        return Batch(np.full(n, steps, dtype=np.int64), dense=x)
    lengths = _check_lengths(lengths, np.full(n, steps))
    padding = np.arange(steps) >= lengths[:, None]
    if padding.any():
        # Zero the padding so a graph that multiplies by a mask never sees garbage (NaN * 0 = NaN);
        # copy first rather than write into the caller's array.
        if np.may_share_memory(x, array):
            x = x.copy()
        x[padding] = 0.0
    return Batch(lengths, dense=x)


def _check_lengths(lengths, maxima):
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise InvalidInputError(f"expected lengths of shape (batch,), got shape {array.shape}")
    if len(array) != len(maxima):
        raise InvalidInputError(f"lengths has {len(array)} entries for a batch of {len(maxima)}")
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)  # 3.0 is a fine length; 2.5 is not
    if array.dtype.kind not in "iu":
        raise InvalidInputError(f"lengths must be integers, got dtype {array.dtype}")
    bad = np.flatnonzero((array < 1) | (array > maxima))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(f"lengths[{i}]={int(array[i])} is outside 1..{int(maxima[i])}")
    return array.astype(np.int64, copy=False)


def _check_finite(batch):
    # Only the valid steps matter: dense padding was zeroed and ragged rows were cut to length.
    rows = batch._rows if batch._dense is None else batch._dense
    if batch._dense is not None and np.isfinite(rows).all():
        return  # fast path; the loop below only runs to name the first bad row
    for i, row in enumerate(rows):
        if not np.isfinite(row).all():
            raise InvalidInputError(
                f"X contains NaN or Inf (row {i}); pass allow_nonfinite=True to run anyway"
            )
