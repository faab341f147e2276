"""Bundled real data sets (ETTh1, Japanese Vowels) and time-series windowing helpers.

See README.md in this folder for attribution, licences, formats and splits.
"""
from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

_HERE = Path(__file__).resolve().parent

JAPANESE_VOWELS_FEATURES = [f"lpc_{i}" for i in range(1, 13)]
_JV_COUNTS = {"train": [30] * 9, "test": [31, 35, 88, 44, 29, 24, 40, 50, 29]}

ETTH1_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
ETTH1_TARGET = "OT"
# Informer borders: 12 / 4 / 4 months of 30 days x 24 hours.
ETTH1_SPLITS = {"train": (0, 8640), "validation": (8640, 11520), "test": (11520, 14400)}


def dataset_names() -> List[str]:
    return ["japanese_vowels", "etth1"]


def load_japanese_vowels(split: str) -> Tuple[List[np.ndarray], np.ndarray]:
    """Sequences (T_i, 12) float32 and speaker labels 1..9 (int64) for split 'train' or 'test'."""
    if split not in _JV_COUNTS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = _HERE / "japanese_vowels" / f"ae.{split}"
    seqs, block = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 12:
            raise ValueError(f"{path.name} line {lineno}: expected 12 values, got {len(parts)}")
        row = [float(p) for p in parts]
        if all(v == 1.0 for v in row):  # block separator, not data
            if not block:
                raise ValueError(f"{path.name} line {lineno}: empty block")
            seqs.append(np.asarray(block, dtype=np.float32))
            block = []
        else:
            block.append(row)
    if block:
        raise ValueError(f"{path.name}: last block is not terminated by a separator line")
    counts = _JV_COUNTS[split]
    if len(seqs) != sum(counts):
        raise ValueError(f"{path.name}: expected {sum(counts)} blocks, found {len(seqs)}")
    labels = np.repeat(np.arange(1, 10, dtype=np.int64), counts)
    return seqs, labels


@lru_cache(maxsize=1)
def _read_etth1():
    values, names = load_csv_series(_HERE / "ett" / "ETTh1.csv", ETTH1_COLUMNS)
    with open(_HERE / "ett" / "ETTh1.csv", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        dates = np.array([r[0] for r in rows], dtype="datetime64[s]")
    values.setflags(write=False)
    dates.setflags(write=False)
    return values, names, dates


def load_etth1() -> Tuple[np.ndarray, List[str], np.ndarray]:
    """ETTh1: values float32 (17420, 7) in ETTH1_COLUMNS order, column names, datetime64[s] dates."""
    values, names, dates = _read_etth1()
    return values.copy(), list(names), dates.copy()


def load_csv_series(path, columns: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, List[str]]:
    """Read a numeric time-series CSV with a header row into float32 (N, F).

    A first column whose first data cell is not a number (e.g. a timestamp) is skipped.
    `columns` selects and orders columns by name (default: all numeric columns).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    rows = [r for _, r in _read_csv_rows(path)]
    if not rows:
        raise ValueError(f"CSV file {path} is empty")
    header, data = [h.strip() for h in rows[0]], rows[1:]
    if not data:
        raise ValueError(f"CSV file {path} has a header but no data rows")
    first = 0
    try:
        float(data[0][0])
    except ValueError:
        first = 1  # non-numeric first column (date/time): skip it
    available = header[first:]
    if not available:
        raise ValueError(f"CSV file {path} has no numeric columns")
    names = list(available) if columns is None else list(columns)
    for c in names:
        if c not in available:
            raise ValueError(f"column {c!r} not in CSV; available: {', '.join(available)}")
    idx = [header.index(c, first) for c in names]
    out = np.empty((len(data), len(idx)), dtype=np.float32)
    for i, r in enumerate(data):
        if len(r) != len(header):
            raise ValueError(f"CSV file {path}: data row {i + 1} (file line {i + 2}) has "
                             f"{len(r)} cells, header has {len(header)}")
        for j, k in enumerate(idx):
            try:
                v = float(r[k])
            except ValueError:
                v = None
            if v is None or not math.isfinite(v):
                raise ValueError(f"CSV file {path}: non-numeric value {r[k]!r} at data row {i + 1} "
                                 f"(file line {i + 2}), column {header[k]!r}")
            out[i, j] = v
    return out, names


def load_csv_sequences(path, sequence_column: str, label_column: str,
                       columns: Optional[Sequence[str]] = None):
    """Read labelled sequences from a CSV with a header row: one row per time step, rows of one
    sequence contiguous, grouped by ``sequence_column``; ``label_column`` holds the sequence's class
    (the same on each of its rows). Features: ``columns``, or every other column (numeric).

    Returns (sequences: list of float32 (T_i, F), labels (N,), feature names, sequence ids), in
    the file's order. Labels are int64 when every label is an integer, else strings.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    rows = _read_csv_rows(path)
    if len(rows) < 2:
        raise ValueError(f"CSV file {path} has no data rows")
    header = [h.strip() for h in rows[0][1]]
    for option, name in (("--sequence-column", sequence_column), ("--label-column", label_column)):
        if name not in header:
            raise ValueError(f"{option} {name!r} is not in {path}; columns: {', '.join(header)}")
    if sequence_column == label_column:
        raise ValueError("the sequence and label columns must differ")
    names = [h for h in header if h not in (sequence_column, label_column)] if columns is None else list(columns)
    missing = [c for c in names if c not in header]
    if missing or not names:
        raise ValueError(f"{path}: feature column(s) {', '.join(map(repr, missing)) or '(none)'} not found; "
                         f"columns: {', '.join(header)}")
    idx, s_idx, l_idx = [header.index(c) for c in names], header.index(sequence_column), header.index(label_column)
    sequences, labels, ids, steps, seen = [], [], [], [], set()
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise ValueError(f"{path} line {line}: {len(r)} cells, the header has {len(header)}")
        key, label = r[s_idx].strip(), r[l_idx].strip()
        if not ids or key != ids[-1]:
            if key in seen:  # a set: large files have many sequences
                raise ValueError(f"{path} line {line}: rows of sequence {key!r} are not contiguous; "
                                 f"sort the file by {sequence_column!r}")
            if steps:
                sequences.append(np.asarray(steps, dtype=np.float32))
            ids.append(key)
            seen.add(key)
            labels.append(label)
            steps = []
        elif label != labels[-1]:
            raise ValueError(f"{path} line {line}: sequence {key!r} changes label from {labels[-1]!r} "
                             f"to {label!r}; a sequence has one label")
        steps.append([_csv_number(r[k], path, line, header[k]) for k in idx])
    sequences.append(np.asarray(steps, dtype=np.float32))
    try:
        label_array = np.asarray([int(v) for v in labels], dtype=np.int64)
    except ValueError:
        label_array = np.asarray(labels)
    return sequences, label_array, names, ids


def _read_csv_rows(path: Path) -> list:
    """(file line, cells) of every non-empty row; UTF-8, a spreadsheet's byte-order mark dropped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [(line, r) for line, r in enumerate(csv.reader(f), 1) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text CSV file (it holds binary data)") from None


def _csv_number(cell: str, path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"CSV file {path}: non-numeric value {cell!r} at file line {line}, column {column!r}")
    return value


def load_npz_arrays(path, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    """Named arrays of an NPZ file (no pickled objects), checking the required ones are there."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"NPZ file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an NPZ file (numpy.savez's zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in required if name not in data.files]
            if missing:
                raise ValueError(f"{path} lacks the array(s) {', '.join(map(repr, missing))}; it holds "
                                 f"{', '.join(map(repr, data.files)) or 'nothing'}")
            return {name: data[name] for name in (*required, *optional) if name in data.files}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(f"{path} holds object arrays (pickled); save numbers and strings only, "
                             "e.g. a padded x with lengths") from None
        raise
    except Exception as error:  # zipfile and format errors of a damaged file
        raise ValueError(f"{path} is not a readable NPZ file: {error}") from None


def make_forecast_windows(values, input_length: int, horizon: int, target_index: int,
                          start: int, stop: int, stride: int = 1,
                          lookback_from: Optional[int] = None):
    """Sliding windows whose target steps all lie in [start, stop).

    Window at input-start t: X = values[t:t+input_length], y = values[t+input_length:
    t+input_length+horizon, target_index]. Inputs must lie in [start, stop) when
    lookback_from is None, else in [lookback_from, stop) (Informer protocol for
    validation/test: lookback_from = start - input_length).
    Returns X float32 (N, input_length, F), y float32 (N, horizon), spans int64 (N, 2)
    with spans[i] = [first_row, last_row + 1) of window i.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (time, features), got shape {values.shape}")
    if min(input_length, horizon, stride) < 1:
        raise ValueError("input_length, horizon and stride must be >= 1")
    if not -values.shape[1] <= target_index < values.shape[1]:
        raise ValueError(f"target_index {target_index} out of range for {values.shape[1]} features")
    lo = start if lookback_from is None else lookback_from
    if not (0 <= lo <= start < stop <= len(values)):
        raise ValueError(f"need 0 <= lookback_from <= start < stop <= {len(values)}; "
                         f"got lookback_from={lookback_from}, start={start}, stop={stop}")
    t0, t1 = max(lo, start - input_length), stop - input_length - horizon
    if t1 < t0:
        raise ValueError(f"range [{lo}, {stop}) too short for one window of input_length="
                         f"{input_length} + horizon={horizon}")
    t = np.arange(t0, t1 + 1, stride, dtype=np.int64)
    X = values[t[:, None] + np.arange(input_length)]
    y = values[t[:, None] + input_length + np.arange(horizon), target_index]
    spans = np.stack([t, t + input_length + horizon], axis=1)
    return X, y, spans


def etth1_forecast_split(split: str, input_length: int = 96, horizon: int = 24, stride: int = 1):
    """ETTh1 windows (X, y, spans) for split train/validation/test, target OT (unscaled).

    Train windows lie entirely in the train rows; validation/test windows have targets in
    their part and inputs that may reach back input_length rows into the previous part.
    """
    if split not in ETTH1_SPLITS:
        raise ValueError(f"split must be one of {list(ETTH1_SPLITS)}, got {split!r}")
    values = _read_etth1()[0]
    start, stop = ETTH1_SPLITS[split]
    back = None if split == "train" else start - input_length
    return make_forecast_windows(values, input_length, horizon, ETTH1_COLUMNS.index("OT"),
                                 start, stop, stride, back)
