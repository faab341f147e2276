"""Aggregation inside the graph: weights, votes and the non-finite policy, equal to PyTorch."""

import numpy as np
import pytest
import torch
from bags import ragged_batch, random_bag

from bagcompile.bag import bag_forward
from bagcompile.compiler import compile_bag
from bagcompile.compiler.verify import compare_outputs, onnxruntime_outputs


def poison_member(bag, k, value=float("inf")):
    """Make member k's output non-finite for every row (its head bias becomes Inf or NaN)."""
    with torch.no_grad():
        bag.members[k].head.bias.fill_(value)


def run(bag, x, lengths):
    return onnxruntime_outputs(compile_bag(bag, member_outputs=True).SerializeToString(), x, lengths)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("weights", [None, [0.5, 0.2, 0.3]])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_drop_policy_leaves_out_the_failing_member_and_renormalises(task, weights, bad):
    kwargs = dict(n_outputs=3, members=((6, 1, False), (5, 2, True), (4, 1, False)), weights=weights)
    healthy = random_bag(task, **kwargs)
    x, lengths = ragged_batch(healthy, 7, 9)
    bag = random_bag(task, **kwargs)
    bag.nonfinite = "drop"
    poison_member(bag, 1, bad)
    got = run(bag, x, lengths)
    expected = bag_forward(bag, x, lengths)
    report = compare_outputs({k: got[k] for k in expected}, expected)
    assert report.ok, report
    # The same as a bag of the two healthy members with their weights renormalised.
    others = random_bag(task, **kwargs)
    others.members = [others.members[0], others.members[2]]
    if weights is not None:
        others.member_weights = np.array([0.5, 0.3], np.float32) / 0.8
    reference = bag_forward(others, x, lengths)
    main = "probabilities" if task == "classification" else "prediction"
    np.testing.assert_allclose(got[main], reference[main], atol=1e-5)
    assert np.all(np.isfinite(got[main]))
    assert not np.all(np.isfinite(got["members"][1]))


def test_propagate_policy_lets_non_finite_values_through():
    bag = random_bag("regression", n_outputs=2, members=((4, 1, False),) * 3)
    poison_member(bag, 0, float("nan"))
    x, lengths = ragged_batch(bag, 4, 5)
    got = run(bag, x, lengths)
    assert np.all(np.isnan(got["prediction"])) and np.all(np.isnan(bag_forward(bag, x, lengths)["prediction"]))


def test_drop_policy_row_where_every_member_fails_is_nan():
    bag = random_bag("regression", n_outputs=2, members=((4, 1, False),) * 2)
    bag.nonfinite = "drop"
    poison_member(bag, 0)
    poison_member(bag, 1)
    x, lengths = ragged_batch(bag, 3, 4)
    assert np.all(np.isnan(run(bag, x, lengths)["prediction"]))


def test_drop_policy_with_healthy_members_equals_plain_mean():
    bag = random_bag(n_outputs=4, members=((6, 1, False), (5, 2, True)))
    x, lengths = ragged_batch(bag, 9, 8)
    plain = run(bag, x, lengths)
    bag.nonfinite = "drop"
    dropped = run(bag, x, lengths)
    np.testing.assert_allclose(dropped["probabilities"], plain["probabilities"], atol=1e-6)
    meta = {p.key: p.value for p in compile_bag(bag).metadata_props}
    assert meta["nonfinite_policy"] == "drop"


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        random_bag().__class__(**{**random_bag().__dict__, "nonfinite": "ignore"})


def test_soft_vote_is_mean_of_probabilities_not_softmax_of_mean_logits():
    bag = random_bag(n_outputs=3, members=((5, 1, False), (7, 1, True)))
    x, lengths = ragged_batch(bag, 6, 7)
    got = run(bag, x, lengths)
    np.testing.assert_allclose(got["probabilities"], got["members"].mean(0), atol=1e-6)
    np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("form", ["gather", "sequence_lens"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_steps_give_nan_rows_like_pytorch(task, form, bad):
    """onnxruntime's LSTM kernel turns a NaN/Inf input into finite numbers; PyTorch gives NaN.
    The graph marks such rows NaN itself, in the valid steps of the columns the members read only."""
    bag = random_bag(task, n_features=5, n_outputs=3, members=((6, 1, False), (5, 2, True)),
                     level_free=True, feature_indices=[0, 2, 3],
                     reference_feature=0 if task == "regression" else None)
    x, lengths = ragged_batch(bag, 8, 9, lengths=[9, 4, 9, 1, 6, 9, 3, 9])
    x[1, 0, 2] = bad               # first step of a row of length 4
    x[2, 8, 3] = bad               # last step of a full row
    x[3, 0, 0] = bad               # the only step of a length-1 row
    x[4, 7, :] = np.nan            # padding of a row of length 6: no effect
    x[5, 4, 1] = bad               # a column the members do not read: no effect
    got = onnxruntime_outputs(compile_bag(bag, member_outputs=True, form=form).SerializeToString(), x, lengths)
    expected = bag_forward(bag, x, lengths)
    main = "probabilities" if task == "classification" else "prediction"
    bad_rows = [1, 2, 3]
    assert np.isnan(expected[main][bad_rows]).all()  # what PyTorch does
    assert np.isnan(got[main][bad_rows]).all() and np.isnan(got["members"][:, bad_rows]).all()
    good = [0, 4, 5, 6, 7]
    assert np.isfinite(got[main][good]).all()
    report = compare_outputs({k: got[k][..., good, :] if k == "members" else got[k][good] for k in expected},
                             {k: v[..., good, :] if k == "members" else v[good] for k, v in expected.items()})
    assert report.ok, report


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_runtime_accepts_a_dropped_member_and_refuses_a_nan_ensemble(task, tmp_path):
    """The runtime's overflow check reads the ensemble's own output: a member dropped under the
    'drop' policy (NaN in 'members') is fine; an ensemble output that is NaN is refused, for
    predict() (labels only) too."""
    from bagcompile_runtime import EnsembleSession, InvalidInputError

    bag = random_bag(task, n_outputs=3, members=((6, 1, False), (5, 1, False), (4, 1, False)))
    bag.nonfinite = "drop"
    poison_member(bag, 1)
    path = tmp_path / "drop.onnx"
    path.write_bytes(compile_bag(bag, member_outputs=True).SerializeToString())
    x, lengths = ragged_batch(bag, 4, 5)
    session = EnsembleSession(path, "cpu")
    out = session.run(x, lengths)
    assert not np.isfinite(out["members"][1]).any() and np.isfinite(out["members"][[0, 2]]).all()
    session.predict(x, lengths, return_std=True)
    if task == "classification":
        session.predict_proba(x, lengths)
    bag.nonfinite = "propagate"  # now the member's Inf reaches the ensemble's output
    path.write_bytes(compile_bag(bag).SerializeToString())
    session = EnsembleSession(path, "cpu", batch_size=3)
    with pytest.raises(InvalidInputError, match=r"outputs are not finite although the inputs are \(row 0, "
                                                r"largest \|x\| = .*non-finite weights"):
        session.predict(x, lengths)
    lenient = EnsembleSession(path, "cpu", allow_nonfinite=True)
    assert lenient.predict(x, lengths).shape[0] == 4
