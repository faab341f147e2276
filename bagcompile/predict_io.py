"""``bagcompile predict``'s file formats: NPZ or CSV in, CSV out, streamed in chunks.

A CSV is read row by row and scored ``chunk_size`` sequences at a time, so memory is bounded by
the chunk (and the longest sequence), not by the file. NPZ arrays are loaded whole (the format
is not streamable) but still scored in chunks. The output is written to a temporary file and
renamed when complete: a failed run leaves no partial output.
"""
from __future__ import annotations

import collections
import csv
import math
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import atomic_text_writer

Chunk = tuple[list, "np.ndarray | None", list]  # (sequences, lengths or None, ids)


def iter_chunks(path: Path, feature_names, sequence_column=None, window=None, chunk_size: int = 1024,
                allow_nonfinite: bool = False) -> Iterator[Chunk]:
    path = Path(path)
    if path.suffix.lower() == ".npz":
        yield from _npz_chunks(path, chunk_size)
        return
    if sequence_column is not None and window is not None:
        raise ValueError("use either --sequence-column or --window, not both")
    sequences = _csv_sequences(path, list(feature_names), sequence_column, window, allow_nonfinite)
    batch, ids = [], []
    for seq_id, seq in sequences:
        batch.append(seq)
        ids.append(seq_id)
        if len(batch) == chunk_size:
            yield batch, None, ids
            batch, ids = [], []
    if batch:
        yield batch, None, ids


def _npz_chunks(path: Path, chunk_size: int):
    if not zipfile.is_zipfile(path):  # else numpy guesses a pickle and suggests allow_pickle
        raise ValueError(f"{path} is not a usable NPZ file: it is not a zip archive (NPZ is numpy's "
                         "np.savez format; name a CSV file .csv)")
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
    if lengths is not None and len(lengths) != len(x):
        raise ValueError(f"{path}: 'lengths' has {len(lengths)} entries for {len(x)} rows of 'x'")
    for start in range(0, max(len(x), 1), chunk_size):
        part = slice(start, start + chunk_size)
        yield x[part], None if lengths is None else lengths[part], list(range(len(x)))[part]


def _csv_rows(path: Path, feature_names: list[str], group_column: str | None, allow_nonfinite: bool = False):
    """(line number, group value or None, float32 feature row) for each non-empty data row."""
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's BOM
        reader = _decoded(csv.reader(handle), path)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ValueError(f"CSV file {path} is empty")
        missing = [c for c in feature_names if c not in header]
        if missing:
            raise ValueError(f"{path} lacks the model's feature column(s) {', '.join(map(repr, missing))}; "
                             f"columns: {', '.join(header)}")
        if group_column is not None and group_column not in header:
            raise ValueError(f"--sequence-column {group_column!r} is not in {path}; columns: {', '.join(header)}")
        idx = [header.index(c) for c in feature_names]
        group = header.index(group_column) if group_column is not None else None
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path} line {line}: {len(row)} cells, the header has {len(header)}")
            values = np.empty(len(idx), dtype=np.float32)
            for j, k in enumerate(idx):
                try:
                    values[j] = float(row[k])
                except ValueError:
                    raise ValueError(f"{path} line {line}: non-numeric value {row[k]!r} in column "
                                     f"{header[k]!r}") from None
                if not allow_nonfinite and not math.isfinite(values[j]):
                    raise ValueError(f"{path} line {line}: {row[k]!r} in column {header[k]!r} is not finite "
                                     "(--allow-nonfinite scores it anyway)")
            yield line, None if group is None else row[group], values


def _decoded(reader, path: Path):
    """The CSV reader's rows, with a binary file reported as such (not as a codec error)."""
    try:
        yield from reader
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text CSV file (it holds binary data; an NPZ file must be "
                         "named .npz)") from None


def _csv_sequences(path: Path, feature_names, sequence_column, window, allow_nonfinite=False):
    rows = _csv_rows(path, feature_names, sequence_column, allow_nonfinite)
    if window is not None:
        recent = collections.deque(maxlen=window)  # only the current window is held in memory
        count = 0
        for index, (_, _, values) in enumerate(rows):
            recent.append(values)
            count += 1
            if len(recent) == window:
                yield index, np.stack(recent)  # id: the data row the window ends on
        if count < window:
            raise ValueError(f"--window {window} is longer than the file ({count} rows)")
        return
    if sequence_column is None:
        whole = [values for _, _, values in rows]  # one sequence: the whole file
        if not whole:
            raise ValueError(f"{path} has a header but no data rows")
        yield 0, np.stack(whole)
        return
    current, members, finished = None, [], set()
    for line, key, values in rows:
        if key != current:
            if current is not None:
                yield current, np.stack(members)
                finished.add(current)
            if key in finished:
                raise ValueError(f"{path} line {line}: rows of sequence {key!r} are not contiguous; sort the "
                                 f"file by {sequence_column!r} (rows are streamed, one sequence at a time)")
            current, members = key, []
        members.append(values)
    if current is None:
        raise ValueError(f"{path} has a header but no data rows")
    yield current, np.stack(members)


def predict_to_csv(session, chunks: Iterator[Chunk], output: Path, on_chunk=None) -> int:
    """Score every chunk and write one CSV row per sequence; returns the number of rows."""
    total = 0
    with atomic_text_writer(output) as handle:
        writer = csv.writer(handle)
        if session.task == "classification":
            writer.writerow(["id", "label", *[f"p_{c}" for c in session.classes]])
        else:
            names = session.target_names
            writer.writerow(["id", *names, *[f"{n}_std" for n in names]])
        for X, lengths, ids in chunks:
            if session.task == "classification":
                proba = session.predict_proba(X, lengths=lengths)
                labels = np.asarray(session.classes)[proba.argmax(1)]
                for i, label, p in zip(ids, labels, proba):
                    writer.writerow([i, label, *[f"{v:.6g}" for v in p]])
            else:
                pred, std = session.predict(X, lengths=lengths, return_std=True)
                for i, p, s in zip(ids, pred, std):
                    writer.writerow([i, *[f"{v:.6g}" for v in p], *[f"{v:.6g}" for v in s]])
            total += len(ids)
            if on_chunk is not None:
                on_chunk(total)
    return total
