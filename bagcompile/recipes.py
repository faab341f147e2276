"""Turn a data source (a bundled data set or a user's CSV) into time-ordered train/validation/test
parts, plus the estimator settings that suit it. Shared by ``bagcompile train`` and the main job."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import datasets


@dataclass
class Recipe:
    name: str
    task: str                      # "classification" or "regression"
    feature_names: list[str]
    train: tuple                   # (X, y) or (X, y, spans) for windows
    validation: tuple | None
    test: tuple
    params: dict = field(default_factory=dict)   # estimator defaults for this source
    target_names: list[str] | None = None
    target_scale: float | None = None            # training std used to standardise reported MSE
    baselines: dict = field(default_factory=dict)
    source_options: dict = field(default_factory=dict)  # what rebuilds a CSV source (source.json)


def japanese_vowels() -> Recipe:
    """Speaker classification; the published split (no validation part: members early-stop on OOB)."""
    return Recipe("japanese_vowels", "classification", list(datasets.JAPANESE_VOWELS_FEATURES),
                  datasets.load_japanese_vowels("train"), None, datasets.load_japanese_vowels("test"),
                  params={"hidden_size": 32, "n_members": 10})


def _forecast_baselines(X_train, y_train, X_test, y_test, target_index, scale) -> dict:
    """Persistence (repeat the last value) and a ridge model on the last input values of the target."""
    last = X_test[:, -1, target_index][:, None]
    persistence = float(np.mean((last - y_test) ** 2) / scale**2)
    a = np.c_[X_train[:, :, target_index], np.ones(len(X_train))].astype(np.float64)
    penalty = 1e-2 * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    coef = np.linalg.solve(a.T @ a + penalty, a.T @ y_train)
    linear = np.c_[X_test[:, :, target_index], np.ones(len(X_test))] @ coef
    return {"persistence_mse": persistence, "linear_mse": float(np.mean((linear - y_test) ** 2) / scale**2)}


def forecast_recipe(name, values, columns, target, input_length, horizon, stride, borders,
                    features=None) -> Recipe:
    """Windows over one multivariate series; ``borders``: train/validation/test row ranges in time
    order. Training windows lie inside the training rows; later parts' inputs may look back."""
    if target not in columns:
        raise ValueError(f"target column {target!r} not found; columns are {', '.join(columns)}")
    t_idx = columns.index(target)
    parts = {}
    for split, (start, stop) in borders.items():
        back = None if split == "train" else max(0, start - input_length)
        # Training windows lie inside the training rows; later parts' inputs may look back.
        needed = input_length + horizon if split == "train" else horizon
        if stop - start < needed:
            what = (f"input_length {input_length} + horizon {horizon}" if split == "train"
                    else f"the horizon's {horizon} target steps")
            raise ValueError(f"the {split} part (rows {start}..{stop - 1} of {len(values)}) is too short for one "
                             f"window: it needs {needed} rows ({what}); use a shorter input length or "
                             "horizon, or more rows")
        parts[split] = datasets.make_forecast_windows(values, input_length, horizon, t_idx, start, stop,
                                                      stride if split == "train" else 1, back)
    train_rows = values[borders["train"][0]:borders["train"][1], t_idx]
    scale = float(train_rows.std())
    unknown = [c for c in features or () if c not in columns]
    if unknown:
        raise ValueError(f"feature column(s) {', '.join(map(repr, unknown))} not found; columns are "
                         f"{', '.join(columns)}")
    feature_indices = [t_idx] if features is None else [columns.index(c) for c in features]
    # Baselines see every training window (stride 1), whatever stride the bag trains on.
    X_tr, y_tr, _ = datasets.make_forecast_windows(values, input_length, horizon, t_idx, *borders["train"])
    X_te, y_te, _ = parts["test"]
    return Recipe(
        name, "regression", list(columns), parts["train"], parts.get("validation")[:2] if "validation" in parts else None,
        parts["test"][:2],
        params={"hidden_size": 32, "n_members": 10, "level_free": True, "residual_feature": t_idx,
                "feature_indices": feature_indices, "patience": 5},
        target_names=[f"{target}+{h + 1}" for h in range(horizon)], target_scale=scale,
        baselines=_forecast_baselines(X_tr, y_tr, X_te, y_te, t_idx, scale))


def etth1(input_length: int = 96, horizon: int = 24, stride: int = 4, features=None) -> Recipe:
    """ETTh1: the last ``input_length`` hours of all 7 columns -> the next ``horizon`` values of OT.
    Informer split (12/4/4 months); the members read OT only (or ``features``), level-free, with
    residual targets."""
    values, columns, _ = datasets.load_etth1()
    return forecast_recipe("etth1", values, list(columns), "OT", input_length, horizon, stride,
                           datasets.ETTH1_SPLITS, features)


def csv_forecast(path, target, input_length, horizon, stride=1, features=None,
                 fractions=(0.7, 0.1, 0.2)) -> Recipe:
    """A user's time-series CSV, split in time order by ``fractions`` (train, validation, test)."""
    values, columns = datasets.load_csv_series(path)
    n = len(values)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    borders = {"train": (0, a), "validation": (a, b), "test": (b, n)}
    if fractions[1] == 0:
        borders.pop("validation")
    return forecast_recipe(str(path), values, list(columns), target, input_length, horizon, stride,
                           borders, features)


def _split_in_order(y, fractions, by_class: bool) -> dict[str, list[int]]:
    """Row indices of train/validation/test: the earliest rows train, the latest test (per class
    when ``by_class``, so every class is in every part it has enough rows for; >= 1 trains)."""
    groups = [np.flatnonzero(y == label) for label in dict.fromkeys(y.tolist())] if by_class else [np.arange(len(y))]
    parts = {"train": [], "validation": [], "test": []}
    for rows in groups:
        a = max(1, round(len(rows) * fractions[0]))
        b = max(a, round(len(rows) * (fractions[0] + fractions[1])))
        for part, chosen in zip(parts, (rows[:a], rows[a:b], rows[b:])):
            parts[part].extend(chosen.tolist())
    return {part: sorted(rows) for part, rows in parts.items()}


def _ordered_parts(name, X, y, fractions, by_class, extra=None):
    """(train, validation or None, test) tuples of (X, y[, extra]) split by ``_split_in_order``."""
    parts = _split_in_order(y, fractions, by_class)
    if not parts["test"]:
        raise ValueError(f"{name}: too few sequences ({len(X)}) to hold any out for testing")

    def take(part, with_extra=False):
        rows = parts[part]
        taken = ([X[i] for i in rows], y[rows])
        return taken + (extra[rows],) if with_extra and extra is not None else taken
    return take("train", True), take("validation") if parts["validation"] else None, take("test")


def csv_classification(path, sequence_column, label_column, features=None,
                       fractions=(0.7, 0.1, 0.2)) -> Recipe:
    """A user's CSV of labelled sequences (see ``datasets.load_csv_sequences``). Each class's
    sequences are split in file order by ``fractions``: the earliest go to training, the latest
    to test, so a file in time order never trains on what it tests, and every class appears in
    each part it has enough sequences for (a class needs >= 1 training sequence)."""
    X, y, names, _ = datasets.load_csv_sequences(path, sequence_column, label_column, features)
    if len(set(y.tolist())) < 2:
        raise ValueError(f"{path}: column {label_column!r} has one class only ({y[0]!r}); "
                         "classification needs at least 2")
    train, validation, test = _ordered_parts(path, X, y, fractions, by_class=True)
    return Recipe(str(path), "classification", names, train, validation, test,
                  params={"hidden_size": 32, "n_members": 10},
                  source_options={"sequence_column": sequence_column, "label_column": label_column,
                                  "features": names})


def npz_arrays(path, task=None, fractions=(0.7, 0.1, 0.2)) -> Recipe:
    """A user's arrays in an NPZ file (``numpy.savez``; no pickled objects):

    ``x`` (N, T, F) numbers, ``y`` (N,) class labels or (N,) / (N, K) regression targets, and
    optionally ``lengths`` (N,) valid steps per row (padded variable-length rows), ``spans``
    (N, 2) each row's [first, last + 1) time step (overlapping forecasting windows: the block
    bootstrap with purged out-of-bag rows), ``feature_names`` (F,), ``target_names`` (K,).
    ``task``: "classification" or "regression"; None infers it from ``y`` (integers, booleans
    and strings are labels, floats are targets). Rows split in order like the CSV sources: 70/10/20,
    per class for classification, so rows in time order never test on the past.
    """
    arrays = datasets.load_npz_arrays(path, required=("x", "y"),
                                      optional=("lengths", "spans", "feature_names", "target_names"))
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 3 or x.dtype.kind not in "biuf":
        raise ValueError(f"{path}: 'x' must be a numeric (rows, time, features) array, got {x.dtype} {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"{path}: 'y' has {len(y)} rows for {len(x)} rows of 'x'")
    if task is None:
        task = "regression" if y.dtype.kind == "f" else "classification"
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    lengths = arrays.get("lengths")
    if lengths is None:
        lengths = np.full(len(x), x.shape[1])
    if lengths.shape != (len(x),) or lengths.dtype.kind not in "iu" or (len(x) and not
                                                                        1 <= lengths.min() <= lengths.max() <= x.shape[1]):
        raise ValueError(f"{path}: 'lengths' must be {len(x)} integers in 1..{x.shape[1]}")
    X = [x[i, :n] for i, n in enumerate(lengths)]
    spans = arrays.get("spans")
    if spans is not None and (task != "regression" or spans.shape != (len(x), 2)):
        raise ValueError(f"{path}: 'spans' must be ({len(x)}, 2) and is for regression (forecasting windows)")
    names = [str(v) for v in arrays["feature_names"]] if "feature_names" in arrays else \
        [f"x{i}" for i in range(x.shape[2])]
    if len(names) != x.shape[2]:
        raise ValueError(f"{path}: 'feature_names' has {len(names)} names for {x.shape[2]} features")
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{path}: class labels 'y' must be 1-D, got shape {y.shape}")
        if len(set(y.tolist())) < 2:
            raise ValueError(f"{path}: 'y' has one class only ({y[0]!r}); classification needs at least 2")
    train, validation, test = _ordered_parts(path, X, y, fractions, by_class=task == "classification",
                                             extra=spans)
    targets = [str(v) for v in arrays["target_names"]] if "target_names" in arrays else None
    return Recipe(str(path), task, names, train, validation, test,
                  params={"hidden_size": 32, "n_members": 10}, target_names=targets,
                  source_options={"format": "npz", "task": task})


BUNDLED = {"japanese_vowels": japanese_vowels, "etth1": etth1}
