"""``bagcompile inspect`` and ``bagcompile bench``: describe and time a compiled ensemble."""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import numpy as np

PRECISION_KEY = "precision"  # metadata written by bagcompile.compiler.variants


def model_precision(model) -> str:
    """fp32, fp16 (float16 initializers) or int8-dynamic (com.microsoft.DynamicQuantizeLSTM)."""
    if any(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node):
        return "int8-dynamic"
    if any(t.data_type == 10 for t in model.graph.initializer):  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


ORT_FILE_ID = b"ORTM"  # the flatbuffer file identifier of onnxruntime's ORT format (bytes 4-8)


def describe(path) -> str:
    import onnx

    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(8)[4:] == ORT_FILE_ID:
            return _describe_ort(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises its own DecodeError, unrelated to ValueError
        raise ValueError(f"{path} is not a readable ONNX file ({type(error).__name__})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if "bagcompile_format" not in meta:
        raise ValueError(f"{path} is an ONNX model but not a bagcompile ensemble "
                         "(no 'bagcompile_format' metadata)")

    def shape(value_info):
        dims = value_info.type.tensor_type.shape.dim
        return "[" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + "]"

    def dtype(value_info):
        return onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type).lower()

    ops = collections.Counter(n.op_type for n in model.graph.node)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    lines = [f"file: {path} ({path.stat().st_size / 1024:.1f} KiB, {params:,} stored values)",
             f"producer: {model.producer_name} {model.producer_version}; IR version {model.ir_version}; "
             + "opsets: " + ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
             "inputs:"]
    lines += [f"  {v.name}: {dtype(v)} {shape(v)}" for v in model.graph.input]
    lines.append("outputs:")
    lines += [f"  {v.name}: {dtype(v)} {shape(v)}" for v in model.graph.output]
    lines.append(f"precision: {model_precision(model)}")
    lines.append(f"nodes: {len(model.graph.node)} (" + ", ".join(f"{k} {v}" for k, v in ops.most_common()) + ")")
    return "\n".join(lines + _members_and_metadata(meta))


def _members_and_metadata(meta: dict) -> list[str]:
    lines = [f"members: {meta.get('n_members')}"]
    for k, m in enumerate(json.loads(meta.get("members", "[]"))):
        lines.append(f"  {k}: LSTM {m['input_size']}->{m['hidden_size']} x{m['num_layers']} "
                     f"{'bidirectional' if m['bidirectional'] else 'unidirectional'} -> {m['output_size']}")
    lines.append("metadata:")
    lines += [f"  {k}: {v}" for k, v in sorted(meta.items()) if k != "members"]
    return lines


def _describe_ort(path: Path) -> str:
    """An ORT-format file: onnx cannot parse it, so read what onnxruntime exposes of it."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's errors share no useful base class
        raise ValueError(f"{path} is not a loadable ORT-format file ({str(error).splitlines()[0][:200]})") from None
    model_meta = session.get_modelmeta()
    meta = dict(model_meta.custom_metadata_map)
    if "bagcompile_format" not in meta:
        raise ValueError(f"{path} is an ORT-format model but not a bagcompile ensemble "
                         "(no 'bagcompile_format' metadata)")

    def shape(arg):
        return "[" + ", ".join(str(d) for d in arg.shape) + "]"

    def dtype(arg):
        return arg.type.replace("tensor(", "").rstrip(")")

    lines = [f"file: {path} ({path.stat().st_size / 1024:.1f} KiB)",
             f"format: ORT (onnxruntime's flatbuffer format, for its minimal builds); producer: "
             f"{model_meta.producer_name} {meta.get('producer_version', '')}".rstrip(),
             "inputs:"]
    lines += [f"  {a.name}: {dtype(a)} {shape(a)}" for a in session.get_inputs()]
    lines.append("outputs:")
    lines += [f"  {a.name}: {dtype(a)} {shape(a)}" for a in session.get_outputs()]
    operators = path.with_suffix(".required_operators.config")
    if operators.is_file():  # "domain;opset;Op,Op" lines, written beside it by export --variants ort
        lines.append(f"operators ({operators.name}):")
        lines += [f"  {'  '.join(line.split(';', 2))}" for line in operators.read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    return "\n".join(lines + _members_and_metadata(meta))


def benchmark(paths, batches, length=None, threads=None, repeats=30, providers="cpu"):
    """Rows of a latency table, one per batch size and model.

    Several models (say ``m.onnx`` and its ``m.int8.onnx``) are timed side by side: each repeat
    calls every model once, in a rotating order, so a noisy machine slows them alike, and each
    row says how many times faster than the first model it is.
    """
    from bagcompile_runtime import EnsembleSession

    paths = [Path(p) for p in paths]
    sessions = [EnsembleSession(p, providers=providers, intra_op_threads=threads) for p in paths]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):  # same file names from different folders: show the paths
        names = [str(p) for p in paths]
    compare = len(sessions) > 1
    width = max(len(n) for n in names) if compare else 0
    model_head = f" {'model':<{width}}" if compare else ""
    yield (f"{'batch':>6} {'length':>6}{model_head} {'median ms':>10} {'p90 ms':>8} {'rows/s':>10}"
           + (f" {'vs first':>9}" if compare else ""))
    for batch in batches:
        # Every model sees the same rows when the shapes agree.
        inputs = [np.random.default_rng(0).normal(size=(batch, length or s.metadata.input_length or 50,
                                                        s.n_features)).astype(np.float32) for s in sessions]
        times = [[] for _ in sessions]
        for session, x in zip(sessions, inputs):
            session.run(x)  # warm-up
        for r in range(repeats):
            for k in range(len(sessions)):
                i = (k + r) % len(sessions)
                start = time.perf_counter()
                sessions[i].run(inputs[i])
                times[i].append(time.perf_counter() - start)
        medians = [float(np.median(t)) for t in times]
        for name, x, t, median in zip(names, inputs, times, medians):
            row = f"{batch:>6} {x.shape[1]:>6}"
            row += f" {name:<{width}}" if compare else ""
            row += f" {median * 1e3:>10.3f} {np.percentile(t, 90) * 1e3:>8.3f} {batch / median:>10.0f}"
            yield row + (f" {medians[0] / median:>8.2f}x" if compare else "")
    granted = [", ".join(s.providers) for s in sessions]
    if len(set(granted)) == 1:
        yield f"providers: {granted[0]}"
    else:
        yield "providers: " + "; ".join(f"{name}: {g}" for name, g in zip(names, granted))
