"""Turn user data (ragged rows or a padded 3-D array) into the graph's ``x`` / ``lengths`` pair."""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


class Batch:
    """Validated input, converted and padded one chunk at a time.

    Shapes, dtypes and lengths are checked up front; the float32 conversion, the zeroed padding
    and the NaN/Inf check happen per chunk, so the memory used beyond the caller's own data is
    bounded by the chunk, whatever the input's size or dtype (float64, int, or a read-only
    memory map). Ragged rows are padded per chunk, so one very long sequence only widens its
    own chunk instead of the whole batch.
    """

    __slots__ = ("lengths", "allow_nonfinite", "_rows", "_dense", "_full")

    def __init__(self, lengths, rows=None, dense=None, allow_nonfinite=False, full=False):
        self.lengths, self.allow_nonfinite = lengths, allow_nonfinite
        self._rows, self._dense = rows, dense
        self._full = full  # dense rows all at full length: no padding to zero (batch-1 latency)

    def __len__(self):
        return len(self.lengths)

    def slice(self, start, stop):
        """Rows ``start:stop`` as float32 ``x [n, T, F]`` (C-contiguous) and int64 ``lengths``."""
        start, stop, _ = slice(start, stop).indices(len(self))
        lengths = self.lengths[start:stop]
        if self._dense is not None and self._dense.dtype == np.float32:
            x = self._dense_part(start, stop, lengths)  # no conversion, so no overflow to silence
        else:
            with np.errstate(over="ignore"):  # float64 beyond float32 range becomes Inf, caught below
                x = self._dense_part(start, stop, lengths) if self._dense is not None \
                    else self._padded_rows(start, stop, lengths)
        if not self.allow_nonfinite:
            _check_finite(x, start, self._source_row)
        return x, lengths

    def _source_row(self, i, length):
        """Row ``i``'s valid steps as the caller gave them (before the float32 conversion)."""
        row = self._dense[i] if self._dense is not None else self._rows[i]
        return np.asarray(row[:length])

    def chunks(self, size):
        for start in range(0, len(self), size):
            yield self.slice(start, start + size)

    def _dense_part(self, start, stop, lengths):
        part = self._dense[start:stop]
        x = np.ascontiguousarray(part, dtype=np.float32)  # a view when it already is float32 C
        if self._full:
            return x
        padding = np.arange(x.shape[1]) >= lengths[:, None]
        if padding.any():
            # Zero the padding so a graph that multiplies by a mask never sees garbage (NaN * 0 =
            # NaN) and the NaN check ignores it; copy first rather than write into the caller's array.
            if np.may_share_memory(x, part):
                x = x.copy()
            x[padding] = 0.0
        return x

    def _padded_rows(self, start, stop, lengths):
        rows = self._rows[start:stop]
        x = np.zeros((len(rows), int(lengths.max()), rows[0].shape[1]), dtype=np.float32)
        for i, (row, n) in enumerate(zip(rows, lengths)):
            x[i, :n] = row[:n]
        return x


def pad_sequences(X, n_features, lengths=None, allow_nonfinite=False):
    """Validate ``X``; return float32 ``x`` ``[N, T, F]`` (C-contiguous) and int64 ``lengths``.

    ``X`` is a list/tuple of 2-D ``(T_i, F)`` arrays (ragged; ``lengths``, if given, cuts row i
    to ``lengths[i]`` steps) or an ``(N, T, F)`` array (``lengths`` defaults to ``T`` per row).
    Padding is 0. The result may share memory with ``X`` when no conversion was needed.
    """
    batch = prepare(X, n_features, lengths, allow_nonfinite)
    return batch.slice(0, len(batch))


def prepare(X, n_features, lengths=None, allow_nonfinite=False) -> Batch:
    """Check ``X``'s shape, dtype and ``lengths`` now; convert it chunk by chunk later (see
    :class:`Batch`). A NaN/Inf error names the first bad row when its chunk is reached."""
    ragged = isinstance(X, (list, tuple)) or (
        isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 1
    )
    full = not ragged and lengths is None
    lengths, rows, dense = _ragged(X, n_features, lengths) if ragged else _dense(X, n_features, lengths)
    return Batch(lengths, rows=rows, dense=dense, allow_nonfinite=allow_nonfinite, full=full)


def _numeric(value, what):
    """``value`` as an array of numbers, without copying one that already is (bool, int, float);
    conversion to float32 waits for its chunk."""
    try:  # ValueError here: nested lists of unequal lengths, non-numeric objects
        array = np.asarray(value)
        if array.dtype.kind not in "biufO":
            raise InvalidInputError(f"{what} must hold numbers, got dtype {array.dtype}")
        if array.dtype.kind == "O":  # e.g. a list mixing numbers and arrays: convert now, once
            with np.errstate(over="ignore"):
                array = np.asarray(array, dtype=np.float32)
        return array
    except (TypeError, ValueError, OverflowError) as exc:  # Overflow: a Python int of 400 digits
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
        row = _numeric(value, f"row {i}")
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
        return steps, rows, None
    return _check_lengths(lengths, steps), rows, None  # rows are cut to length when padded


def _dense(X, n_features, lengths):
    array = _numeric(X, "X")
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
    if lengths is None:
        return np.full(n, steps, dtype=np.int64), None, array
    return _check_lengths(lengths, np.full(n, steps)), None, array


def _check_lengths(lengths, maxima):
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise InvalidInputError(f"expected lengths of shape (batch,), got shape {array.shape}")
    if len(array) != len(maxima):
        raise InvalidInputError(f"lengths has {len(array)} entries for a batch of {len(maxima)}")
    integral_floats = (array.dtype.kind == "f" and np.all(np.isfinite(array))
                       and np.all(array == np.round(array)))  # 3.0 is a fine length; 2.5 is not
    if array.dtype.kind not in "iu" and not integral_floats:
        raise InvalidInputError(f"lengths must be integers, got dtype {array.dtype}")
    # Compared before any cast, so 1e20 or a uint64 beyond int64 is reported as it was given.
    bad = np.flatnonzero((array < 1) | (array > maxima))
    if bad.size:
        i = int(bad[0])
        value = array[i]
        value = int(value) if array.dtype.kind in "iu" or abs(value) < 2**53 else repr(float(value))
        raise InvalidInputError(f"lengths[{i}]={value} is outside 1..{int(maxima[i])}", row=i)
    return array.astype(np.int64, copy=False)


def _check_finite(x, first_row, source_row):
    # Padding is zero here, so only the valid steps can fail.
    if np.isfinite(x).all():
        return
    bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
    row = first_row + bad
    source = source_row(row, int(np.isfinite(x[bad]).all(axis=1).argmin()) + 1)
    if np.issubdtype(source.dtype, np.number) and np.isfinite(source).all():
        raise InvalidInputError(
            f"X holds a value beyond float32's range, ±3.4e38, that would become Inf (row {row}); "
            "pass allow_nonfinite=True to run anyway", row=row)
    raise InvalidInputError(
        f"X contains NaN or Inf (row {row}); pass allow_nonfinite=True to run anyway", row=row)
