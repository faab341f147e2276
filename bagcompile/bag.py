"""The trained bag as one object: members, the input/target transforms, and its PyTorch forward.

``bag_forward`` is the PyTorch reference that every export is checked against; the compiler emits
the same arithmetic as ONNX nodes (same order of operations, so fp32 results agree to rounding).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .members import LSTMMember

TASKS = ("classification", "regression")
VOTES = ("soft", "hard")
NONFINITE_POLICIES = ("propagate", "drop")


@dataclass
class InputTransform:
    """Raw inputs -> what the LSTMs read.

    ``(x - mean) / scale`` per feature (training statistics), then, with ``level_free``, each row
    minus its own last valid (scaled) step (as in NLinear/RevIN: the network sees shapes, not
    levels), then only ``feature_indices`` are fed to the members.
    """

    mean: np.ndarray
    scale: np.ndarray
    level_free: bool = False
    feature_indices: tuple[int, ...] | None = None

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.scale.shape:
            raise ValueError("mean and scale must have one entry per feature")
        if not (np.all(np.isfinite(self.scale)) and np.all(self.scale > 0)):
            raise ValueError("input scale must be finite and > 0")
        if self.feature_indices is not None:
            self.feature_indices = tuple(int(i) for i in self.feature_indices)
            bad = [i for i in self.feature_indices if not 0 <= i < self.n_features]
            if bad or not self.feature_indices:
                raise ValueError(f"feature_indices {list(self.feature_indices)} must be non-empty "
                                 f"and within 0..{self.n_features - 1}")

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_member_inputs(self) -> int:
        return len(self.feature_indices) if self.feature_indices is not None else self.n_features


@dataclass
class TargetTransform:
    """Regression targets in raw units <-> what the heads predict.

    head = (y - reference_last - mean) / scale, where ``reference_last`` is the raw last valid
    value of input feature ``reference_feature`` (residual targets), or 0 when it is None.
    """

    mean: np.ndarray
    scale: np.ndarray
    reference_feature: int | None = None

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.scale.shape:
            raise ValueError("target mean and scale must have one entry per target")
        if not (np.all(np.isfinite(self.scale)) and np.all(self.scale > 0)):
            raise ValueError("target scale must be finite and > 0")


@dataclass
class Bag:
    task: str
    members: list[LSTMMember]
    input_transform: InputTransform
    feature_names: list[str]
    classes: list | None = None
    target_transform: TargetTransform | None = None
    target_names: list[str] | None = None
    member_weights: np.ndarray | None = None
    vote: str = "soft"
    nonfinite: str = "propagate"   # or "drop": leave a member out of rows where it gives NaN/Inf
    input_length: int | None = None
    scores: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not self.members:
            raise ValueError("a bag needs at least one member")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        if self.vote not in VOTES:
            raise ValueError(f"vote must be one of {VOTES}, got {self.vote!r}")
        if len(self.feature_names) != self.input_transform.n_features:
            raise ValueError("feature_names must name every input feature")
        outputs = self.n_classes if self.task == "classification" else self.n_targets
        for k, m in enumerate(self.members):
            if m.spec.input_size != self.input_transform.n_member_inputs:
                raise ValueError(f"member {k} reads {m.spec.input_size} features, the transform "
                                 f"gives {self.input_transform.n_member_inputs}")
            if m.spec.output_size != outputs:
                raise ValueError(f"member {k} has {m.spec.output_size} outputs, expected {outputs}")
        if self.member_weights is not None:
            self.member_weights = validate_member_weights(self.member_weights, len(self.members))

    @property
    def n_classes(self) -> int:
        if self.classes is None or len(self.classes) < 2:
            raise ValueError("classification needs at least 2 classes")
        return len(self.classes)

    @property
    def n_targets(self) -> int:
        if self.target_transform is None:
            raise ValueError("regression needs a target_transform")
        return int(self.target_transform.mean.shape[0])


def validate_member_weights(weights, n_members: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n_members:
        raise ValueError(f"member_weights has {w.shape[0]} entries for {n_members} members")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("member_weights must be finite, >= 0 and sum to more than 0")
    return (w / w.sum()).astype(np.float32)


def _gather_last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(x.shape[0]), lengths - 1]


def member_inputs(transform: InputTransform, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Raw padded (batch, time, features) -> the members' input, exactly as the graph computes it."""
    xs = (x - torch.from_numpy(transform.mean)) / torch.from_numpy(transform.scale)
    if transform.level_free:
        xs = xs - _gather_last(xs, lengths)[:, None, :]
    if transform.feature_indices is not None:
        xs = xs[:, :, list(transform.feature_indices)]
    return xs


def target_to_head(transform: TargetTransform, y: np.ndarray, reference_last: np.ndarray | None) -> np.ndarray:
    """Raw targets -> what the heads are trained to predict (inverse of the graph's de-scaling)."""
    y = np.asarray(y, dtype=np.float32)
    if transform.reference_feature is not None:
        y = y - reference_last[:, None]
    return (y - transform.mean) / transform.scale


@torch.no_grad()
def member_outputs(bag: Bag, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(members, batch, outputs): probabilities (classification) or raw-unit predictions."""
    xs = member_inputs(bag.input_transform, x, lengths)
    outs = torch.stack([m.eval()(xs, lengths) for m in bag.members])
    # A row with NaN/Inf in a valid step the members read gives NaN, as in the compiled graph
    # (onnxruntime's LSTM kernel would turn it into finite numbers, and an Inf can saturate
    # PyTorch's gates into finite ones: neither means anything).
    valid = torch.arange(xs.shape[1])[None, :, None] < lengths.reshape(-1, 1, 1)
    outs = outs + (torch.where(valid, xs, torch.zeros(())) * 0).sum((1, 2))[None, :, None]
    if bag.task == "classification":
        return torch.softmax(outs, dim=-1)
    t = bag.target_transform
    outs = outs * torch.from_numpy(t.scale) + torch.from_numpy(t.mean)
    if t.reference_feature is not None:
        outs = outs + _gather_last(x, lengths)[:, t.reference_feature][None, :, None]
    return outs


def _combiner(bag: Bag, outs: torch.Tensor):
    """Mean over members (dim 0) per the bag's weights and non-finite policy; see the compiler."""
    w = None if bag.member_weights is None else torch.from_numpy(bag.member_weights)[:, None, None]
    if bag.nonfinite == "drop":
        if w is None:
            w = torch.full((outs.shape[0], 1, 1), 1.0 / outs.shape[0])
        kept = torch.isfinite(outs).all(-1, keepdim=True)
        w = w * kept
        total = w.sum(0)
        return lambda v: (torch.where(kept, v, torch.zeros(())) * w).sum(0) / total
    if w is None:
        return lambda v: v.mean(0)
    return lambda v: (v * w).sum(0)


@torch.no_grad()
def bag_forward(bag: Bag, x, lengths) -> dict[str, np.ndarray]:
    """The PyTorch ensemble: the same outputs, names and meaning as the compiled graph."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
    outs = member_outputs(bag, x, lengths)
    combine = _combiner(bag, outs)
    mean = combine(outs)
    spread = torch.sqrt(combine((outs - mean) ** 2))
    if bag.task == "classification":
        if bag.vote == "hard":
            mean = combine(torch.nn.functional.one_hot(outs.argmax(-1), outs.shape[-1]).float())
        return {"probabilities": mean.numpy(), "label": mean.argmax(-1).numpy()}
    return {"prediction": mean.numpy(), "std": spread.numpy()}
