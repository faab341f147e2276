"""Train one member on its bootstrap sample, early-stopping on its out-of-bag loss."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .members import LSTMMember, MemberSpec


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 8           # epochs without out-of-bag improvement before stopping
    lr_patience: int = 3        # epochs without improvement before the learning rate halves
    clip_grad_norm: float = 1.0

    def __post_init__(self):
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        # A negative clip norm flips every gradient (training ascends the loss): refuse it.
        if not (np.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0):
            raise ValueError(f"clip_grad_norm must be >= 0 (0: no clipping), got {self.clip_grad_norm}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemberData:
    """Everything members train on, prepared once for the whole bag (already transformed)."""

    x: torch.Tensor        # (N, T, F) float32, members' input space, padded
    lengths: torch.Tensor  # (N,) int64
    targets: torch.Tensor  # (N,) int64 class indices, or (N, K) float32 head targets
    classification: bool


def _batch_loss(model: LSTMMember, data: MemberData, idx: torch.Tensor, loss_fn) -> torch.Tensor:
    lengths = data.lengths[idx]
    t_max = int(lengths.max())  # trim padding no row in this batch needs
    return loss_fn(model(data.x[idx, :t_max], lengths), data.targets[idx])


@torch.no_grad()
def _mean_loss(model: LSTMMember, data: MemberData, idx: np.ndarray, loss_fn, batch: int = 1024) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(idx), batch):
        part = torch.from_numpy(idx[start:start + batch])
        total += float(_batch_loss(model, data, part, loss_fn)) * len(part)
    return total / max(1, len(idx))


def train_member(spec: MemberSpec, data: MemberData, in_bag: np.ndarray, early_stop: np.ndarray,
                 seed: int, config: TrainConfig,
                 on_epoch: Callable[[int, float], None] | None = None) -> tuple[LSTMMember, dict]:
    """Train one member. ``early_stop``: indices whose loss picks the best epoch (out-of-bag);
    when empty, the member trains for ``max_epochs`` and keeps the last weights."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LSTMMember(spec)
    loss_fn = nn.CrossEntropyLoss() if data.classification else nn.MSELoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=config.lr_patience)
    history = {"train_loss": [], "oob_loss": []}
    best_loss, best_state, best_epoch, stale = np.inf, None, 0, 0
    for epoch in range(config.max_epochs):
        model.train()
        order = rng.permutation(in_bag)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = torch.from_numpy(order[start:start + config.batch_size])
            optimiser.zero_grad(set_to_none=True)
            loss = _batch_loss(model, data, idx, loss_fn)
            loss.backward()
            if config.clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimiser.step()
            total += loss.item() * len(idx)
        history["train_loss"].append(total / len(order))
        if len(early_stop):
            oob = _mean_loss(model, data, early_stop, loss_fn)
            history["oob_loss"].append(oob)
            scheduler.step(oob)
            if oob < best_loss - 1e-7:
                best_loss, best_state, best_epoch, stale = oob, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                stale += 1
        if on_epoch is not None:
            on_epoch(epoch, history["oob_loss"][-1] if history["oob_loss"] else history["train_loss"][-1])
        if len(early_stop) and stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history["best_epoch"] = best_epoch if best_state is not None else config.max_epochs - 1
    return model.eval(), history
