"""scikit-learn-style bagged LSTM estimators: ``fit``, ``predict``, ``predict_proba``, ``export_onnx``.

``__init__`` only stores arguments; every check happens in ``fit``. Learned state ends in ``_``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from bagcompile_runtime.inputs import pad_sequences

from .bag import (
    Bag,
    InputTransform,
    TargetTransform,
    bag_forward,
    member_inputs,
    member_outputs,
    target_to_head,
)
from .bootstrap import BootstrapDraw, block_bootstrap, sequence_bootstrap
from .members import MemberSpec
from .oob import oob_member_weights
from .member_pool import train_members
from .persistence import load_run, save_run
from .training import MemberData, TrainConfig

ProgressCallback = Callable[[str, int, int], None]  # (message, done, total)


class TrainingDataError(ValueError):
    """Training data that cannot make a sound bag; raised before any training starts."""


def _n_features_of(X) -> int:
    try:
        first = X[0] if isinstance(X, (list, tuple)) else X
        shape = np.shape(first)
        return int(shape[-1]) if isinstance(X, (list, tuple)) else int(np.shape(X)[2])
    except (IndexError, TypeError):
        raise TrainingDataError(f"expected X as a list of (time, features) arrays or a (batch, time, "
                                f"features) array, got shape {np.shape(X)}") from None


def as_padded(X, n_features: int | None = None, lengths=None,
              allow_nonfinite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validated padded float32 batch and int64 lengths (the same rules as the runtime)."""
    if n_features is None:
        n_features = _n_features_of(X)
    try:
        return pad_sequences(X, n_features, lengths=lengths, allow_nonfinite=allow_nonfinite)
    except ValueError as error:
        raise TrainingDataError(str(error)) from None


def _fit_scaler(x: np.ndarray, lengths: np.ndarray) -> InputTransform:
    mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
    frames = x[mask].astype(np.float64)
    scale = frames.std(axis=0)
    scale[scale < 1e-8] = 1.0  # constant features: leave them unscaled rather than divide by 0
    return InputTransform(frames.mean(axis=0), scale)


def with_aggregation(bag: Bag, member_weights=None, nonfinite: str = "propagate", oob_member_scores=None) -> Bag:
    """A copy of ``bag`` sharing its members, with the given weights and non-finite policy."""
    if isinstance(member_weights, str):
        if member_weights == "uniform":
            member_weights = None
        elif member_weights == "oob":
            if not oob_member_scores:
                raise ValueError("member_weights='oob' needs the members' out-of-bag scores; this run has none")
            n_classes = len(bag.classes) if bag.task == "classification" else None
            member_weights = oob_member_weights(bag.task, oob_member_scores, n_classes)
        else:
            raise ValueError(f"member_weights must be 'uniform', 'oob' or numbers, got {member_weights!r}")
    return dataclasses.replace(bag, member_weights=member_weights, nonfinite=nonfinite)


class _BaggedLSTM:
    _task: str
    _extra_params: tuple = ()

    def __init__(self, n_members: int = 10, hidden_size: int = 32, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, max_epochs: int = 60,
                 batch_size: int = 32, learning_rate: float = 3e-3, weight_decay: float = 0.0,
                 patience: int = 8, clip_grad_norm: float = 1.0, max_samples: float = 1.0,
                 bootstrap: str = "auto", block_length: int | None = None, stratify: bool = False,
                 level_free: bool = False, feature_indices=None, random_state: int = 0, n_jobs: int = 1,
                 backend: str = "local", ray_address: str | None = None):
        self.n_members = n_members
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.block_length = block_length
        self.stratify = stratify
        self.level_free = level_free
        self.feature_indices = feature_indices
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.backend = backend
        self.ray_address = ray_address

    def get_params(self, deep: bool = True) -> dict:
        import inspect

        names = [n for n in inspect.signature(_BaggedLSTM.__init__).parameters if n != "self"]
        return {name: getattr(self, name) for name in [*names, *self._extra_params]}

    def set_params(self, **params):
        """Set constructor parameters (checked at fit time, as in scikit-learn); returns self."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(sorted(valid))}")
            setattr(self, name, value)
        return self

    # --- fitting -------------------------------------------------------------------------------
    def _check_params(self):
        if not isinstance(self.n_members, int) or self.n_members < 1:
            raise ValueError(f"n_members must be a positive integer, got {self.n_members!r}")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ValueError(f"n_jobs must be a positive integer, got {self.n_jobs!r}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        if self.bootstrap not in ("auto", "sequences", "blocks", "none"):
            raise ValueError(f"bootstrap must be 'auto', 'sequences', 'blocks' or 'none', got {self.bootstrap!r}")
        if not isinstance(self.bidirectional, (bool, np.bool_)):  # bool("no") would be True
            raise ValueError(f"bidirectional must be True or False, got {self.bidirectional!r}")
        if self.block_length is not None and (isinstance(self.block_length, bool) or
                                              not isinstance(self.block_length, (int, np.integer)) or
                                              self.block_length < 1):
            raise ValueError(f"block_length must be a positive integer (time steps) or None, got {self.block_length!r}")
        if self.dropout and self.num_layers == 1:
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1 (it acts between "
                          "LSTM layers); training without it", UserWarning, stacklevel=4)

    def _draws(self, n: int, classes_idx, time_spans, seeds) -> list[BootstrapDraw]:
        mode = self.bootstrap
        if mode == "auto":
            mode = "blocks" if time_spans is not None else "sequences"
        if mode == "blocks" and time_spans is None:
            raise TrainingDataError("bootstrap='blocks' needs time_spans (each window's [first, last+1) step)")
        draws = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            if mode == "none":
                draws.append(BootstrapDraw(np.arange(n, dtype=np.int64), np.empty(0, np.int64)))
            elif mode == "blocks":
                spans = np.asarray(time_spans, dtype=np.int64)
                span = int(np.max(spans[:, 1] - spans[:, 0]))
                draws.append(block_bootstrap(spans, self.block_length or 4 * span, rng, self.max_samples))
            else:
                strata = classes_idx if (self.stratify and classes_idx is not None) else None
                draws.append(sequence_bootstrap(n, rng, self.max_samples, strata))
        return draws

    def _fingerprint(self, x, lengths, targets) -> str:
        digest = hashlib.sha256()
        for array in (x, lengths, targets):
            digest.update(np.ascontiguousarray(array).tobytes())
        # How members are scheduled does not change what is trained, nor does the bag's size:
        # member k's seed is the k-th draw whatever n_members is, so a bag can grow (or shrink)
        # keeping the members it has (the checkpoint also records each member's seed).
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("n_jobs", "backend", "ray_address", "n_members")}
        digest.update(json.dumps(params, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]

    def _fit_bag(self, X, targets_raw, lengths, time_spans, feature_names, checkpoint_dir,
                 progress: ProgressCallback | None):
        self._check_params()
        # Non-finite values are reported here, with training advice, rather than by the runtime's
        # check (whose message suggests allow_nonfinite=True, which fit does not offer).
        x, lengths = as_padded(X, lengths=lengths, allow_nonfinite=True)
        if not np.all(np.isfinite(x)):  # padding is zeros: only valid steps can fail
            row = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
            raise TrainingDataError(f"X contains NaN or Inf (row {row}); clean or impute the data "
                                    "before training")
        n, t_max, f = x.shape
        if n < 2:
            raise TrainingDataError(f"need at least 2 training sequences, got {n}")
        if time_spans is not None and np.shape(time_spans) != (n, 2):
            raise TrainingDataError(f"time_spans must be ({n}, 2): each window's [first, last + 1) time "
                                    f"step; got shape {np.shape(time_spans)}")
        self.n_features_in_ = f
        self.feature_names_ = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(f)]
        if len(self.feature_names_) != f:
            raise TrainingDataError(f"feature_names has {len(self.feature_names_)} names for {f} features")
        transform = _fit_scaler(x, lengths)
        transform = InputTransform(transform.mean, transform.scale, self.level_free, self.feature_indices)
        head_targets, classes_idx, output_size = self._prepare_targets(targets_raw, x, lengths, n)
        if self.n_members > n:
            raise TrainingDataError(f"{self.n_members} members but only {n} training sequences; "
                                    "use fewer members or more data")
        self.input_transform_ = transform
        self.input_length_ = int(t_max) if np.all(lengths == t_max) else None

        seeds = np.random.default_rng(self.random_state).integers(0, 2**31 - 1, size=self.n_members)
        self.member_seeds_ = [int(s) for s in seeds]
        self.bootstrap_ = self._draws(n, classes_idx, time_spans, self.member_seeds_)
        data = MemberData(member_inputs(transform, torch.from_numpy(x), torch.from_numpy(lengths)).contiguous(),
                          torch.from_numpy(lengths), head_targets, self._task == "classification")
        spec = MemberSpec(transform.n_member_inputs, self.hidden_size, self.num_layers, bool(self.bidirectional),
                          float(self.dropout) if self.num_layers > 1 else 0.0, output_size)
        config = TrainConfig(self.max_epochs, self.batch_size, self.learning_rate, self.weight_decay,
                             self.patience, clip_grad_norm=self.clip_grad_norm)
        fingerprint = self._fingerprint(x, lengths, head_targets.numpy())
        members, histories = train_members(
            spec, data, config, self.member_seeds_, self.bootstrap_, n_jobs=self.n_jobs,
            threads_per_member=1 if (self.n_jobs > 1 or self.backend == "ray") else None,
            checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, progress=progress,
            backend=self.backend, ray_address=self.ray_address)
        self.histories_ = histories
        self.bag_ = self._make_bag(members)
        self._fit_sample_ = (x[: min(n, 256)], lengths[: min(n, 256)])
        self._compute_oob(x, lengths, targets_raw)
        return self

    def _compute_oob(self, x, lengths, targets_raw):
        outs = member_outputs(self.bag_, torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
        total = np.zeros(outs.shape[1:], dtype=np.float64)
        count = np.zeros(outs.shape[1], dtype=np.int64)
        for k, draw in enumerate(self.bootstrap_):
            total[draw.out_of_bag] += outs[k, draw.out_of_bag]
            count[draw.out_of_bag] += 1
        covered = count > 0
        if not covered.all():
            warnings.warn(f"{int((~covered).sum())} of {len(count)} training samples are in every member's "
                          "bag; the out-of-bag score ignores them", RuntimeWarning, stacklevel=4)
        self.oob_member_scores_ = []  # each member on its own out-of-bag samples (accuracy / MSE)
        for k, draw in enumerate(self.bootstrap_):
            mask = np.zeros(len(count), dtype=bool)
            mask[draw.out_of_bag] = True
            self.oob_member_scores_.append(
                self._oob_score(outs[k, mask], targets_raw, mask) if mask.any() else float("nan"))
        self.oob_prediction_ = np.where(covered[:, None], total / np.maximum(count, 1)[:, None], np.nan)
        self.oob_score_ = self._oob_score(self.oob_prediction_[covered], targets_raw, covered) if covered.any() else float("nan")

    # --- prediction and export ---------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "bag_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _forward(self, X, lengths=None) -> dict:
        self._check_fitted()
        x, lengths = as_padded(X, self.n_features_in_, lengths)
        return bag_forward(self.bag_, x, lengths)

    def export_onnx(self, path, X=None, lengths=None, *, member_weights=None, nonfinite: str = "propagate",
                    **options):
        """Compile to one ONNX file, verified against this PyTorch bag before it is written.

        ``X``: real inputs to verify on (default: a sample of the training data).
        ``member_weights``: None (plain mean), ``"oob"`` (from each member's out-of-bag score, see
        :func:`bagcompile.oob.oob_member_weights`) or one non-negative number per member.
        ``nonfinite``: ``"propagate"`` or ``"drop"`` (leave out a member's NaN/Inf rows).
        Other ``options`` are those of :func:`bagcompile.compiler.export_bag` (``opset``, ``atol``,
        ``member_outputs``).
        """
        from .compiler import export_bag

        self._check_fitted()
        x, lengths = self._fit_sample_ if X is None else as_padded(X, self.n_features_in_, lengths)
        bag = with_aggregation(self.bag_, member_weights, nonfinite, self.oob_member_scores_)
        return export_bag(bag, path, verify_x=x, verify_lengths=lengths, **options)

    def save(self, run_dir) -> Path:
        self._check_fitted()
        record = {"params": self.get_params(), "member_seeds": self.member_seeds_, "histories": self.histories_,
                  "oob_score": self.oob_score_, "oob_member_scores": self.oob_member_scores_,
                  "estimator": type(self).__name__}
        if hasattr(self, "_y_1d"):  # regressor fitted on (N,) targets predicts (N,), also after load
            record["target_1d"] = bool(self._y_1d)
        return save_run(run_dir, self.bag_, self.bootstrap_, record)

    @classmethod
    def load(cls, run_dir):
        bag, draws, record = load_run(run_dir)
        if record.get("estimator") != cls.__name__:
            raise ValueError(f"{run_dir} holds a {record.get('estimator')}, not a {cls.__name__}")
        self = cls(**record["params"])
        self.bag_, self.bootstrap_ = bag, draws
        self.member_seeds_, self.histories_ = record["member_seeds"], record["histories"]
        self.oob_score_ = record["oob_score"]
        self.oob_member_scores_ = record.get("oob_member_scores")
        self.n_features_in_ = bag.input_transform.n_features
        self.feature_names_ = bag.feature_names
        self.input_transform_ = bag.input_transform
        self.input_length_ = bag.input_length
        rng = np.random.default_rng(0)
        t = bag.input_length or 16
        sample = rng.normal(size=(16, t, self.n_features_in_)) * bag.input_transform.scale + bag.input_transform.mean
        self._fit_sample_ = (sample.astype(np.float32), np.full(16, t, np.int64))
        cls._restore(self, bag)
        if "target_1d" in record:
            self._y_1d = bool(record["target_1d"])
        return self


class BaggedLSTMClassifier(_BaggedLSTM):
    """Bag of LSTM classifiers over whole sequences; soft vote (mean of member probabilities)."""

    _task = "classification"

    def fit(self, X, y, *, lengths=None, feature_names=None, checkpoint_dir=None,
            progress: ProgressCallback | None = None):
        """``X``: list of (T_i, F) arrays or an (N, T, F) array; ``y``: (N,) labels of any type."""
        return self._fit_bag(X, y, lengths, None, feature_names, checkpoint_dir, progress)

    def _prepare_targets(self, y, x, lengths, n):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise TrainingDataError(f"expected y of shape ({n},), got {y.shape}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise TrainingDataError("y contains NaN or Inf labels; every sequence needs a class")
        try:
            self.classes_, idx = np.unique(y, return_inverse=True)
        except TypeError:  # e.g. None among the labels, or numbers mixed with strings
            kinds = sorted({type(v).__name__ for v in y.tolist()})
            raise TrainingDataError(f"y mixes label types ({', '.join(kinds)}); labels must be all "
                                    "numbers or all strings") from None
        if len(self.classes_) < 2:
            raise TrainingDataError(f"y has one class only ({self.classes_[0]!r}); classification needs at least 2")
        self._y_idx = idx
        return torch.from_numpy(idx.astype(np.int64)), idx, len(self.classes_)

    def _make_bag(self, members):
        return Bag("classification", members, self.input_transform_, self.feature_names_,
                   classes=list(self.classes_), input_length=self.input_length_)

    def _oob_score(self, oob_proba, y, covered):
        return float(np.mean(oob_proba.argmax(1) == self._y_idx[covered]))

    @staticmethod
    def _restore(self, bag):
        self.classes_ = np.asarray(bag.classes)

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        return self._forward(X, lengths)["probabilities"]

    def predict(self, X, lengths=None) -> np.ndarray:
        labels = self._forward(X, lengths)["label"]  # first: checks fitted before classes_ is read
        return self.classes_[labels]

    def member_predictions(self, X, lengths=None) -> np.ndarray:
        """(members, N) labels predicted by each member alone."""
        self._check_fitted()
        x, lengths = as_padded(X, self.n_features_in_, lengths)
        probs = member_outputs(self.bag_, torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
        return self.classes_[probs.argmax(-1)]

    def score(self, X, y, lengths=None) -> float:
        return float(np.mean(self.predict(X, lengths) == np.asarray(y)))


class BaggedLSTMRegressor(_BaggedLSTM):
    """Bag of LSTM regressors/forecasters; the mean of the members, with their spread.

    ``residual_feature``: predict each target as a change from the last observed value of this
    input feature (index), which lets a forecaster follow levels it never saw in training.
    ``time_spans`` in ``fit``: (N, 2) [first, last+1) time steps of overlapping windows; with it,
    bootstrap draws whole time blocks and out-of-bag windows are purged of any overlap.
    """

    _task = "regression"
    _extra_params = ("residual_feature",)

    def __init__(self, n_members: int = 10, *, residual_feature: int | None = None, **params):
        super().__init__(n_members, **params)
        self.residual_feature = residual_feature

    def fit(self, X, y, *, lengths=None, time_spans=None, feature_names=None, target_names=None,
            checkpoint_dir=None, progress: ProgressCallback | None = None):
        """``X``: list of (T_i, F) arrays or an (N, T, F) array; ``y``: (N,) or (N, K) targets."""
        self._target_names = target_names
        return self._fit_bag(X, y, lengths, time_spans, feature_names, checkpoint_dir, progress)

    def _prepare_targets(self, y, x, lengths, n):
        try:
            y = np.asarray(y, dtype=np.float32)
        except (TypeError, ValueError):
            raise TrainingDataError("regression targets y must be numbers (for class labels use "
                                    "BaggedLSTMClassifier)") from None
        if y.ndim not in (1, 2) or len(y) != n:  # before any reshape: (2N,) must not become (N, 2)
            raise TrainingDataError(f"expected y of shape ({n},) or ({n}, targets), got {y.shape}")
        self._y_1d = y.ndim == 1
        y = y.reshape(n, -1)
        if not np.all(np.isfinite(y)):
            raise TrainingDataError("y contains NaN or Inf; clean the targets before training")
        ref = self.residual_feature
        reference_last = None
        if ref is not None:
            if not 0 <= int(ref) < x.shape[2]:
                raise TrainingDataError(f"residual_feature={ref} is not a feature index (0..{x.shape[2] - 1})")
            reference_last = x[np.arange(n), lengths - 1, int(ref)]
            residual = y - reference_last[:, None]
        else:
            residual = y
        scale = residual.std(axis=0).astype(np.float64)
        scale[scale < 1e-8] = 1.0
        self.target_transform_ = TargetTransform(residual.mean(axis=0), scale,
                                                 None if ref is None else int(ref))
        names = self._target_names
        self.target_names_ = list(names) if names is not None else [f"y{i}" for i in range(y.shape[1])]
        if len(self.target_names_) != y.shape[1]:
            raise TrainingDataError(f"target_names has {len(self.target_names_)} names for {y.shape[1]} targets")
        head = target_to_head(self.target_transform_, y, reference_last)
        return torch.from_numpy(np.ascontiguousarray(head, dtype=np.float32)), None, y.shape[1]

    def _make_bag(self, members):
        return Bag("regression", members, self.input_transform_, self.feature_names_,
                   target_transform=self.target_transform_, target_names=self.target_names_,
                   input_length=self.input_length_)

    def _oob_score(self, oob_pred, y, covered):
        y = np.asarray(y, dtype=np.float64).reshape(len(covered), -1)[covered]
        return float(np.mean((oob_pred - y) ** 2))

    @staticmethod
    def _restore(self, bag):
        self.target_transform_ = bag.target_transform
        self.target_names_ = bag.target_names
        self._y_1d = False

    def predict(self, X, lengths=None, return_std: bool = False):
        out = self._forward(X, lengths)
        pred, std = out["prediction"], out["std"]
        if self._y_1d:
            pred, std = pred[:, 0], std[:, 0]
        return (pred, std) if return_std else pred

    def score(self, X, y, lengths=None) -> float:
        """Coefficient of determination R² of the bag's prediction (scikit-learn's convention:
        1 is perfect, 0 is predicting the mean; averaged uniformly over targets)."""
        pred = np.asarray(self.predict(X, lengths), dtype=np.float64)
        pred = pred.reshape(pred.shape[0], -1)
        y = np.asarray(y, dtype=np.float64).reshape(pred.shape)
        residual = ((y - pred) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant target: R² is 1 or 0
            r2 = np.where(total > 0, 1 - residual / total, np.where(residual > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def member_predictions(self, X, lengths=None) -> np.ndarray:
        """(members, N, targets) raw-unit predictions of each member alone."""
        self._check_fitted()
        x, lengths = as_padded(X, self.n_features_in_, lengths)
        return member_outputs(self.bag_, torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
