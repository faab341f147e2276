"""One bag member: an ``nn.LSTM`` stack and a linear head on each sequence's last valid state."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


@dataclass(frozen=True)
class MemberSpec:
    """Architecture of one member; everything the compiler needs besides the weights."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    output_size: int = 1

    def __post_init__(self):
        for name in ("input_size", "hidden_size", "num_layers", "output_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict:
        return asdict(self)


class LSTMMember(nn.Module):
    """LSTM stack + Linear head.

    The head reads the last layer's final states: the forward direction at each row's last *valid*
    step (``length - 1``) and, when bidirectional, the backward direction after it has read the
    whole valid row (its state at step 0). Padding never reaches the head.
    """

    def __init__(self, spec: MemberSpec):
        super().__init__()
        self.spec = spec
        self.lstm = nn.LSTM(
            spec.input_size,
            spec.hidden_size,
            num_layers=spec.num_layers,
            bidirectional=spec.bidirectional,
            dropout=spec.dropout if spec.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(spec.hidden_size * spec.num_directions, spec.output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (batch, time, features), padded; ``lengths``: (batch,) valid steps, or None for full rows."""
        if not self.spec.bidirectional:
            # A forward LSTM's output at a row's last valid step never sees the padding after it:
            # run the padded batch and gather that step. Same numbers as packing, 2-3x faster
            # training on ragged data (packing sorts, splits and reassembles every batch).
            out, _ = self.lstm(x)
            if lengths is None:
                return self.head(out[:, -1])
            return self.head(out[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1])
        if lengths is not None and bool((lengths != x.shape[1]).any()):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)
        else:
            _, (h_n, _) = self.lstm(x)
        # h_n: (layers * directions, batch, hidden); the last layer's directions come last.
        last = h_n[-self.spec.num_directions:]
        return self.head(torch.cat(list(last), dim=-1))


def check_lstm_supported(lstm: nn.LSTM) -> None:
    """Refuse LSTM features the compiler does not translate, instead of exporting wrong numbers."""
    if getattr(lstm, "proj_size", 0):
        raise ValueError("LSTM proj_size is not supported by the compiler (got proj_size="
                         f"{lstm.proj_size}); use proj_size=0")
    if not lstm.bias:
        raise ValueError("LSTM without bias is not supported; use bias=True")
    if not lstm.batch_first:
        raise ValueError("members must use batch_first=True")
