"""One member's LSTM stack as native ONNX ``LSTM`` nodes (one per layer and direction).

The form is "gather", chosen over ``sequence_lens`` (see compiler/README in the docs):
- every LSTM node runs forward over the whole padded batch, time-major (``layout=0``: onnxruntime
  refuses ``layout=1``);
- the forward direction's result at each row's last valid step is gathered at ``length - 1``;
- the backward direction runs forward over each row reversed *within its own length* (padding
  stays in place), so its state after the row's last valid step is the backward final state.
Padding never flows into a valid step, so the graph is exact in onnxruntime and in
``onnx.reference`` (which ignores ``sequence_lens``), and needs nothing beyond plain ``LSTM``.

The alternative form "sequence_lens" (``compile_bag(..., form="sequence_lens")``) emits ONE ``LSTM``
node per layer (``direction="forward"`` or ``"bidirectional"``) fed the lengths as ``sequence_lens``
(int32, cast once per graph); the head reads ``Y_h`` of the last layer. It relies on the runtime
honouring ``sequence_lens``: exact in onnxruntime (``Y_h`` is each row's last valid state, ``Y`` is
zero past each row's length), wrong in ``onnx.reference``, which ignores ``sequence_lens``.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from torch import nn

from .recorder import GraphRecorder

GRAPH_FORMS = ("gather", "sequence_lens")

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

    def __init__(self, rec: GraphRecorder, x_time_major: str, lengths: str, need_reverse: bool,
                 form: str = "gather"):
        if form not in GRAPH_FORMS:
            raise ValueError(f"unknown graph form {form!r} (expected one of {GRAPH_FORMS})")
        self.rec, self.form = rec, form
        self._args = (x_time_major, lengths, need_reverse)
        self.last_flat = self.reverse_flat = self.lengths_int32 = None
        self._time = self._inside = None
        if form == "gather":
            self._build()
        else:
            # One Cast shared by every LSTM node; the gather indices only if a transform needs them.
            with rec.scope("lengths"):
                self.lengths_int32 = rec.op("Cast", [lengths], to=TensorProto.INT32, label="lengths_int32")

    def _build(self) -> None:
        rec = self.rec
        x_time_major, lengths, need_reverse = self._args
        need_reverse = need_reverse and self.form == "gather"
        with rec.scope("lengths"):
            shape = rec.op("Shape", [x_time_major])
            time = self._time = rec.op("Gather", [shape, rec.constant(0)], axis=0, label="time")
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
                inside = self._inside = rec.op("Less", [t_col, len_row], label="inside")
                mirrored = rec.op("Sub", [rec.op("Sub", [len_row, rec.constant(1)]), t_col], label="mirrored")
                source = rec.op("Where", [inside, mirrored, t_col], label="source_step")
                flat = rec.op("Add", [rec.op("Mul", [source, batch]), batch_range])
                self.reverse_flat = rec.op("Reshape", [flat, rec.constant([-1])], label="reverse_flat")

    def inside(self) -> str:
        """(time, batch) bool: True at each row's valid steps (``t < length``). Built once."""
        if self._inside is None:
            rec = self.rec
            x_time_major, lengths, _ = self._args
            with rec.scope("lengths"):
                time = self._time
                if time is None:  # sequence_lens form: no gather indices were built
                    first = rec.op("Slice", [rec.op("Shape", [x_time_major]), rec.constant([0]), rec.constant([1])])
                    time = rec.op("Squeeze", [first, rec.constant([0])], label="time")
                t_col = rec.unsqueeze(rec.op("Range", [rec.constant(0), time, rec.constant(1)]), 1)
                self._inside = rec.op("Less", [t_col, rec.unsqueeze(lengths, 0)], label="inside")
        return self._inside

    def last_valid(self, y: str, width: int, label: str = "last_valid") -> str:
        """(time, batch, width) -> (batch, width) at each row's last valid step."""
        if self.last_flat is None:
            self._build()
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
    """Stack of layers over time-major ``x``; returns the head's input (batch, directions*hidden).
    The graph form is the indexer's (one per graph): "gather" or "sequence_lens"."""
    if index.form == "sequence_lens":
        return emit_lstm_stack_sequence_lens(rec, x, lstm, index.lengths_int32)
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


def emit_lstm_stack_sequence_lens(rec: GraphRecorder, x: str, lstm: nn.LSTM, lengths_int32: str) -> str:
    """The "sequence_lens" form: one LSTM node per layer, both directions in it, the lengths as
    ``sequence_lens``; returns the last layer's ``Y_h`` as (batch, directions*hidden), forward first
    (PyTorch's ``h_n`` order). Exact only where the runtime honours ``sequence_lens``."""
    h, directions = lstm.hidden_size, 2 if lstm.bidirectional else 1
    for layer in range(lstm.num_layers):
        last_layer = layer == lstm.num_layers - 1
        with rec.scope(f"l{layer}"):
            parts = [onnx_lstm_weights(lstm, layer, reverse) for reverse in (False, True)[:directions]]
            w, r, b = (np.concatenate(arrays, axis=0) for arrays in zip(*parts))
            # sequence_lens is the 5th input, right after B: no empty ("") optional input names.
            inputs = [x, rec.weight("W", w), rec.weight("R", r), rec.weight("B", b), lengths_int32]
            attrs = dict(hidden_size=h, direction="bidirectional" if directions == 2 else "forward")
            if last_layer:
                # Y is named too (unused): empty output names trip the same converters.
                _, y_h = rec.op("LSTM", inputs, n_outputs=2, label="LSTM", **attrs)
                if directions == 1:
                    return rec.op("Reshape", [y_h, rec.constant([-1, h])], label="final_state")
                # (directions, batch, H) -> (batch, directions*H)
                y_h = rec.op("Transpose", [y_h], perm=[1, 0, 2])
                return rec.op("Reshape", [y_h, rec.constant([0, -1])], label="final_state")
            y = rec.op("LSTM", inputs, label="LSTM", **attrs)
            # (time, directions, batch, H) -> (time, batch, directions*H)
            if directions == 2:
                y = rec.op("Transpose", [y], perm=[0, 2, 1, 3])
                x = rec.op("Reshape", [y, rec.constant([0, 0, -1])], label="Y")
            else:
                x = rec.op("Reshape", [y, rec.constant([0, -1, h])], label="Y")
    raise AssertionError("unreachable")
