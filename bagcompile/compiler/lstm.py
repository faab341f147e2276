"""One member's LSTM stack as native ONNX ``LSTM`` nodes (one per layer and direction).

The form is "gather", chosen over ``sequence_lens`` (see compiler/README in the docs):
- every LSTM node runs forward over the whole padded batch, time-major (``layout=0``: onnxruntime
  refuses ``layout=1``);
- the forward direction's result at each row's last valid step is gathered at ``length - 1``;
- the backward direction runs forward over each row reversed *within its own length* (padding
  stays in place), so its state after the row's last valid step is the backward final state.
Padding never flows into a valid step, so the graph is exact in onnxruntime and in
``onnx.reference`` (which ignores ``sequence_lens``), and needs nothing beyond plain ``LSTM``.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .recorder import GraphRecorder

# PyTorch stacks gates as (i, f, g, o); ONNX expects (i, o, f, c).
_GATE_ORDER = (0, 3, 1, 2)


def _reorder_gates(w: np.ndarray, hidden: int) -> np.ndarray:
    return np.concatenate([w[k * hidden:(k + 1) * hidden] for k in _GATE_ORDER], axis=0)


def onnx_lstm_weights(lstm: nn.LSTM, layer: int, reverse: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W (1, 4H, I), R (1, 4H, H), B (1, 8H) for one layer and direction, in ONNX gate order."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    h = lstm.hidden_size
    get = lambda name: getattr(lstm, name + suffix).detach().cpu().numpy().astype(np.float32)
    w = _reorder_gates(get("weight_ih"), h)[None]
    r = _reorder_gates(get("weight_hh"), h)[None]
    b = np.concatenate([_reorder_gates(get("bias_ih"), h), _reorder_gates(get("bias_hh"), h)])[None]
    return w, r, b


class SequenceIndexer:
    """Index tensors shared by every member: built once from ``lengths``, used by many gathers."""

    def __init__(self, rec: GraphRecorder, x_time_major: str, lengths: str, need_reverse: bool):
        self.rec = rec
        with rec.scope("lengths"):
            shape = rec.op("Shape", [x_time_major])
            time = rec.op("Gather", [shape, rec.constant(0)], axis=0, label="time")
            batch = rec.op("Gather", [shape, rec.constant(1)], axis=0, label="batch")
            self.time_batch_shape = rec.op("Slice", [shape, rec.constant([0]), rec.constant([2])],
                                           label="time_batch")
            batch_range = rec.op("Range", [rec.constant(0), batch, rec.constant(1)], label="batch_range")
            last_step = rec.op("Sub", [lengths, rec.constant(1)], label="last_step")
            # Row-major flat index of (t, b) in a (time*batch, H) view is t*batch + b.
            self.last_flat = rec.op("Add", [rec.op("Mul", [last_step, batch]), batch_range],
                                    label="last_flat")
            self.reverse_flat = None
            if need_reverse:
                t_col = rec.unsqueeze(rec.op("Range", [rec.constant(0), time, rec.constant(1)]), 1)
                len_row = rec.unsqueeze(lengths, 0)
                inside = rec.op("Less", [t_col, len_row], label="inside")
                mirrored = rec.op("Sub", [rec.op("Sub", [len_row, rec.constant(1)]), t_col], label="mirrored")
                source = rec.op("Where", [inside, mirrored, t_col], label="source_step")
                flat = rec.op("Add", [rec.op("Mul", [source, batch]), batch_range])
                self.reverse_flat = rec.op("Reshape", [flat, rec.constant([-1])], label="reverse_flat")

    def last_valid(self, y: str, width: int, label: str = "last_valid") -> str:
        """(time, batch, width) -> (batch, width) at each row's last valid step."""
        flat = self.rec.op("Reshape", [y, self.rec.constant([-1, width])])
        return self.rec.op("Gather", [flat, self.last_flat], axis=0, label=label)

    def reverse_rows(self, y: str, width: int, label: str = "reversed") -> str:
        """Reverse each row within its own length; padded steps stay where they are."""
        flat = self.rec.op("Reshape", [y, self.rec.constant([-1, width])])
        gathered = self.rec.op("Gather", [flat, self.reverse_flat], axis=0)
        shape = self.rec.op("Concat", [self.time_batch_shape, self.rec.constant([width])], axis=0)
        return self.rec.op("Reshape", [gathered, shape], label=label)


def _lstm_node(rec: GraphRecorder, x: str, lstm: nn.LSTM, layer: int, reverse: bool, last: bool) -> str:
    """One ONNX LSTM over (time, batch, in) -> Y as (time, batch, hidden); for the last layer the
    raw (time, 1, batch, hidden) Y, which ``last_valid`` flattens directly (one node fewer)."""
    direction = "bw" if reverse else "fw"
    w, r, b = onnx_lstm_weights(lstm, layer, reverse)
    with rec.scope(direction):
        inputs = [x, rec.weight("W", w), rec.weight("R", r), rec.weight("B", b)]
        # No empty optional inputs ("" names): some float16 converters crash on them.
        y = rec.op("LSTM", inputs, hidden_size=lstm.hidden_size, direction="forward", label="LSTM")
        if last:
            return y
        return rec.op("Reshape", [y, rec.constant([0, -1, lstm.hidden_size])], label="Y")


def emit_lstm_stack(rec: GraphRecorder, x: str, lstm: nn.LSTM, index: SequenceIndexer) -> str:
    """Stack of layers over time-major ``x``; returns the head's input (batch, directions*hidden)."""
    h = lstm.hidden_size
    for layer in range(lstm.num_layers):
        last_layer = layer == lstm.num_layers - 1
        with rec.scope(f"l{layer}"):
            y_fwd = _lstm_node(rec, x, lstm, layer, False, last_layer)
            if not lstm.bidirectional:
                if last_layer:
                    return index.last_valid(y_fwd, h, label="final_state")
                x = y_fwd
                continue
            in_width = lstm.input_size if layer == 0 else 2 * h
            y_rev = _lstm_node(rec, index.reverse_rows(x, in_width, label="input_reversed"), lstm, layer, True, last_layer)
            if last_layer:
                # Reversed time: the row's last valid step holds the backward state after step 0.
                states = [index.last_valid(y_fwd, h, "final_forward"),
                          index.last_valid(y_rev, h, "final_backward")]
                return rec.op("Concat", states, axis=1, label="final_state")
            y_bwd = index.reverse_rows(y_rev, h, label="backward_Y")
            x = rec.op("Concat", [y_fwd, y_bwd], axis=2, label="Y")
    raise AssertionError("unreachable")
