"""The compiled graph equals the PyTorch ensemble over the configuration space, in onnxruntime and
in onnx.reference (an independent implementation)."""
import json

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from bagcompile.bag import bag_forward
from bagcompile.compiler import MAX_OPSET, MIN_OPSET, ParityError, compile_bag, export_bag
from bagcompile.compiler.verify import compare_outputs, onnxruntime_outputs, verify_model
from bagcompile.members import check_lstm_supported

from bags import ragged_batch, random_bag

ATOL, RTOL = 1e-4, 1e-5


def run_reference(model, x, lengths):
    names = [o.name for o in model.graph.output]
    with np.errstate(over="ignore"):  # the reference sigmoid overflows harmlessly on saturated gates
        out = ReferenceEvaluator(model).run(None, {"x": x, "lengths": lengths})
    return dict(zip(names, out))


def assert_parity(bag, x, lengths, reference=True, opset=17):
    model = compile_bag(bag, opset=opset)
    expected = bag_forward(bag, x, lengths)
    report = compare_outputs(onnxruntime_outputs(model.SerializeToString(), x, lengths), expected, ATOL, RTOL)
    assert report.ok, f"onnxruntime: {report}"
    if reference:
        ref = compare_outputs(run_reference(model, x, lengths), expected, ATOL, RTOL)
        assert ref.ok, f"onnx.reference: {ref}"
    return report


@st.composite
def configurations(draw):
    task = draw(st.sampled_from(["classification", "regression"]))
    n_features = draw(st.integers(1, 8))
    members = draw(st.lists(st.tuples(st.integers(1, 24), st.integers(1, 3), st.booleans()), min_size=1, max_size=4))
    level_free = draw(st.booleans())
    subset = draw(st.one_of(st.none(), st.lists(st.integers(0, n_features - 1), min_size=1, max_size=n_features, unique=True)))
    kwargs = dict(task=task, n_features=n_features, members=members, level_free=level_free, feature_indices=subset,
                  n_outputs=draw(st.integers(2, 6)) if task == "classification" else draw(st.integers(1, 4)),
                  seed=draw(st.integers(0, 2**16)))
    if task == "regression":
        kwargs["reference_feature"] = draw(st.one_of(st.none(), st.integers(0, n_features - 1)))
    if draw(st.booleans()):
        kwargs["weights"] = draw(st.lists(st.floats(0.0, 5.0), min_size=len(members), max_size=len(members))
                                 .filter(lambda w: sum(w) > 0.1))
    if task == "classification":
        kwargs["vote"] = draw(st.sampled_from(["soft", "hard"]))
    return kwargs, draw(st.integers(1, 6)), draw(st.integers(1, 16))


@given(configurations())
def test_property_parity_onnxruntime_and_reference(config):
    kwargs, batch, time = config
    bag = random_bag(**kwargs)
    x, lengths = ragged_batch(bag, batch, time, seed=kwargs["seed"])
    assert_parity(bag, x, lengths)


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layers_and_directions(layers, bidirectional):
    bag = random_bag(members=((16, layers, bidirectional), (5, layers, bidirectional)), dropout=0.3)
    x, lengths = ragged_batch(bag, 9, 13, seed=layers)
    assert_parity(bag, x, lengths)


@pytest.mark.parametrize("batch", [1, 3, 17, 1024])
@pytest.mark.parametrize("time", [1, 7, 129])
def test_batch_and_sequence_lengths(batch, time):
    bag = random_bag(members=((12, 2, True), (8, 1, False)))
    x, lengths = ragged_batch(bag, batch, time, seed=batch + time)
    assert_parity(bag, x, lengths, reference=batch * time <= 17 * 129)


def test_sequence_of_ten_thousand_steps():
    bag = random_bag("regression", n_outputs=2, members=((8, 2, True),), reference_feature=0, level_free=True)
    x, lengths = ragged_batch(bag, 3, 10_000, seed=1, lengths=[10_000, 1, 4321])
    report = assert_parity(bag, x, lengths, reference=False)
    assert report.n_rows == 3


@pytest.mark.parametrize("hidden,features", [(1, 1), (512, 256)])
def test_extreme_widths(hidden, features):
    bag = random_bag(n_features=features, members=((hidden, 1, True),))
    x, lengths = ragged_batch(bag, 4, 6, seed=hidden)
    assert_parity(bag, x, lengths, reference=False)


def test_many_members_and_many_classes():
    bag = random_bag(n_outputs=100, members=tuple((4 + k % 5, 1 + k % 2, k % 3 == 0) for k in range(64)))
    x, lengths = ragged_batch(bag, 5, 8)
    assert_parity(bag, x, lengths, reference=False)


def test_sequence_alone_in_batch_and_padded_agree():
    bag = random_bag(members=((10, 2, True), (6, 3, False)))
    x, lengths = ragged_batch(bag, 6, 12, seed=3)
    data = compile_bag(bag).SerializeToString()
    together = onnxruntime_outputs(data, x, lengths)["probabilities"]
    for i, n in enumerate(lengths):
        alone = onnxruntime_outputs(data, x[i:i + 1, :n], lengths[i:i + 1])["probabilities"]
        longer = np.concatenate([x[i:i + 1, :n], np.full((1, 30, x.shape[2]), -7e3, np.float32)], axis=1)
        padded = onnxruntime_outputs(data, longer, lengths[i:i + 1])["probabilities"]
        np.testing.assert_allclose(alone[0], together[i], atol=1e-6)
        np.testing.assert_allclose(padded[0], together[i], atol=1e-6)


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, 18, MAX_OPSET])
def test_opsets_check_and_run(opset):
    bag = random_bag("regression", n_outputs=3, members=((6, 2, True), (4, 1, False)), reference_feature=1)
    model = compile_bag(bag, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    assert model.ir_version == onnx.helper.find_min_ir_version_for([model.opset_import[0]])
    x, lengths = ragged_batch(bag, 5, 9)
    assert_parity(bag, x, lengths, opset=opset)


def test_opset_out_of_range_is_refused():
    with pytest.raises(ValueError, match="opset must be in"):
        compile_bag(random_bag(), opset=MIN_OPSET - 1)


def test_graph_size_independent_of_length_and_linear_in_members():
    counts = []
    for n in (1, 2, 4, 8):
        bag = random_bag(members=((32, 2, True),) * n)
        model = compile_bag(bag)
        counts.append(len(model.graph.node))
        params = sum(p.numel() for m in bag.members for p in m.parameters())
        stored = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        size = len(model.SerializeToString())
        # Weights stored once (only small index constants besides); the file within 5 % of them.
        assert 0 <= stored - params < 200
        assert size <= 1.05 * params * 4, (size, params * 4)
    # Linear in members: a fixed part plus the same number of nodes per member (the Concat that
    # joins members appears from 2 on, hence the first step is one node larger).
    steps = np.diff(counts) / np.diff([1, 2, 4, 8])
    assert steps[1] == steps[2] and steps[0] == steps[1] + 1, counts
    assert not any(n.op_type in ("Loop", "Scan") for n in model.graph.node)
    # No empty optional-input names (float16 converters crash on them).
    assert all(name for n in model.graph.node for name in n.input)
    # The graph does not depend on the sequence length: one model runs every length.
    x, lengths = ragged_batch(bag, 2, 3)
    assert_parity(bag, x, lengths, reference=False)


def test_hard_vote_and_weighted_mean():
    bag = random_bag(n_outputs=4, members=((6, 1, False), (6, 1, True), (3, 2, False)), vote="hard",
                     weights=[0.2, 0.0, 0.8])
    x, lengths = ragged_batch(bag, 20, 10)
    assert_parity(bag, x, lengths)
    probs = bag_forward(bag, x, lengths)["probabilities"]
    assert set(np.round(np.unique(probs), 6)) <= {0.0, 0.2, 0.8, 1.0}


@pytest.mark.parametrize("weights,match", [([1, -1], ">= 0"), ([0, 0], "sum"), ([np.nan, 1], "finite"),
                                           ([1], "entries")])
def test_invalid_member_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        random_bag(members=((4, 1, False),) * 2, weights=weights)


def test_member_outputs_are_in_output_units():
    bag = random_bag("regression", n_outputs=2, members=((5, 1, False),) * 3, reference_feature=0)
    model = compile_bag(bag, member_outputs=True)
    x, lengths = ragged_batch(bag, 4, 7)
    out = onnxruntime_outputs(model.SerializeToString(), x, lengths)
    assert out["members"].shape == (3, 4, 2)
    np.testing.assert_allclose(out["members"].mean(0), out["prediction"], atol=1e-5)
    np.testing.assert_allclose(out["members"].std(0), out["std"], atol=1e-5)


def test_metadata_contract():
    bag = random_bag(n_outputs=3, members=((4, 1, False),) * 2)
    meta = {p.key: p.value for p in compile_bag(bag).metadata_props}
    assert meta["task"] == "classification" and meta["n_members"] == "2"
    assert json.loads(meta["classes"]) == ["c0", "c1", "c2"]
    assert json.loads(meta["feature_names"]) == ["f0", "f1", "f2", "f3"]
    assert set(json.loads(meta["versions"])) == {"bagcompile", "torch", "onnx"}


def test_proj_size_is_refused():
    with pytest.raises(ValueError, match="proj_size"):
        check_lstm_supported(torch.nn.LSTM(4, 8, proj_size=2, batch_first=True))
    bag = random_bag(members=((8, 1, False),))
    bag.members[0].lstm = torch.nn.LSTM(4, 8, proj_size=2, batch_first=True)
    with pytest.raises(ValueError, match="proj_size"):
        compile_bag(bag)


def test_export_refuses_to_write_on_parity_failure(tmp_path):
    bag = random_bag(members=((16, 3, True),))
    x, lengths = ragged_batch(bag, 64, 20)
    target = tmp_path / "model.onnx"
    with pytest.raises(ParityError, match="nothing was written"):
        export_bag(bag, target, verify_x=x, verify_lengths=lengths, atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []
    result = export_bag(bag, target, verify_x=x, verify_lengths=lengths)
    assert target.is_file() and all(r.max_abs_diff <= ATOL for r in result.parity)


def test_verification_catches_a_wrong_graph():
    right, wrong = random_bag(seed=1), random_bag(seed=2)
    x, lengths = ragged_batch(right, 8, 5)
    report = verify_model(compile_bag(wrong).SerializeToString(), right, x, lengths)
    assert not report.ok and report.max_abs_diff > 1e-3


def test_lengths_beyond_time_axis_fail_loudly_in_onnxruntime():
    bag = random_bag()
    x, _ = ragged_batch(bag, 2, 5)
    with pytest.raises(Exception, match="(?i)invalid|out of|bounds|range"):
        onnxruntime_outputs(compile_bag(bag).SerializeToString(), x, np.array([5, 6]))
