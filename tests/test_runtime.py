"""Tests of the torch-free runtime (bagcompile_runtime) against tiny contract-conforming graphs.

The graphs are built here with onnx.helper (onnx is a test dependency, never a runtime one):
each member is a linear map of the mean of the valid time steps, so a numpy reference is exact.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bagcompile_runtime import EnsembleSession, errors, pad_sequences
from bagcompile_runtime import FORMAT_VERSION
from bagcompile_runtime.errors import (
    BagcompileRuntimeError,
    InvalidInputError,
    ModelFormatError,
    ProviderError,
)

F, K, C, P = 4, 3, 3, 2  # features, members, classes, regression targets
CLASSES = ["ae", "i", "u"]
RNG = np.random.default_rng(0)
W_CLS = RNG.normal(size=(F, K * C)).astype(np.float32)
W_REG = RNG.normal(size=(F, K * P)).astype(np.float32)


# ---------------------------------------------------------------- graph builders


def _mean_valid_steps(nodes):
    """Nodes computing `mean` [b, F] = mean of x over each row's valid steps."""
    nodes += [
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "one"], ["steps"], axis=0),
        helper.make_node("Range", ["zero", "steps", "one"], ["t"]),
        helper.make_node("Unsqueeze", ["lengths", "axis1"], ["len_col"]),
        helper.make_node("Less", ["t", "len_col"], ["valid"]),
        helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["valid_f", "axis2"], ["mask"]),
        helper.make_node("Mul", ["x", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("Cast", ["len_col"], ["len_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["total", "len_f"], ["mean"]),
    ]


def _constants(w, width):
    return [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array([0, K, width], np.int64), "member_shape"),
    ]


def _metadata(kind, over):
    task = kind
    meta = {
        "bagcompile_format": str(FORMAT_VERSION),
        "task": task,
        "n_members": str(K),
        "n_features": str(F),
        "feature_names": json.dumps([f"f{i}" for i in range(F)]),
        "aggregation": "soft_vote" if task == "classification" else "mean",
        "members": json.dumps([{"kind": "linear"}] * K),
        "input_length": "null",
        "versions": json.dumps({"bagcompile": "0.1.0", "onnx": onnx.__version__}),
        "scores": json.dumps({"accuracy": 0.9}),
    }
    if task == "classification":
        meta["classes"] = json.dumps(CLASSES)
    else:
        meta["target_names"] = json.dumps(["temp", "load"])
    meta.update(over)
    return {k: v for k, v in meta.items() if v is not None}


def build_model(kind="classification", members_output=False, metadata=True, **meta_over):
    """A graph of `kind`; keyword arguments override (or, with None, drop) metadata entries."""
    task, nodes = kind, []
    _mean_valid_steps(nodes)
    width = C if task == "classification" else P
    nodes += [
        helper.make_node("MatMul", ["mean", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "member_shape"], ["raw"]),
    ]
    out = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
    if task == "classification":
        nodes += [
            helper.make_node("Softmax", ["raw"], ["stack"], axis=-1),
            helper.make_node("ReduceMean", ["stack"], ["probabilities"], axes=[1], keepdims=0),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ]
        outputs = [
            out("probabilities", ["batch", C]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ]
    else:
        nodes += [
            helper.make_node("Identity", ["raw"], ["stack"]),
            helper.make_node("ReduceMean", ["stack"], ["prediction"], axes=[1], keepdims=0),
            helper.make_node("ReduceMean", ["stack"], ["centre"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["stack", "centre"], ["dev"]),
            helper.make_node("Mul", ["dev", "dev"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1], keepdims=0),
            helper.make_node("Sqrt", ["var"], ["std"]),
        ]
        outputs = [out("prediction", ["batch", P]), out("std", ["batch", P])]
    if members_output:  # members first, as bagcompile's compiler writes it
        nodes.append(helper.make_node("Transpose", ["stack"], ["members"], perm=[1, 0, 2]))
        outputs.append(out("members", [K, "batch", width]))
    graph = helper.make_graph(
        nodes,
        "tiny_bag",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", F]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        outputs,
        initializer=_constants(W_CLS if task == "classification" else W_REG, width),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name, model.producer_version = "bagcompile", "0.1.0"
    if metadata:
        helper.set_model_props(model, _metadata(kind, meta_over))
    onnx.checker.check_model(model)
    return model


def save(model, path):
    onnx.save(model, str(path))
    return path


# numpy reference of the same ensembles
def ref_members(rows, w, width):
    means = np.stack([np.asarray(r, np.float64).mean(axis=0) for r in rows])
    return (means @ w.astype(np.float64)).reshape(len(rows), K, width)


def ref_proba(rows):
    z = ref_members(rows, W_CLS, C)
    e = np.exp(z - z.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).mean(axis=1)


def ragged(n, rng, max_len=9):
    return [rng.normal(size=(int(rng.integers(1, max_len + 1)), F)).astype(np.float32)
            for _ in range(n)]


@pytest.fixture(scope="module")
def cls_path(tmp_path_factory):
    return save(build_model(), tmp_path_factory.mktemp("m") / "cls.onnx")


@pytest.fixture(scope="module")
def cls(cls_path):
    return EnsembleSession(cls_path, providers="cpu")


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    path = save(build_model("regression"), tmp_path_factory.mktemp("m") / "reg.onnx")
    return EnsembleSession(path, providers="cpu")


# ---------------------------------------------------------------- predictions


def test_classification_values_and_labels(cls):
    rows = ragged(12, np.random.default_rng(1))
    proba = cls.predict_proba(rows)
    assert proba.dtype == np.float32 and proba.shape == (12, C)
    np.testing.assert_allclose(proba, ref_proba(rows), rtol=1e-5, atol=1e-6)
    labels = cls.predict(rows)
    assert list(labels) == [CLASSES[i] for i in ref_proba(rows).argmax(axis=1)]
    out = cls.run(rows)
    assert set(out) == {"probabilities", "label"}
    assert out["label"].dtype == np.int64


def test_regression_values_and_std(reg):
    rows = ragged(7, np.random.default_rng(2))
    members = ref_members(rows, W_REG, P)
    pred, std = reg.predict(rows, return_std=True)
    np.testing.assert_allclose(pred, members.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, members.std(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(reg.predict(rows), pred)
    with pytest.raises(InvalidInputError, match="predict_proba needs a classification model"):
        reg.predict_proba(rows)


def test_ragged_equals_one_at_a_time(cls):
    rows = ragged(15, np.random.default_rng(3), max_len=20)
    together = cls.predict_proba(rows)
    alone = np.vstack([cls.predict_proba([row]) for row in rows])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)


def test_padded_array_with_lengths_equals_ragged(cls):
    rows = ragged(6, np.random.default_rng(4))
    x, lengths = pad_sequences(rows, F)
    x[0, lengths[0]:] = np.nan  # garbage in the padding is never read
    x[1, lengths[1]:] = 1e30
    np.testing.assert_allclose(cls.predict_proba(x, lengths), cls.predict_proba(rows), rtol=1e-6)
    # lengths on ragged rows cut each row
    cut = cls.predict_proba(rows, lengths=[1] * 6)
    np.testing.assert_allclose(cut, cls.predict_proba([r[:1] for r in rows]), rtol=1e-6)


def test_pad_sequences_layout():
    rows = [np.ones((2, F)), np.full((3, F), 2, dtype=np.int32)]
    x, lengths = pad_sequences(rows, F)
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (2, 3, F)
    assert lengths.dtype == np.int64 and lengths.tolist() == [2, 3]
    assert (x[0, 2] == 0).all() and (x[1] == 2).all()
    dense = np.arange(2 * 3 * F, dtype=np.float64).reshape(2, 3, F)
    x, lengths = pad_sequences(dense, F, lengths=np.array([3, 1]))
    assert x.dtype == np.float32 and lengths.tolist() == [3, 1]
    assert (x[1, 1:] == 0).all() and dense[1, 1:].all()  # padding zeroed in a copy only


def test_float64_and_int_input_are_converted(cls):
    rows = [np.round(r * 4) for r in ragged(5, np.random.default_rng(5))]
    expected = cls.predict_proba([r.astype(np.float32) for r in rows])
    np.testing.assert_array_equal(cls.predict_proba([r.astype(np.float64) for r in rows]), expected)
    np.testing.assert_array_equal(cls.predict_proba([r.astype(np.int64) for r in rows]), expected)
    np.testing.assert_array_equal(cls.predict_proba([r.tolist() for r in rows]), expected)
    dense = np.ones((2, 3, F), dtype=np.int32)
    np.testing.assert_array_equal(cls.predict_proba(dense),
                                  cls.predict_proba(dense.astype(np.float32)))


def test_classification_return_std(tmp_path):
    rows = ragged(5, np.random.default_rng(6))
    plain = EnsembleSession(save(build_model(), tmp_path / "a.onnx"), "cpu")
    with pytest.raises(InvalidInputError, match="needs a 'members' output"):
        plain.predict(rows, return_std=True)
    rich = EnsembleSession(save(build_model(members_output=True), tmp_path / "b.onnx"), "cpu")
    labels, std = rich.predict(rows, return_std=True)
    assert list(labels) == list(plain.predict(rows))
    z = ref_members(rows, W_CLS, C)
    e = np.exp(z - z.max(axis=2, keepdims=True))
    np.testing.assert_allclose(std, (e / e.sum(axis=2, keepdims=True)).std(axis=1), atol=1e-6)
    out = rich.run(rows)
    assert set(out) == {"probabilities", "label", "members"} and out["members"].shape == (K, 5, C)
    # chunks are joined along each output's batch axis (axis 1 for members)
    chunked = EnsembleSession(tmp_path / "b.onnx", "cpu", batch_size=2)
    np.testing.assert_allclose(chunked.run(rows)["members"], out["members"], rtol=1e-6)
    np.testing.assert_allclose(chunked.predict(rows, return_std=True)[1], std, rtol=1e-5)


def test_chunking_equals_unchunked(cls_path, cls):
    rows = ragged(10, np.random.default_rng(7), max_len=30)
    small = EnsembleSession(cls_path, "cpu", batch_size=3)
    # Chunks pad to their own width and run as smaller GEMMs: equal up to float32 rounding.
    a, b = small.run(rows), cls.run(rows)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a["label"], b["label"])
    x, lengths = pad_sequences(rows, F)
    np.testing.assert_array_equal(small.predict(x, lengths), cls.predict(x, lengths))
    with pytest.raises(InvalidInputError, match="batch_size"):
        EnsembleSession(cls_path, "cpu", batch_size=0)
    for bad in (True, 2.0, "8"):
        with pytest.raises(InvalidInputError, match="batch_size must be a positive integer"):
            EnsembleSession(cls_path, "cpu", batch_size=bad)
    numpy_int = EnsembleSession(cls_path, "cpu", batch_size=np.int64(3))
    assert numpy_int.batch_size == 3 and type(numpy_int.batch_size) is int
    np.testing.assert_array_equal(numpy_int.predict(x, lengths), cls.predict(x, lengths))


@pytest.mark.parametrize("layout", ["dense float64 with padding", "ragged float64 rows", "dense int32"])
def test_memory_beyond_the_input_is_bounded_by_the_chunk(cls_path, layout):
    """No whole-input copy: float32 conversion, zeroed padding and the NaN check run per chunk.
    (tracemalloc sees numpy's buffers; onnxruntime's own arena is per chunk too.)"""
    import tracemalloc

    rng = np.random.default_rng(3)
    n, steps, chunk = 4000, 40, 50
    lengths = rng.integers(1, steps + 1, size=n)
    if layout == "dense int32":
        X, lengths = rng.integers(-3, 4, size=(n, steps, F)).astype(np.int32), None
    else:
        X = rng.normal(size=(n, steps, F))
        if layout == "ragged float64 rows":
            X, lengths = [row[:k] for row, k in zip(X, lengths)], None
    size = sum(r.nbytes for r in X) if isinstance(X, list) else X.nbytes
    session = EnsembleSession(cls_path, "cpu", batch_size=chunk)
    reference = EnsembleSession(cls_path, "cpu").predict_proba(X[:200], None if lengths is None else lengths[:200])
    tracemalloc.start()
    try:
        proba = session.predict_proba(X, lengths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    per_chunk = chunk * steps * F * 4
    # A float32 copy of the whole input alone would be size / 2 (2.6 MB; 1.3 MB for int32 -> float32).
    assert peak < proba.nbytes * 3 + 20 * per_chunk < size / 2, (peak, size)
    np.testing.assert_allclose(proba[:200], reference, rtol=1e-6, atol=1e-7)


def test_nonfinite_row_is_named_across_chunks_and_memory_maps_work(cls_path, cls, tmp_path):
    x = np.random.default_rng(4).normal(size=(23, 6, F)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")  # read-only: padding must be zeroed in a copy
    small = EnsembleSession(cls_path, "cpu", batch_size=4)
    lengths = np.full(23, 6)
    lengths[::2] = 3
    np.testing.assert_allclose(small.predict_proba(mapped, lengths), cls.predict_proba(x, lengths),
                               rtol=1e-6, atol=1e-7)
    x[17, 1, 2] = np.inf
    with pytest.raises(InvalidInputError, match=r"NaN or Inf \(row 17\)"):
        small.predict(x)
    x[17, 1, 2] = 0.0
    x[16, 5, 0] = np.nan  # row 16 has 3 valid steps: a NaN in its padding is ignored
    assert small.predict(x, lengths).shape == (23,)

def test_threads_share_one_session(cls):
    """8 threads x 1,000 mixed-size predictions on one session equal the same calls made one at
    a time, bit for bit (each thread walks the batches from its own offset)."""
    rng = np.random.default_rng(8)
    batches = [ragged(int(rng.integers(1, 40)), rng, max_len=25) for _ in range(1000)]
    expected = [cls.predict_proba(b) for b in batches]
    failures = []

    def worker(offset):
        try:
            for i in range(len(batches)):
                j = (i + offset * 125) % len(batches)
                if not np.array_equal(cls.predict_proba(batches[j]), expected[j]):
                    failures.append(j)
        except Exception as exc:  # surfaced below; threads swallow exceptions otherwise
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_metadata_and_properties(cls):
    assert cls.task == "classification"
    assert cls.classes == tuple(CLASSES)
    assert cls.n_members == K and cls.n_features == F
    assert cls.feature_names == tuple(f"f{i}" for i in range(F))
    meta = cls.metadata
    assert meta.format_version == FORMAT_VERSION and meta.aggregation == "soft_vote"
    assert meta.producer_version == "0.1.0" and meta.scores == {"accuracy": 0.9}
    assert meta.input_length is None and len(meta.members) == K
    with pytest.raises(Exception):
        meta.task = "regression"  # frozen
    assert "CPUExecutionProvider" in repr(cls)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, lengths, message",
    [
        (np.zeros((32, 10)), None,
         r"expected X of shape \(batch, time, features\), got shape \(32, 10\)"),
        (np.zeros((2, 5, 7)), None, "expected 4 features, got 7"),
        ([np.zeros((3, F)), np.zeros((2, 7))], None, "row 1: expected 4 features, got 7"),
        ([np.zeros((3, F))] * 3 + [np.zeros((0, F))], None,
         r"row 3 is empty \(length 0\): every sequence needs at least one step"),
        ([np.zeros((3, F)), []], None, r"row 1 is empty \(length 0\)"),
        ([np.zeros(F)], None, r"row 0: expected a 2-D \(time, features\) array, got shape \(4,\)"),
        (np.zeros((5, 29, F)), [3, 3, 3, 3], "lengths has 4 entries for a batch of 5"),
        (np.zeros((5, 29, F)), [3, 3, 40, 3, 3], r"lengths\[2\]=40 is outside 1\.\.29"),
        (np.zeros((2, 29, F)), [0, 3], r"lengths\[0\]=0 is outside 1\.\.29"),
        (np.zeros((2, 29, F)), [2.5, 3], "lengths must be integers"),
        (np.zeros((2, 29, F)), [3.0, 1e20], r"lengths\[1\]=1e\+20 is outside 1\.\.29"),
        (np.zeros((2, 29, F)), np.array([3, 2**64 - 1], np.uint64), r"lengths\[1\]=18446744073709551615 is outside"),
        ([[[10 ** 400] * F]], None, "row 0 cannot be read as a numeric array: int too large"),
        (np.array([[[10 ** 400] * F]], dtype=object), None, "X cannot be read as a numeric array: int too large"),
        ([np.zeros((3, F)), np.zeros((2, F))], [3, 3], r"lengths\[1\]=3 is outside 1\.\.2"),
        ([], None, "empty batch: X has no sequences"),
        (np.zeros((0, 3, F)), None, "empty batch: X has no sequences"),
        (np.zeros((2, 0, F)), None, r"row 0 is empty \(length 0\)"),
        ([np.array([["a"] * F])], None, "row 0 must hold numbers"),
        ([[[1.0] * F, [2.0]]], None, "row 0 cannot be read as a numeric array"),
    ],
)
def test_bad_input_messages(cls, X, lengths, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        cls.predict(X, lengths)
    assert isinstance(info.value, ValueError) and isinstance(info.value, BagcompileRuntimeError)


def test_nonfinite_only_in_valid_part(cls_path, cls):
    rows = ragged(3, np.random.default_rng(9))
    rows[1] = rows[1].copy()
    rows[1][0, 0] = np.nan
    msg = r"X contains NaN or Inf \(row 1\); pass allow_nonfinite=True to run anyway"
    with pytest.raises(InvalidInputError, match=msg):
        cls.predict(rows)
    x, lengths = pad_sequences(rows, F, allow_nonfinite=True)
    with pytest.raises(InvalidInputError, match=msg):
        cls.predict(x, lengths)
    x = np.ones((2, 5, F))
    x[0, 3:] = np.inf  # only padding
    assert cls.predict(x, [3, 5]).shape == (2,)
    x[1, 0, 0] = 1e300  # float64 beyond float32 range becomes Inf
    with pytest.raises(InvalidInputError, match=r"beyond float32's range, ±3.4e38, that would become Inf \(row 1\)"):
        cls.predict(x, [3, 5])
    x[1, 0, 0] = np.nan  # a NaN before the big value is named as NaN
    x[1, 1, 0] = 1e300
    with pytest.raises(InvalidInputError, match=r"NaN or Inf \(row 1\)"):
        cls.predict(x, [3, 5])
    lenient = EnsembleSession(cls_path, "cpu", allow_nonfinite=True)
    assert np.isnan(lenient.predict_proba(rows)[1]).all()


def test_finite_inputs_that_overflow_inside_the_model_are_refused(cls_path, cls):
    """float32-finite values whose sum overflows give NaN/Inf outputs: an error, not NaN rows."""
    x = np.ones((5, 4, F), np.float32)
    x[3, :, 0] = np.finfo(np.float32).max  # 4 x 3.4e38 summed over the steps = Inf
    small = EnsembleSession(cls_path, "cpu", batch_size=2)
    message = r"outputs are not finite although the inputs are \(row 3, largest \|x\| = 3.4e\+38\)"
    for session in (cls, small):
        for method in (session.predict_proba, session.predict):  # predict asks for labels only
            with pytest.raises(InvalidInputError, match=message):
                method(x)
    lenient = EnsembleSession(cls_path, "cpu", allow_nonfinite=True).predict_proba(x)
    assert np.isnan(lenient[3]).all() and np.isfinite(np.delete(lenient, 3, axis=0)).all()


# ---------------------------------------------------------------- bad files


def test_model_format_errors(tmp_path):
    good = build_model().SerializeToString()
    (tmp_path / "trunc.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.onnx").write_text("definitely not a model")
    cases = {
        tmp_path / "missing.onnx": "model file not found",
        tmp_path / "trunc.onnx": r"cannot load .* as an ONNX model: .*\(truncated, or not an ONNX",
        tmp_path / "text.onnx": "cannot load .* as an ONNX model",
        save(build_model(metadata=False), tmp_path / "plain.onnx"):
            r"is not a bagcompile ensemble \(no 'bagcompile_format' metadata\)",
        save(build_model(bagcompile_format=str(FORMAT_VERSION + 1)), tmp_path / "new.onnx"):
            "upgrade|pip install -U bagcompile-runtime",
        save(build_model(task="regression", classes=json.dumps(CLASSES)), tmp_path / "mix.onnx"):
            "output 'prediction' should be tensor\\(float\\) of rank 2, got missing",
        save(build_model(n_features="9", feature_names=None), tmp_path / "feat.onnx"):
            "metadata says 9 features, the graph takes 4",
        save(build_model(classes=json.dumps(["a", "b"])), tmp_path / "cls.onnx"):
            "metadata lists 2 classes, the graph outputs 3",
        save(build_model(classes=None), tmp_path / "nocls.onnx"): "without 'classes' metadata",
        save(build_model(feature_names='["a"]'), tmp_path / "names.onnx"):
            "lists 1 feature_names for n_features=4",
        save(build_model(versions="{oops"), tmp_path / "json.onnx"): "'versions' is not valid JSON",
    }
    for path, message in cases.items():
        with pytest.raises(ModelFormatError, match=message) as info:
            EnsembleSession(path, providers="cpu")
        assert "\n" not in str(info.value), path  # one clear line


def test_model_from_bytes():
    data = build_model().SerializeToString()
    for model in (data, bytearray(data), memoryview(data)):
        session = EnsembleSession(model, "cpu")
        assert session.path is None and session.predict([np.ones((2, F))]).shape == (1,)


# ---------------------------------------------------------------- providers


def test_cpu_provider(cls_path):
    assert EnsembleSession(cls_path, providers="cpu").providers == ["CPUExecutionProvider"]
    assert EnsembleSession(cls_path, providers=["CPUExecutionProvider"]).providers == [
        "CPUExecutionProvider"]


def test_auto_provider(cls_path):
    import onnxruntime

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = EnsembleSession(cls_path, providers="auto")
    fell_back = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and (
        "CUDAExecutionProvider" not in session.providers)
    runtime_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime_warnings) == (1 if fell_back else 0)
    assert [w for w in caught if issubclass(w.category, UserWarning)] == []
    assert session.providers[-1] == "CPUExecutionProvider"


def test_cuda_provider_refused_without_cuda(cls_path):
    try:
        session = EnsembleSession(cls_path, providers="cuda")
    except ProviderError as exc:
        assert "CUDAExecutionProvider" in str(exc)
        assert isinstance(exc, RuntimeError)
    else:
        if "CUDAExecutionProvider" not in session.providers:
            pytest.fail("providers='cuda' silently ran without CUDA")
        pytest.skip("CUDA is really granted on this machine")


def test_granted_check_warns_for_auto_and_raises_for_explicit():
    # What happens when onnxruntime-gpu lists CUDA but the CUDA libraries are missing: the
    # session comes back on CPU. (Exercised here on the pure check; a CPU box cannot provoke it.)
    from bagcompile_runtime.providers import ProviderPlan, check_granted

    cpu_only = ["CPUExecutionProvider"]
    auto = ProviderPlan(["CUDAExecutionProvider", "CPUExecutionProvider"], False)
    with pytest.warns(RuntimeWarning, match="running on CPU") as caught:
        check_granted(auto, cpu_only)
    assert len(caught) == 1
    strict = ProviderPlan(["CUDAExecutionProvider", "CPUExecutionProvider"], True)
    granted = r"requested providers \['CUDAExecutionProvider', 'CPUExecutionProvider'\] but "
    with pytest.raises(ProviderError, match=granted + r"onnxruntime granted \[.CPUExecution"):
        check_granted(strict, cpu_only)
    check_granted(strict, ["CUDAExecutionProvider", "CPUExecutionProvider"])  # granted: silent


# What onnxruntime-gpu 1.31.1 wrote to descriptor 2 for one session on this CPU machine (captured).
ORT_GPU_WITHOUT_CUDA = (
    "\x1b[1;31m2026-12-04 00:47:01.166161668 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: "
    "libcublasLt.so.13: cannot open shared object file: No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-12-04 00:47:01.166225283 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
    "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and "
    "CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page (https://onnxruntime"
    ".ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), make sure they're in the PATH, "
    "and that your GPU is supported.\x1b[m\n"
)


def test_cuda_failure_records_become_one_reason():
    from bagcompile_runtime.providers import split_cuda_failure

    other = "2026-12-04 00:47:01.2 [W:onnxruntime:, graph.cc:5809 Clean] Removing initializer 'k'.\nmy app: hello\n"
    reason, rest = split_cuda_failure("libfoo: note\n" + ORT_GPU_WITHOUT_CUDA + other)
    assert reason == ("libcublasLt.so.13: cannot open shared object file: No such file or directory; "
                      "onnxruntime-gpu needs cuDNN 9.* and CUDA 13.*")
    assert rest == "libfoo: note\n" + other  # not ours to swallow
    assert split_cuda_failure("") == ("", "")
    assert split_cuda_failure("plain text\n") == ("", "plain text\n")
    # Another thread's output between and after the records is kept, in order.
    first, second = ORT_GPU_WITHOUT_CUDA.split("\x1b[0;93m")
    mixed = "hello\n" + first + "another library: important\n\x1b[0;93m" + second + "tail\n"
    assert split_cuda_failure(mixed) == (reason, "hello\nanother library: important\ntail\n")
    # An unfinished line of someone else's runs straight into a record: both survive.
    assert split_cuda_failure("partial" + ORT_GPU_WITHOUT_CUDA) == (reason, "partial")


def test_native_stderr_captures_descriptor_2_and_restores_it(capfdbinary):
    from bagcompile_runtime.providers import native_stderr, write_native_stderr

    with native_stderr() as captured:
        os.write(2, b"from C \xe9\n")  # not UTF-8: given back byte for byte
    assert captured == ["from C \udce9\n"]
    write_native_stderr(captured[0])
    assert capfdbinary.readouterr().err == b"from C \xe9\n"
    with pytest.raises(RuntimeError, match="boom"):
        with native_stderr() as captured:
            os.write(2, b"before the error\n")
            raise RuntimeError("boom")
    assert captured == ["before the error\n"]
    os.write(2, b"after\n")
    assert capfdbinary.readouterr().err == b"after\n"


def test_gpu_wheel_without_cuda_falls_back_with_one_warning(cls_path, tmp_path):
    """The real onnxruntime-gpu wheel on a machine without CUDA libraries (CI, this machine): it
    lists CUDA, fails to load it, and writes C++ records to descriptor 2. "auto" must give one
    RuntimeWarning carrying the reason and nothing else on stderr; "cuda" must raise. Installs the
    wheel (~260 MB) into a throwaway venv; skips when it cannot be fetched or CUDA really works."""
    venv = tmp_path / "gpu-venv"
    try:
        _check_gpu_wheel_fallback(venv, cls_path, tmp_path)
    finally:  # ~600 MB installed: do not leave it in pytest's kept temp folders
        shutil.rmtree(venv, ignore_errors=True)


def _check_gpu_wheel_fallback(venv, cls_path, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "onnxruntime-gpu", "numpy"],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"onnxruntime-gpu could not be installed here: {install.stderr.strip()[-300:]}")
    # Built from a copy: an in-tree build would leave runtime/build/ behind.
    source = shutil.copytree(Path(__file__).resolve().parents[1] / "runtime", tmp_path / "runtime",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
                   check=True, capture_output=True, timeout=300)
    x = np.random.default_rng(5).normal(size=(7, 6, F)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = f"""
        import json, warnings, numpy as np, onnxruntime
        from bagcompile_runtime import EnsembleSession
        from bagcompile_runtime.errors import ProviderError
        assert "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = EnsembleSession({str(cls_path)!r}, providers="auto")
        try:
            EnsembleSession({str(cls_path)!r}, providers="cuda")
            error = None
        except ProviderError as exc:
            error = str(exc)
        print(json.dumps({{"providers": session.providers, "error": error,
                          "warnings": [(w.category.__name__, str(w.message)) for w in caught],
                          "proba": session.predict_proba(np.load({str(tmp_path / "x.npy")!r})).tolist()}}))
    """
    result = subprocess.run([str(python), "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if "CUDAExecutionProvider" in report["providers"]:
        pytest.skip("CUDA really works on this machine")
    assert report["providers"] == ["CPUExecutionProvider"]
    assert len(report["warnings"]) == 1 and report["warnings"][0][0] == "RuntimeWarning", report["warnings"]
    message = report["warnings"][0][1]
    assert message.startswith("CUDAExecutionProvider is listed by onnxruntime but could not be used (")
    assert "cannot open shared object file" in message or "needs cuDNN" in message, message
    assert "running on CPU" in message
    assert report["error"] is not None and "granted ['CPUExecutionProvider']" in report["error"]
    assert result.stderr == "", result.stderr  # onnxruntime's C++ records were folded into the warning
    np.testing.assert_allclose(report["proba"], EnsembleSession(cls_path, "cpu").predict_proba(x),
                               rtol=1e-6, atol=1e-7)
    # No stderr at all (descriptor 2 closed, sys.stderr None): the session still opens.
    closed = subprocess.run(["sh", "-c", f"'{python}' -c 'import warnings; warnings.simplefilter(\"ignore\"); "
                             f"from bagcompile_runtime import EnsembleSession as E; "
                             f"print(E(\"{cls_path}\", \"auto\").providers)' 2>&-"],
                            capture_output=True, text=True, timeout=300)
    assert closed.returncode == 0 and closed.stdout.strip() == "['CPUExecutionProvider']", closed


@pytest.mark.parametrize("providers", ["tpu", "", [], ["FooExecutionProvider"], 3])
def test_unknown_provider(cls_path, providers):
    with pytest.raises(ProviderError, match="auto.*cpu.*cuda"):
        EnsembleSession(cls_path, providers=providers)


# ---------------------------------------------------------------- packaging promises


def _run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_no_torch_and_lazy_onnxruntime(cls_path):
    result = _run_python(f"""
        import sys
        import numpy as np
        import bagcompile_runtime
        assert "onnxruntime" not in sys.modules, "imported onnxruntime eagerly"
        session = bagcompile_runtime.EnsembleSession({str(cls_path)!r})
        labels = session.predict([np.ones((3, {F})), np.zeros((1, {F}))])
        assert labels.shape == (2,), labels
        assert "torch" not in sys.modules, "torch was imported"
        assert "onnx" not in sys.modules, "onnx was imported"
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_engine_message(cls_path):
    result = _run_python(f"""
        import sys
        sys.modules["onnxruntime"] = None  # what Python does for a package that is not installed
        from bagcompile_runtime import EnsembleSession, errors
        try:
            EnsembleSession({str(cls_path)!r})
        except errors.MissingEngineError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'bagcompile-runtime[cpu]'" in result.stdout
    assert "never both" in result.stdout


def test_public_names():
    import bagcompile_runtime

    for name in ["EnsembleSession", "errors", "pad_sequences", "__version__"]:
        assert name in bagcompile_runtime.__all__
    assert errors.ProviderError is ProviderError


def test_io_binding_equals_plain_run_on_the_real_model():
    """IO binding (the CUDA path: inputs and outputs stay on the device) gives the same numbers;
    on this CPU machine the device is the host, on a GPU machine benchmarks/gpu_check.sh runs it."""
    from pathlib import Path

    from bagcompile.datasets import load_japanese_vowels

    model = Path(__file__).resolve().parents[1] / "exported" / "japanese_vowels.onnx"
    session = EnsembleSession(model, providers="cpu")
    X, _ = load_japanese_vowels("test")
    x, lengths = session.device_inputs(X[:40])
    assert session.device == "cpu" and x.shape()[0] == 40
    first = session.run_on_device(x, lengths)
    again = session.run_on_device(x, lengths, names=["probabilities"])
    plain = session.run(X[:40])
    np.testing.assert_array_equal(first["label"].numpy(), plain["label"])
    np.testing.assert_allclose(first["probabilities"].numpy(), plain["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(again["probabilities"].numpy(), first["probabilities"].numpy())


def test_gpu_check_script_runs_as_a_cpu_dry_run():
    """benchmarks/gpu_check.py has only ever been run as this dry run (no GPU lent yet): the same
    steps with CPU in place of CUDA, so a lent GPU's minutes are not lost to a broken script."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--cpu-dry-run"],
                            capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: cpu (dry run)")
    assert lines[1].startswith("parity cpu (IO binding) vs CPU, 64 rows, lengths 1..60 ragged: max |diff| = ")
    assert float(lines[1].split("= ")[1].split()[0]) <= 1e-6  # same provider: equal up to rounding
    assert [line.split(" x ")[0] for line in lines[2:]] == ["batch    16", "batch    64"]
    assert all("rows/s" in line and line.endswith("x") for line in lines[2:])


def test_inference_benchmark_runs_and_checks_every_method():
    """benchmarks/inference.py --smoke: one tiny configuration through every method of the table
    (graph, torch loop, jit, torch.compile, one session per member, int8 variant, torch int8); the
    script itself asserts that each float32 method agrees with the graph before timing it."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "inference.py"), "--smoke", "--repeats", "2"],
                            capture_output=True, text=True, timeout=300, cwd=root / "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["members", "len", "batch", "thr"] and "torch/int8" in header
    cells = row.replace("|", " ").split()
    assert cells[:4] == ["2", "5", "3", "1"]
    ratios = [float(c[:-1]) for c in cells if c.endswith("x")]
    assert len(ratios) == 7  # floor, 4 vs the graph, 2 vs the int8 graph
    if "torch.compile unavailable here" in result.stderr:  # no C++ compiler: documented as nan
        assert np.isnan(ratios.pop(3))
    assert all(r > 0 for r in ratios)
    assert 0 < float(cells[-1]) < 1e-2  # int8 differs from float32, but only by quantisation error
