"""Assemble the whole bag into one ONNX model: transforms, every member, aggregation, metadata."""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

from .._version import FORMAT_VERSION, __version__
from ..bag import Bag
from ..members import check_lstm_supported
from .lstm import SequenceIndexer, emit_lstm_stack
from .recorder import BOOL, FLOAT, INT64, GraphRecorder

DEFAULT_OPSET = 17
MIN_OPSET = 14
MAX_OPSET = onnx.defs.onnx_opset_version()



def check_opset(opset: int) -> int:
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET} (this onnx's newest), got {opset}")
    return int(opset)


def _emit_inputs(rec: GraphRecorder, bag: Bag, x: str, lengths: str, index: SequenceIndexer):
    """Scaling, level-free shift and feature selection; returns (members' input, raw last step)."""
    t = bag.input_transform
    with rec.scope("inputs"):
        scaled = rec.op("Div", [rec.op("Sub", [x, rec.weight("mean", t.mean)]), rec.weight("scale", t.scale)],
                        label="scaled")
        raw_last = None
        if bag.task == "regression" and bag.target_transform.reference_feature is not None:
            raw_last = index.last_valid(x, t.n_features, label="raw_last")
        if t.level_free:
            scaled = rec.op("Sub", [scaled, index.last_valid(scaled, t.n_features, "scaled_last")],
                            label="level_free")
        if t.feature_indices is not None:
            scaled = rec.op("Gather", [scaled, rec.constant(list(t.feature_indices))], axis=2,
                            label="selected")
    return scaled, raw_last


def _emit_nonfinite_rows(rec: GraphRecorder, member_x: str, index: SequenceIndexer) -> str:
    """(1, batch, 1): 0 for a row whose valid steps the members read are all finite, NaN otherwise.

    onnxruntime's LSTM kernel clamps inside its activations, so a NaN or Inf input step gives
    finite, meaningless outputs, where PyTorch's LSTM gives NaN. Adding this term to every
    member's output restores PyTorch's behaviour (and lets ``nonfinite="drop"`` see the failure).
    Padding is masked out first: garbage past a row's length must not poison it.
    """
    with rec.scope("nonfinite"):
        inside = rec.unsqueeze(index.inside(), 2)
        zero = rec.constant(0.0, np.float32)
        valid = rec.op("Where", [inside, member_x, zero], label="valid_steps")
        nan_or_zero = rec.op("Mul", [valid, zero], label="nan_or_zero")  # NaN*0 and Inf*0 are NaN
        return rec.op("ReduceSum", [nan_or_zero, rec.constant([0, 2])], keepdims=1, label="row_poison")


def _emit_member(rec: GraphRecorder, k: int, member, x: str, index: SequenceIndexer, task: str) -> str:
    check_lstm_supported(member.lstm)
    with rec.scope(f"m{k}"):
        state = emit_lstm_stack(rec, x, member.lstm, index)
        with rec.scope("head"):
            w = member.head.weight.detach().cpu().numpy().astype(np.float32).T
            b = member.head.bias.detach().cpu().numpy().astype(np.float32)
            out = rec.op("Add", [rec.op("MatMul", [state, rec.weight("W", w)]), rec.weight("B", b)],
                         label="output")
            if task == "classification":
                out = rec.op("Softmax", [out], axis=-1, label="probabilities")
        return out


class _Combiner:
    """Averages over the member axis of (members, batch, width) tensors.

    Plain or weighted mean; with the ``drop`` policy, a member whose output row holds NaN or Inf
    is left out of that row and the remaining weights are renormalised (a row every member
    failed on stays NaN). ``propagate`` lets non-finite values flow into the result.
    """

    def __init__(self, rec: GraphRecorder, bag: Bag, stack: str):
        self.rec = rec
        self.weights = None
        if bag.member_weights is not None:
            self.weights = rec.weight("member_weights", bag.member_weights.reshape(-1, 1, 1))
        self.kept = None
        if bag.nonfinite == "drop":
            if self.weights is None:
                uniform = np.full((len(bag.members), 1, 1), 1.0 / len(bag.members), np.float32)
                self.weights = rec.weight("member_weights", uniform)
            # x - x is 0 for finite values and NaN for NaN and +-Inf.
            finite = rec.op("Equal", [rec.op("Sub", [stack, stack]), rec.constant(0.0, np.float32)], label="finite")
            row_ok = rec.reduce("ReduceMin", rec.op("Cast", [finite], to=FLOAT), 2, keepdims=1, label="row_ok")
            self.kept = rec.op("Cast", [row_ok], to=BOOL, label="kept")
            self.weights = rec.op("Mul", [row_ok, self.weights], label="kept_weights")  # (members, batch, 1)
            self.total = rec.reduce("ReduceSum", self.weights, 0, label="kept_weight_total")

    def mean(self, values: str, label: str) -> str:
        rec = self.rec
        if self.kept is not None:
            values = rec.op("Where", [self.kept, values, rec.constant(0.0, np.float32)], label=f"{label}_kept")
            total = rec.reduce("ReduceSum", rec.op("Mul", [values, self.weights]), 0)
            return rec.op("Div", [total, self.total], label=label)
        if self.weights is None:
            return rec.reduce_mean(values, 0, label=label)
        return rec.reduce("ReduceSum", rec.op("Mul", [values, self.weights]), 0, label=label)


def _emit_aggregation(rec: GraphRecorder, bag: Bag, stack: str, raw_last: str | None) -> tuple[list[str], str]:
    """Members' stacked outputs (members, batch, outputs) -> the contract's named outputs, and the
    per-member tensor in output units (probabilities, or raw-unit predictions)."""
    with rec.scope("aggregate"):
        if bag.task == "classification":
            combine = _Combiner(rec, bag, stack)
            votes = stack
            if bag.vote == "hard":
                winners = rec.op("ArgMax", [stack], axis=2, keepdims=0)
                votes = rec.op("OneHot", [winners, rec.constant(bag.n_classes),
                                          rec.constant([0.0, 1.0], np.float32)], axis=-1, label="votes")
            probabilities = combine.mean(votes, "vote_share")
            rec.op("Identity", [probabilities], outputs=["probabilities"])
            rec.op("ArgMax", ["probabilities"], axis=1, keepdims=0, outputs=["label"])
            return ["probabilities", "label"], stack
        t = bag.target_transform
        scale = rec.weight("target_scale", t.scale)
        descaled = rec.op("Add", [rec.op("Mul", [stack, scale]), rec.weight("target_mean", t.mean)],
                          label="descaled")
        if raw_last is not None:
            reference = rec.op("Gather", [raw_last, rec.constant([t.reference_feature])], axis=1)
            descaled = rec.op("Add", [descaled, reference], label="residual_added")
        combine = _Combiner(rec, bag, descaled)
        mean = combine.mean(descaled, "mean")
        deviation = rec.op("Sub", [descaled, mean])
        variance = combine.mean(rec.op("Mul", [deviation, deviation]), "variance")
        rec.op("Identity", [mean], outputs=["prediction"])
        rec.op("Sqrt", [variance], outputs=["std"])
        return ["prediction", "std"], descaled


def _metadata(bag: Bag, versions: dict) -> dict[str, str]:
    meta = {
        "bagcompile_format": str(FORMAT_VERSION),
        "task": bag.task,
        "n_members": str(len(bag.members)),
        "n_features": str(bag.input_transform.n_features),
        "feature_names": json.dumps(list(bag.feature_names)),
        "aggregation": ("soft_vote" if bag.vote == "soft" else "hard_vote") if bag.task == "classification" else "mean",
        "nonfinite_policy": bag.nonfinite,
        "member_weights": json.dumps(None if bag.member_weights is None else [float(w) for w in bag.member_weights]),
        "members": json.dumps([m.spec.to_dict() for m in bag.members]),
        "input_length": json.dumps(bag.input_length),
        "input_transform": json.dumps({"level_free": bag.input_transform.level_free,
                                       "feature_indices": bag.input_transform.feature_indices}),
        "versions": json.dumps(versions),
        "scores": json.dumps(bag.scores),
    }
    if bag.task == "classification":
        meta["classes"] = json.dumps([c.item() if hasattr(c, "item") else c for c in bag.classes])
    else:
        meta["target_names"] = json.dumps(list(bag.target_names))
        meta["target_reference_feature"] = json.dumps(bag.target_transform.reference_feature)
    return meta


def compile_bag(bag: Bag, opset: int = DEFAULT_OPSET, member_outputs: bool = False,
                form: str = "gather") -> onnx.ModelProto:
    """Build the ONNX model for ``bag`` (not yet verified: see ``export.export_bag``)."""
    import torch

    opset = check_opset(opset)
    rec = GraphRecorder(opset)
    n_features = bag.input_transform.n_features
    x_time_major = rec.op("Transpose", ["x"], perm=[1, 0, 2], label="x_time_major")
    need_reverse = any(m.spec.bidirectional for m in bag.members)
    index = SequenceIndexer(rec, x_time_major, "lengths", need_reverse, form=form)  # form: see lstm.py
    member_x, raw_last = _emit_inputs(rec, bag, x_time_major, "lengths", index)
    stacked = [_emit_member(rec, k, m, member_x, index, bag.task) for k, m in enumerate(bag.members)]
    # (members*batch, outputs) -> (members, batch, outputs): one Concat and one Reshape, not M Unsqueezes.
    joined = stacked[0] if len(stacked) == 1 else rec.op("Concat", stacked, axis=0, label="members_joined")
    width = bag.n_classes if bag.task == "classification" else bag.n_targets
    stack = rec.op("Reshape", [joined, rec.constant([len(stacked), -1, width])], label="members_stack")
    stack = rec.op("Add", [stack, _emit_nonfinite_rows(rec, member_x, index)], label="members_checked")
    outputs, per_member = _emit_aggregation(rec, bag, stack, raw_last)

    out_info = {
        "probabilities": helper.make_tensor_value_info("probabilities", FLOAT, ["batch", width]),
        "label": helper.make_tensor_value_info("label", INT64, ["batch"]),
        "prediction": helper.make_tensor_value_info("prediction", FLOAT, ["batch", width]),
        "std": helper.make_tensor_value_info("std", FLOAT, ["batch", width]),
    }
    graph_outputs = [out_info[name] for name in outputs]
    if member_outputs:
        rec.op("Identity", [per_member], outputs=["members"])
        graph_outputs.append(helper.make_tensor_value_info("members", FLOAT, [len(bag.members), "batch", width]))
    graph = helper.make_graph(
        rec.nodes, "bagged_lstm",
        inputs=[helper.make_tensor_value_info("x", FLOAT, ["batch", "time", n_features]),
                helper.make_tensor_value_info("lengths", INT64, ["batch"])],
        outputs=graph_outputs, initializer=rec.initializers)
    opset_imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_imports, producer_name="bagcompile",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opset_imports))
    model.doc_string = (f"bagcompile ensemble: {len(bag.members)} LSTM members, task {bag.task}. "
                        "Inputs x (batch, time, features) raw units, lengths (batch,) int64 in 1..time.")
    versions = {"bagcompile": __version__, "torch": torch.__version__, "onnx": onnx.__version__}
    helper.set_model_props(model, {**_metadata(bag, versions), "graph_form": form})
    return model
