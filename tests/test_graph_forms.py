"""The two graph forms of the LSTM stack: "gather" (default, exact everywhere) and "sequence_lens"
(one LSTM node per layer fed ``sequence_lens``: exact in onnxruntime, not in onnx.reference)."""
import collections

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from bagcompile.bag import bag_forward
from bagcompile.compiler import MAX_OPSET, MIN_OPSET, compile_bag
from bagcompile.compiler.verify import compare_outputs, onnxruntime_outputs

from bags import ragged_batch, random_bag

ATOL, RTOL = 1e-4, 1e-5
FORM = "sequence_lens"


def run_reference(model, x, lengths):
    names = [o.name for o in model.graph.output]
    with np.errstate(over="ignore"):  # the reference sigmoid overflows harmlessly on saturated gates
        out = ReferenceEvaluator(model).run(None, {"x": x, "lengths": lengths})
    return dict(zip(names, out))


def assert_ort_parity(bag, x, lengths, opset=17):
    model = compile_bag(bag, opset=opset, form=FORM)
    report = compare_outputs(onnxruntime_outputs(model.SerializeToString(), x, lengths),
                             bag_forward(bag, x, lengths), ATOL, RTOL)
    assert report.ok, f"onnxruntime, {FORM}: {report}"
    return model


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layers_and_directions(layers, bidirectional):
    bag = random_bag(members=((16, layers, bidirectional), (5, layers, bidirectional)), dropout=0.3,
                     seed=layers)
    x, lengths = ragged_batch(bag, 9, 13, seed=layers + 10 * bidirectional)
    assert len(set(lengths.tolist())) > 1 and np.abs(x).max() > 100  # ragged, garbage padding
    model = assert_ort_parity(bag, x, lengths)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["LSTM"] == 2 * layers  # one node per layer, both directions inside it
    for node in model.graph.node:
        if node.op_type == "LSTM":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["direction"] == (b"bidirectional" if bidirectional else b"forward")
            assert len(node.input) == 5  # X W R B sequence_lens: no initial_h / initial_c
            assert all(node.input) and all(node.output)  # no empty ("") names


@pytest.mark.parametrize("batch,time", [(1, 1), (1, 9), (17, 1), (17, 11)])
def test_batch_and_sequence_lengths(batch, time):
    bag = random_bag(members=((12, 2, True), (8, 1, False), (6, 3, True)))
    x, lengths = ragged_batch(bag, batch, time, seed=batch + time)
    assert_ort_parity(bag, x, lengths)


def test_every_row_of_length_one_and_mixed_architectures_with_transforms():
    bag = random_bag("regression", n_features=5, n_outputs=2, level_free=True, feature_indices=[4, 0, 2],
                     reference_feature=1, members=((7, 1, True), (9, 2, False), (4, 3, True)), seed=5)
    x, lengths = ragged_batch(bag, 17, 6, seed=2, lengths=[1] * 17)
    assert_ort_parity(bag, x, lengths)
    x, lengths = ragged_batch(bag, 17, 6, seed=3)
    assert_ort_parity(bag, x, lengths)


@pytest.mark.parametrize("opset", [MIN_OPSET, MAX_OPSET])
def test_opsets_check_and_run(opset):
    bag = random_bag(n_outputs=4, members=((6, 2, True), (4, 1, False)), vote="hard", weights=[0.3, 0.7])
    model = compile_bag(bag, opset=opset, form=FORM)
    onnx.checker.check_model(model, full_check=True)
    x, lengths = ragged_batch(bag, 5, 9)
    assert_ort_parity(bag, x, lengths, opset=opset)


def test_onnx_reference_ignores_sequence_lens_but_onnxruntime_does_not():
    bag = random_bag(members=((12, 2, True), (8, 1, False)))
    x, lengths = ragged_batch(bag, 9, 13, seed=4)
    expected = bag_forward(bag, x, lengths)
    model = compile_bag(bag, form=FORM)
    ort = compare_outputs(onnxruntime_outputs(model.SerializeToString(), x, lengths), expected, ATOL, RTOL)
    reference = compare_outputs(run_reference(model, x, lengths), expected, ATOL, RTOL)
    assert ort.ok and ort.max_abs_diff <= 1e-4, ort
    # The reference evaluator runs over the garbage padding: the sequence_lens form is wrong there.
    assert reference.max_abs_diff > 1e-3, reference
    # ... while the gather form is exact in both.
    gather = compile_bag(bag, form="gather")
    assert compare_outputs(run_reference(gather, x, lengths), expected, ATOL, RTOL).ok
    # With no padding at all, the two runtimes agree on the sequence_lens form too.
    full = np.full_like(lengths, x.shape[1])
    assert compare_outputs(run_reference(model, x, full), bag_forward(bag, x, full), ATOL, RTOL).ok


def _per_member_nodes(form, layers, bidirectional):
    counts = [len(compile_bag(random_bag(members=((8, layers, bidirectional),) * n), form=form).graph.node)
              for n in (2, 3, 4)]
    assert counts[2] - counts[1] == counts[1] - counts[0]
    return counts[1] - counts[0], counts[0]


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_node_counts_of_both_forms(layers):
    # Per member, with the classification head (MatMul, Add, Softmax = 3 nodes):
    # gather, forward:         L LSTM + (L-1) Reshape + Reshape+Gather at the end
    # gather, bidirectional:   per inner layer 2 LSTM + 2 row reversals (4 each) + 2 Reshape + Concat,
    #                          last layer 2 LSTM + 1 reversal + 2 gathers (2 each) + Concat
    # sequence_lens, forward:  L LSTM + L Reshape
    # sequence_lens, bidir.:   L LSTM + L (Transpose + Reshape)
    expected = {("gather", False): 2 * layers + 4, ("gather", True): 13 * layers + 1,
                ("sequence_lens", False): 2 * layers + 3, ("sequence_lens", True): 3 * layers + 3}
    for (form, bidirectional), per_member in expected.items():
        assert _per_member_nodes(form, layers, bidirectional)[0] == per_member, (form, bidirectional)
    # The fixed part: sequence_lens needs only one Cast of the lengths (no gather indices here).
    model = compile_bag(random_bag(members=((8, layers, True),)), form=FORM)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Cast"] == 1 and ops["Gather"] == 0 and ops["LSTM"] == layers


def test_form_is_recorded_and_validated():
    bag = random_bag()
    for form in ("gather", FORM):
        meta = {p.key: p.value for p in compile_bag(bag, form=form).metadata_props}
        assert meta["graph_form"] == form
    assert {p.key: p.value for p in compile_bag(bag).metadata_props}["graph_form"] == "gather"
    with pytest.raises(ValueError, match="graph form"):
        compile_bag(bag, form="packed")
