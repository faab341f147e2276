"""Precision and format variants of a compiled (fp32, verified) ensemble file.

* ``to_int8_dynamic``: onnxruntime's dynamic quantization. Every ``LSTM`` becomes the contrib op
  ``com.microsoft.DynamicQuantizeLSTM`` (int8 weights; activations quantized per call, with one
  range per tensor) and each head's ``MatMul`` becomes ``MatMulInteger``. The members' input is
  zeroed past each row's length first, so padding stays unread; a row's result still depends a
  little on the other rows of its batch (the range spans the batch).
* ``to_float16``: onnxruntime's transformers float16 converter with ``keep_io_types=True``. Only the
  members (nodes in the compiler's ``m<k>/`` scopes: LSTMs, heads, softmax) are converted; the
  input scaling, level-free shift, residual add and the aggregation work on raw units and stay
  float32 (the converter's float16 round trips between those nodes are removed), and every
  integer tensor (``lengths``, index arithmetic) is untouched. The CPU provider has no float16
  LSTM kernel and casts back to float32 inside the session: float16 is meant for CUDA.
* ``to_ort_format``: onnxruntime's ``.ort`` flatbuffer format (for minimal/mobile builds) plus the
  ``required_operators.config`` file a reduced onnxruntime build needs.

Every variant keeps the original's ``metadata_props`` (the model contract) and adds
``precision`` (``int8-dynamic``, ``fp16``; ``.ort`` files keep the source's precision, ``fp32``
when it had none). Like ``export_bag``, nothing is written until the variant has been loaded and run
in onnxruntime; files are written atomically.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..atomic import atomic_write_bytes
from ..inspection import PRECISION_KEY, model_precision

VARIANTS = ("fp16", "int8", "ort")
SUFFIXES = {"fp16": ".fp16.onnx", "int8": ".int8.onnx", "ort": ".ort"}
ORT_CONFIG_SUFFIX = ".required_operators.config"
MEMBER_SCOPE = re.compile(r"^m\d+/")  # node names of member k: "m3/l0/fw/LSTM" (see recorder.py)
MAIN_OUTPUT = {"classification": "probabilities", "regression": "prediction"}


class VariantError(RuntimeError):
    """A variant could not be made or does not run; nothing was written."""


@dataclass(frozen=True)
class OrtFiles:
    model: Path   # NAME.ort
    config: Path  # NAME.required_operators.config: the operators a reduced onnxruntime build needs


# ------------------------------------------------------------------------------------ helpers


def _load(model_path) -> onnx.ModelProto:
    try:
        return onnx.load(str(model_path))
    except Exception as error:  # protobuf's DecodeError is no ValueError
        raise ValueError(f"{model_path} is not a readable ONNX file ({type(error).__name__})") from None


def _restore_identity(variant: onnx.ModelProto, original: onnx.ModelProto, precision: str) -> None:
    """The original's metadata (in its order) plus ``precision``, producer and doc string. Tools
    drop or add keys (quantize_dynamic adds ``onnx.infer``); the contract is the original's."""
    del variant.metadata_props[:]
    for prop in original.metadata_props:
        if prop.key != PRECISION_KEY:
            variant.metadata_props.add(key=prop.key, value=prop.value)
    variant.metadata_props.add(key=PRECISION_KEY, value=precision)
    variant.producer_name = original.producer_name
    variant.producer_version = original.producer_version
    variant.doc_string = original.doc_string


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every input is produced before use (the float16 converter appends the
    input casts at the end, which onnx's checker rejects)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            missing = sorted({n for node in waiting for n in node.input if n not in known})
            raise VariantError(f"graph has a cycle or undefined inputs: {missing[:5]}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_fp16_round_trips(model: onnx.ModelProto) -> None:
    """Undo the float16 converter's round trips between blocked (float32) nodes.

    ``convert_float_to_float16(node_block_list=...)`` types every float tensor float16 and wraps
    each blocked node in casts, so the value passed from one blocked node to the next goes
    float32 -> float16 -> float32 and the raw-unit arithmetic is rounded to float16 anyway. Each
    ``Cast(to=float)`` of a ``Cast(to=float16)`` of a float32 tensor is replaced by that tensor; the
    casts left are the real boundaries (into and out of the members). Needs a sorted graph.
    """
    g = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
        types = {v.name: v.type.tensor_type.elem_type
                 for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    except Exception:  # no types, no rewrite: the graph stays correct, only less precise
        return
    types.update({t.name: t.data_type for t in g.initializer})
    producer = {out: node for node in g.node for out in node.output}
    outputs = {o.name for o in g.output}
    to = lambda node: next((a.i for a in node.attribute if a.name == "to"), None)
    rename, kept = {}, []
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (first is not None and to(node) == onnx.TensorProto.FLOAT and first.op_type == "Cast"
                and to(first) == onnx.TensorProto.FLOAT16 and types.get(first.input[0]) == onnx.TensorProto.FLOAT):
            source = rename.get(first.input[0], first.input[0])
            if node.output[0] not in outputs:
                rename[node.output[0]] = source
                continue
            node.op_type, node.input[:] = "Identity", [source]  # a graph output keeps its name
            del node.attribute[:]
        kept.append(node)
    while True:  # drop the casts nothing reads any more
        used = {i for node in kept for i in node.input} | outputs
        alive = [node for node in kept if any(o in used for o in node.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    # Blocked nodes' outputs were renamed 'T_cast_to_fp16'; give back the compiler's names.
    taken = {name for node in kept for name in (*node.input, *node.output)}
    taken |= {v.name for v in g.input} | outputs | {t.name for t in g.initializer}
    back = {}
    for node in kept:
        for out in node.output:
            base = out[: -len("_cast_to_fp16")]
            if out.endswith("_cast_to_fp16") and node.op_type != "Cast" and base not in taken:
                back[out] = base
    for node in kept:
        node.input[:] = [back.get(i, i) for i in node.input]
        node.output[:] = [back.get(o, o) for o in node.output]
    del g.node[:]
    g.node.extend(kept)
    read = {i for node in kept for i in node.input}
    live = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]  # the converter's types name tensors that are gone; ORT infers its own


def _value_types(values) -> dict:
    return {v.name: v.type.tensor_type.elem_type for v in values}


def _session(model, intra_op_threads: int | None = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _probe(model: onnx.ModelProto, seed: int = 0):
    """A small ragged raw-unit batch for smoke runs: length 1 and full length included, garbage
    (N(0, 1000)) in the padding, which no variant may read."""
    meta = {p.key: p.value for p in model.metadata_props}
    n_features = int(meta["n_features"])
    mean, scale = 0.0, 1.0
    for t in model.graph.initializer:  # the compiler's input scaling, to feed realistic raw values
        if t.name == "inputs.mean":
            mean = onnx.numpy_helper.to_array(t).astype(np.float32)
        elif t.name == "inputs.scale":
            scale = onnx.numpy_helper.to_array(t).astype(np.float32)
    rng = np.random.default_rng(seed)
    t = json.loads(meta.get("input_length") or "null") or 12
    x = (rng.normal(size=(5, t, n_features)) * scale + mean).astype(np.float32)
    lengths = rng.integers(1, t + 1, size=5).astype(np.int64)
    lengths[0], lengths[1] = 1, t
    for row, length in enumerate(lengths):
        x[row, length:] = rng.normal(0, 1e3, size=(t - length, n_features))
    return x, lengths


def _run_checked(model_bytes_or_path, x, lengths, what: str) -> dict:
    """Load and run in onnxruntime CPU; every float output must be finite."""
    try:
        session = _session(model_bytes_or_path)
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, {"x": x, "lengths": lengths})))
    except Exception as error:
        raise VariantError(f"the {what} variant does not run in onnxruntime: "
                           f"{str(error).strip().splitlines()[0][:300]}") from error
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise VariantError(f"the {what} variant gives non-finite values in {name!r}")
    return outputs


def _check_close(got: dict, want: dict, atol: float, rtol: float, what: str) -> float:
    worst = 0.0
    for name, expected in want.items():
        have = got[name]
        if have.shape != expected.shape or have.dtype != expected.dtype:
            raise VariantError(f"the {what} variant's {name!r} is {have.dtype}{list(have.shape)}, "
                               f"fp32 gives {expected.dtype}{list(expected.shape)}")
        if expected.dtype.kind == "f":
            diff = np.abs(have.astype(np.float64) - expected)
            worst = max(worst, float(diff.max(initial=0.0)))
            if np.any(diff > atol + rtol * np.abs(expected)):
                raise VariantError(f"the {what} variant's {name!r} differs from fp32 by {worst:.3g} "
                                   f"(allowed {atol:g} + {rtol:g}*|fp32|)")
    return worst


def _zero_member_padding(model: onnx.ModelProto) -> int:
    """Zero the padding of the members' input: every float (time, batch, features) tensor that
    member nodes read from outside their scope becomes ``Where(t < lengths[b], value, 0)``.

    Dynamic quantization takes each activation's int8 range from the whole tensor, padding
    included, so garbage past a row's length would change every row's result (measured on
    Japanese Vowels: up to 0.97 in a probability). Zeros never widen that range (it always
    includes 0). The float32 results are unchanged: padding is never read. Returns how many
    tensors were masked.
    """
    from onnx import helper

    g = model.graph
    in_member = lambda node: bool(MEMBER_SCOPE.match(node.name))
    outside = {o for node in g.node if not in_member(node) for o in node.output}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    info = {v.name: v.type.tensor_type for v in [*inferred.value_info, *inferred.input]}
    boundary = sorted({i for node in g.node if in_member(node) for i in node.input
                       if i in outside and i in info and info[i].elem_type == onnx.TensorProto.FLOAT
                       and len(info[i].shape.dim) == 3})
    if not boundary:
        return 0
    scalar = lambda name, value: helper.make_tensor(name, onnx.TensorProto.INT64, [], [value])
    axis = lambda name, value: helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value])
    g.initializer.extend([scalar("int8_padding.zero_i", 0), scalar("int8_padding.one_i", 1),
                          axis("int8_padding.axis1", 1), axis("int8_padding.axis2", 2),
                          helper.make_tensor("int8_padding.zero", onnx.TensorProto.FLOAT, [], [0.0])])
    node = lambda op, inputs, output, **attrs: helper.make_node(
        op, inputs, [f"int8_padding.{output}"], name=f"int8_padding/{output}", **attrs)
    nodes = [
        node("Shape", [boundary[0]], "shape"),
        node("Gather", ["int8_padding.shape", "int8_padding.zero_i"], "time", axis=0),
        node("Range", ["int8_padding.zero_i", "int8_padding.time", "int8_padding.one_i"], "steps"),
        node("Unsqueeze", ["int8_padding.steps", "int8_padding.axis1"], "steps_t1"),   # (time, 1)
        node("Less", ["int8_padding.steps_t1", "lengths"], "valid_tb"),               # (time, batch)
        node("Unsqueeze", ["int8_padding.valid_tb", "int8_padding.axis2"], "valid"),   # (time, batch, 1)
    ]
    masked = {name: f"{name}.padding_zeroed" for name in boundary}
    nodes += [helper.make_node("Where", ["int8_padding.valid", name, "int8_padding.zero"], [masked[name]],
                               name=f"int8_padding/{name}") for name in boundary]
    for member_node in g.node:
        if in_member(member_node):
            member_node.input[:] = [masked.get(i, i) for i in member_node.input]
    g.node.extend(nodes)
    _topological_sort(g)
    return len(boundary)


class _DropQuantizationAdvice(logging.Filter):
    def filter(self, record):  # quantize_dynamic logs this on the root logger on every call
        return "pre-processing before quantization" not in record.getMessage()


# ------------------------------------------------------------------------------------ variants


def to_int8_dynamic(model_path, out_path) -> Path:
    """Dynamic int8 quantization (weights int8, activations per call): writes ``out_path``.

    Raises ``VariantError`` (and writes nothing) unless every LSTM became a DynamicQuantizeLSTM and
    the result runs in onnxruntime CPU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    original = _load(model_path)
    n_lstm = sum(n.op_type == "LSTM" for n in original.graph.node)
    masked = onnx.ModelProto()
    masked.CopyFrom(original)
    x, lengths = _probe(original)
    if _zero_member_padding(masked):  # float32 results must not change: padding is never read
        _check_close(_run_checked(masked.SerializeToString(), x, lengths, "padding-zeroed fp32"),
                     _run_checked(original.SerializeToString(), x, lengths, "fp32"), 1e-6, 0.0,
                     "padding-zeroed fp32")
    advice = _DropQuantizationAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="bagcompile-int8-") as tmp:
            target = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(masked, target, weight_type=QuantType.QInt8)
            model = onnx.load(str(target))
    finally:
        root.removeFilter(advice)
    n_quantized = sum(n.op_type == "DynamicQuantizeLSTM" and n.domain == "com.microsoft"
                      for n in model.graph.node)
    left = sum(n.op_type == "LSTM" for n in model.graph.node)
    if n_lstm == 0 or n_quantized != n_lstm or left:
        raise VariantError(f"quantize_dynamic turned {n_quantized} of {n_lstm} LSTM nodes into "
                           f"com.microsoft.DynamicQuantizeLSTM ({left} left as LSTM); nothing was written")
    _restore_identity(model, original, "int8-dynamic")
    data = model.SerializeToString()
    _run_checked(data, x, lengths, "int8")
    atomic_write_bytes(Path(out_path), data)
    return Path(out_path)


def to_float16(model_path, out_path) -> Path:
    """Float16 members (weights and compute), float32 raw-unit arithmetic and I/O: writes ``out_path``.

    The contract's inputs/outputs keep their types (``x`` float32, ``lengths`` int64, outputs
    float32/int64); int64 initializers are byte-identical. Raises ``VariantError`` (and writes
    nothing) if any of that fails or the result does not run in onnxruntime CPU.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    original = _load(model_path)
    blocked = [n.name for n in original.graph.node if not MEMBER_SCOPE.match(n.name)]
    lstms = [n for n in original.graph.node if n.op_type == "LSTM"]
    if not lstms or any(n.name in blocked for n in lstms):
        raise VariantError(f"{model_path}: expected every LSTM node in a member scope 'm<k>/' "
                           "(a graph compiled by bagcompile); nothing was written")
    model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True,
                                     node_block_list=blocked)
    _topological_sort(model.graph)
    _drop_fp16_round_trips(model)

    for kind, before, after in (("input", original.graph.input, model.graph.input),
                                ("output", original.graph.output, model.graph.output)):
        if _value_types(before) != _value_types(after):
            raise VariantError(f"float16 conversion changed the graph {kind} types: "
                               f"{_value_types(before)} -> {_value_types(after)}")
    integer = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    ints = {t.name: t.SerializeToString() for t in original.graph.initializer if t.data_type in integer}
    changed = [t.name for t in model.graph.initializer  # unused ones may be gone, none may change
               if t.data_type in integer and ints.get(t.name) != t.SerializeToString()]
    if changed:
        raise VariantError(f"float16 conversion changed integer initializers (lengths/index "
                           f"arithmetic): {changed[:3]}")
    weights = {i for n in lstms for i in n.input[1:4] if i}
    not_half = [t.name for t in model.graph.initializer
                if t.name in weights and t.data_type != onnx.TensorProto.FLOAT16]
    if not_half:
        raise VariantError(f"float16 conversion left LSTM weights in another type: {not_half[:3]}")

    _restore_identity(model, original, "fp16")
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    x, lengths = _probe(original)
    _run_checked(data, x, lengths, "fp16")
    atomic_write_bytes(Path(out_path), data)
    return Path(out_path)


def to_ort_format(model_path, out_dir, *, atol: float = 1e-5, rtol: float = 1e-5) -> OrtFiles:
    """Convert to onnxruntime's ``.ort`` format (optimisation level 'all', fixed, CPU) with
    onnxruntime's own tool; also writes ``NAME.required_operators.config``. The .ort file is
    loaded and run against the source before anything is written.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    model_path, out_dir = Path(model_path), Path(out_dir)
    original = _load(model_path)
    name = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.stem
    source = onnx.ModelProto()
    source.CopyFrom(original)
    _restore_identity(source, original, model_precision(original))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    tool_logger = logging.getLogger("ort_format_model.utils")
    level = tool_logger.level
    tool_logger.setLevel(logging.WARNING)  # it logs "Created config in <temp dir>" at INFO
    try:
        with tempfile.TemporaryDirectory(prefix=".bagcompile-ort-", dir=out_dir) as tmp:
            tmp = Path(tmp)
            onnx.save(source, str(tmp / f"{name}.onnx"))
            try:
                with contextlib.redirect_stdout(log):  # the tool prints progress to stdout
                    convert_onnx_models_to_ort(tmp / f"{name}.onnx", output_dir=tmp / "out",
                                               optimization_styles=[OptimizationStyle.Fixed])
            except Exception as error:
                raise VariantError(f"onnxruntime could not convert {model_path} to ORT format: {error}\n"
                                   + log.getvalue()) from error
            ort_bytes = (tmp / "out" / f"{name}.ort").read_bytes()
            config = (tmp / "out" / f"{name}{ORT_CONFIG_SUFFIX}").read_text()
            x, lengths = _probe(original)
            want = _run_checked(original.SerializeToString(), x, lengths, "fp32")
            got = _run_checked(str(tmp / "out" / f"{name}.ort"), x, lengths, "ORT-format")
            _check_close(got, want, atol, rtol, "ORT-format")
    finally:
        tool_logger.setLevel(level)
    # The tool names the (temporary) model it read in a comment; name the file we write instead.
    config = re.sub(r"(?m)^# - .*$", f"# - {name}.ort", config)
    files = OrtFiles(out_dir / f"{name}.ort", out_dir / f"{name}{ORT_CONFIG_SUFFIX}")
    atomic_write_bytes(files.model, ort_bytes)
    atomic_write_bytes(files.config, config.encode())
    return files


# ------------------------------------------------------------------------------------ measuring


def variant_report(original_path, variant_path, X, lengths=None, y=None, task=None, *,
                   target_scale: float | None = None) -> dict:
    """Size and output change of a variant against its fp32 original, both run by the torch-free
    runtime (``bagcompile_runtime.EnsembleSession``, CPU) on the same real rows.

    ``X``: list of (time, features) arrays or a padded (batch, time, features) array with
    ``lengths``. ``y`` (optional): true class labels, or targets (batch, targets) for regression.
    ``target_scale``: regression only, MSE is divided by its square (standardised MSE).
    Keys: size_bytes, original_size_bytes, size_ratio, precision, n_rows, output, max_abs_diff
    (of the main output); classification: label_agreement, and with ``y`` accuracy_fp32,
    accuracy_variant, accuracy_change; regression: max_abs_diff_std, and with ``y`` mse_fp32,
    mse_variant, mse_change.
    """
    from bagcompile_runtime import EnsembleSession

    original_path, variant_path = Path(original_path), Path(variant_path)
    base = EnsembleSession(original_path, providers="cpu")
    variant = EnsembleSession(variant_path, providers="cpu")
    task = task or base.task
    if variant.task != task or base.task != task:
        raise ValueError(f"task mismatch: fp32 {base.task}, variant {variant.task}, asked {task}")
    out_fp32, out_var = base.run(X, lengths), variant.run(X, lengths)
    main = MAIN_OUTPUT[task]
    diff = lambda name: float(np.max(np.abs(out_var[name].astype(np.float64) - out_fp32[name]), initial=0.0))
    report = {
        "size_bytes": variant_path.stat().st_size,
        "original_size_bytes": original_path.stat().st_size,
        "size_ratio": variant_path.stat().st_size / original_path.stat().st_size,
        "precision": variant.session.get_modelmeta().custom_metadata_map.get(PRECISION_KEY, "fp32"),
        "n_rows": int(out_fp32[main].shape[0]),
        "output": main,
        "max_abs_diff": diff(main),
    }
    if task == "classification":
        report["label_agreement"] = float(np.mean(out_var["label"] == out_fp32["label"]))
        if y is not None:
            classes = np.asarray(base.classes)
            y = np.asarray(y)
            acc = [float(np.mean(classes[o["label"]] == y)) for o in (out_fp32, out_var)]
            report.update(accuracy_fp32=acc[0], accuracy_variant=acc[1], accuracy_change=acc[1] - acc[0])
    else:
        report["max_abs_diff_std"] = diff("std")
        if y is not None:
            y = np.asarray(y, dtype=np.float64).reshape(out_fp32[main].shape)
            norm = 1.0 if target_scale is None else float(target_scale) ** 2
            mse = [float(np.mean((o[main] - y) ** 2)) / norm for o in (out_fp32, out_var)]
            report.update(mse_fp32=mse[0], mse_variant=mse[1], mse_change=mse[1] - mse[0])
    return report


def variant_paths(output) -> dict[str, Path]:
    """Where ``write_variants`` puts each variant of ``output`` (NAME.onnx): beside it."""
    output = Path(output)
    name = output.name.removesuffix(".onnx")
    return {v: output.with_name(name + SUFFIXES[v]) for v in VARIANTS}


def parse_variants(text: str) -> tuple[str, ...]:
    """'fp16,int8,ort' -> ('fp16', 'int8', 'ort'), in the given order, without repeats."""
    chosen = [v.strip().lower() for v in text.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}: "
                         f"choose from {','.join(VARIANTS)}")
    return tuple(dict.fromkeys(chosen))


def load_verify_rows(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows saved with a run (``verify.safetensors``: x and lengths, no labels)."""
    from safetensors.numpy import load as load_numpy_bytes

    from ..workflow import VERIFY_FILE

    path = Path(run_dir) / VERIFY_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} is incomplete: {VERIFY_FILE} is missing")
    sample = load_numpy_bytes(path.read_bytes())
    return sample["x"], sample["lengths"]


def write_variants(output, variants, x, lengths) -> list[tuple[str, Path, dict]]:
    """Make each variant of the exported fp32 file ``output`` beside it and measure it on the
    (unlabelled) rows ``x``/``lengths``; returns (variant, path, variant_report) per variant."""
    output, paths, results = Path(output), variant_paths(output), []
    for variant in variants:
        if variant == "fp16":
            path = to_float16(output, paths["fp16"])
        elif variant == "int8":
            path = to_int8_dynamic(output, paths["int8"])
        else:
            path = to_ort_format(output, output.parent).model
        results.append((variant, path, variant_report(output, path, x, lengths)))
    return results


def describe_report(variant: str, path, report: dict) -> str:
    """One line for the CLI."""
    text = (f"wrote {path} ({report['size_bytes'] / 1024:.0f} KiB, {100 * report['size_ratio']:.0f}% "
            f"of fp32, {report['precision']}); max |{variant} - fp32| {report['output']} = "
            f"{report['max_abs_diff']:.2e}")
    if "label_agreement" in report:
        text += f", labels agree {100 * report['label_agreement']:.1f}%"
    return text + f" over {report['n_rows']} held-out rows"
