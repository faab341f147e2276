"""``bagcompile predict``'s file formats: NPZ or CSV in, CSV out, streamed in chunks.

A CSV is read row by row and scored ``chunk_size`` sequences at a time, so memory is bounded by
the chunk (and the longest sequence), not by the file. An NPZ's 'x' is read from the archive
as a stream, ``chunk_size`` rows at a time, so it is bounded the same way. The output is
written to a temporary file and renamed when complete: a failed run leaves no partial output.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import math
import re
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from bagcompile_runtime import InvalidInputError

from .atomic import atomic_text_writer

Chunk = tuple[list, "np.ndarray | None", list]  # (sequences, lengths or None, ids)


def iter_chunks(path: Path, feature_names, sequence_column=None, window=None, chunk_size: int = 1024,
                allow_nonfinite: bool = False) -> Iterator[Chunk]:
    path = Path(path)
    if path.suffix.lower() == ".npz":
        if sequence_column is not None or window is not None:
            raise ValueError("--sequence-column and --window are for CSV input; an NPZ's 'x' already "
                             "holds one sequence per row")
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
    """Rows of 'x' ``chunk_size`` at a time, read from the archive as a stream (memory bounded by
    the chunk, compressed or not); 'lengths' (one int per row) is read whole."""
    if not zipfile.is_zipfile(path):  # else numpy guesses a pickle and suggests allow_pickle
        raise ValueError(f"{path} is not a usable NPZ file: it is not a zip archive (NPZ is numpy's "
                         "np.savez format; name a CSV file .csv)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            if "x" not in names:
                raise ValueError(f"it needs an array named 'x' (batch, time, features); found "
                                 f"{', '.join(names) or 'nothing'}")
            lengths = None
            if "lengths" in names:
                with archive.open("lengths.npy") as handle:
                    lengths = np.lib.format.read_array(handle, allow_pickle=False)
            with archive.open("x.npy") as handle:
                yield from _stream_rows(handle, archive.getinfo("x.npy").file_size, lengths, chunk_size, path)
    except Exception as error:
        # zipfile (bad CRC, encryption, compression), numpy's header parser (tokenize and syntax
        # errors on a damaged header) and short reads all land here: one line naming the file.
        message = str(error) or type(error).__name__
        raise ValueError(message if message.startswith(str(path)) else
                         f"{path} is not a usable NPZ file: {message}") from None


def _stream_rows(handle, member_size: int, lengths, chunk_size: int, path: Path):
    version = np.lib.format.read_magic(handle)
    with warnings.catch_warnings():  # e.g. "created on Python 2" for a 3L in the shape: harmless
        warnings.simplefilter("ignore")
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            # 3.0 only allows UTF-8 in the header (structured field names); a numeric dtype's
            # header is ASCII, laid out as in 2.0.
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"'x' is in .npy format version {version}, which this reader does not know")
    if dtype.hasobject:
        raise ValueError("'x' holds Python objects; save numbers (np.savez of a float array)")
    if len(shape) != 3:
        raise ValueError(f"'x' must be (batch, time, features), got shape {shape}")
    data_size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for absurd headers
    if min(shape) < 0 or handle.tell() + data_size != member_size:
        held = member_size - handle.tell()
        state = "truncated" if 0 <= data_size and held < data_size else "damaged"
        raise ValueError(f"'x' is {state}: its header says shape {shape} of {dtype} "
                         f"({data_size} bytes), but it holds {held} bytes of data")
    if shape[0] == 0:
        raise ValueError("'x' has no rows")
    n_rows = shape[0]
    if lengths is not None and lengths.ndim != 1:
        raise ValueError(f"{path}: 'lengths' must be one integer per row, got shape {lengths.shape}")
    if lengths is not None and len(lengths) != n_rows:
        raise ValueError(f"{path}: 'lengths' has {len(lengths)} entries for {n_rows} rows of 'x'")
    if fortran_order:  # column-major rows are not contiguous on disk: read whole (documented)
        data = handle.read()
        x = np.frombuffer(data, dtype).reshape(shape[::-1]).transpose()
        chunks = ((start, x[start:start + chunk_size]) for start in range(0, n_rows, chunk_size))
    else:
        chunks = _contiguous_chunks(handle, shape, dtype, chunk_size, path)
    for start, part in chunks:
        stop = start + len(part)
        yield part, None if lengths is None else lengths[start:stop], list(range(start, stop))


def _contiguous_chunks(handle, shape, dtype, chunk_size: int, path: Path):
    row_shape = tuple(shape[1:])
    row_bytes = math.prod(row_shape) * dtype.itemsize
    if row_bytes == 0:  # no steps or no features: let the runtime name the problem
        yield 0, np.zeros(shape, dtype)
        return
    for start in range(0, shape[0], chunk_size):
        count = min(chunk_size, shape[0] - start)
        data = handle.read(count * row_bytes)
        if len(data) != count * row_bytes:
            raise ValueError(f"{path} is not a usable NPZ file: 'x' is truncated (row "
                             f"{start + len(data) // row_bytes} of {shape[0]} is incomplete)")
        yield start, np.frombuffer(data, dtype).reshape((count, *row_shape))


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
            with np.errstate(over="ignore"):  # once per row; beyond float32's range: Inf, named below
                for j, k in enumerate(idx):
                    values[j] = _number(row[k], path, line, header[k])
                    if not allow_nonfinite and not math.isfinite(values[j]):
                        beyond = " in float32 (beyond ±3.4e38)" if math.isfinite(float(row[k])) else ""
                        raise ValueError(f"{path} line {line}: {row[k]!r} in column {header[k]!r} is "
                                         f"not finite{beyond} (--allow-nonfinite scores it anyway)")
            yield line, None if group is None else row[group], values


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path} line {line}: non-numeric value {cell!r} in column {column!r}") from None


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
            with _rows_named_by_id(ids):
                _write_chunk(writer, session, X, lengths, ids)
            total += len(ids)
            if on_chunk is not None:
                on_chunk(total)
    return total


@contextlib.contextmanager
def _rows_named_by_id(ids):
    """The runtime numbers rows within its call, i.e. within the chunk; name them as the output does."""
    try:
        yield
    except InvalidInputError as error:
        if error.row is None:
            raise
        message = re.sub(rf"\(row {error.row}\b", lambda _: f"(row {ids[error.row]}", str(error))
        message = message.replace(f"lengths[{error.row}]", f"lengths[{ids[error.row]}]")
        raise InvalidInputError(message, row=ids[error.row]) from None


def _write_chunk(writer, session, X, lengths, ids):
    if session.task == "classification":
        proba = session.predict_proba(X, lengths=lengths)
        labels = np.asarray(session.classes)[proba.argmax(1)].astype(object)
        labels[np.isnan(proba).any(axis=1)] = ""  # --allow-nonfinite rows: no class, not classes[0]
        for i, label, p in zip(ids, labels, proba):
            writer.writerow([i, label, *[f"{v:.6g}" for v in p]])
    else:
        pred, std = session.predict(X, lengths=lengths, return_std=True)
        for i, p, s in zip(ids, pred, std):
            writer.writerow([i, *[f"{v:.6g}" for v in p], *[f"{v:.6g}" for v in s]])
