"""``bagcompile predict``'s file formats: NPZ or CSV in, CSV out (written atomically)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .datasets import load_csv_series


def read_sequences(path: Path, feature_names, sequence_column=None, window=None):
    """Returns (X, lengths or None, ids): X a list of (T, F) arrays or an (N, T, F) array."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("it holds a single array, not named arrays")
                if "x" not in data:
                    raise ValueError(f"it needs an array named 'x' (batch, time, features); found "
                                     f"{', '.join(data.files) or 'nothing'}")
                x = data["x"]
                lengths = data["lengths"] if "lengths" in data else None
        except Exception as error:  # numpy raises zipfile, pickle and value errors for bad files
            raise ValueError(f"{path} is not a usable NPZ file: {error}") from None
        return x, lengths, list(range(len(x)))
    if sequence_column is not None and window is not None:
        raise ValueError("use either --sequence-column or --window, not both")
    values, _ = load_csv_series(path, columns=list(feature_names))
    if sequence_column is not None:
        groups = _read_column(path, sequence_column)
        ids = list(dict.fromkeys(groups))  # first-appearance order
        rows = {g: [] for g in ids}
        for g, row in zip(groups, values):
            rows[g].append(row)
        return [np.stack(rows[g]) for g in ids], None, ids
    if window is not None:
        if window > len(values):
            raise ValueError(f"--window {window} is longer than the file ({len(values)} rows)")
        starts = np.arange(0, len(values) - window + 1)
        x = values[starts[:, None] + np.arange(window)]
        return x, None, [int(s + window - 1) for s in starts]  # id: the row each window ends on
    return [values], None, [0]


def _read_column(path: Path, name: str) -> list[str]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        if name not in header:
            raise ValueError(f"--sequence-column {name!r} is not in {path}; columns: {', '.join(header)}")
        k = header.index(name)
        return [row[k] for row in reader if any(c.strip() for c in row)]


def write_predictions(session, X, lengths, ids, output: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if session.task == "classification":
        proba = session.predict_proba(X, lengths=lengths)
        labels = np.asarray(session.classes)[proba.argmax(1)]
        writer.writerow(["id", "label", *[f"p_{c}" for c in session.classes]])
        for i, label, p in zip(ids, labels, proba):
            writer.writerow([i, label, *[f"{v:.6g}" for v in p]])
    else:
        pred, std = session.predict(X, lengths=lengths, return_std=True)
        names = session.target_names
        writer.writerow(["id", *names, *[f"{n}_std" for n in names]])
        for i, p, s in zip(ids, pred, std):
            writer.writerow([i, *[f"{v:.6g}" for v in p], *[f"{v:.6g}" for v in s]])
    atomic_write_bytes(Path(output), buffer.getvalue().encode())
