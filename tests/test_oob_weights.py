"""OOB-derived member weights: computed from each member's own out-of-bag score, used by the graph."""
import json

import numpy as np
import onnx
import pytest
import torch
from bagcompile_runtime import EnsembleSession
from click.testing import CliRunner
from safetensors.numpy import save_file

from bagcompile import BaggedLSTMClassifier
from bagcompile.bag import member_outputs
from bagcompile.cli import cli
from bagcompile.datasets import load_japanese_vowels
from bagcompile.estimators import as_padded
from bagcompile.oob import oob_member_weights
from bagcompile.workflow import VERIFY_FILE


@pytest.fixture(scope="module")
def vowels():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small LSTMs train faster on one thread on a 2-core machine
    X, y = load_japanese_vowels("train")
    est = BaggedLSTMClassifier(n_members=3, hidden_size=8, max_epochs=4, random_state=3).fit(X, y)
    torch.set_num_threads(threads)
    return est, X, y


def test_member_scores_are_each_members_own_out_of_bag_accuracy(vowels):
    est, X, y = vowels
    member_labels = est.member_predictions(X)
    for k, draw in enumerate(est.bootstrap_):
        expected = np.mean(member_labels[k, draw.out_of_bag] == y[draw.out_of_bag])
        assert est.oob_member_scores_[k] == pytest.approx(expected)


def test_oob_weights_reach_the_graph(vowels, tmp_path):
    est, X, _ = vowels
    weights = oob_member_weights("classification", est.oob_member_scores_, 9)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    X_test, _ = load_japanese_vowels("test")
    path = tmp_path / "weighted.onnx"
    result = est.export_onnx(path, X=X_test, member_weights="oob")
    assert all(r.ok for r in result.parity)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    np.testing.assert_allclose(json.loads(meta["member_weights"]), weights, rtol=1e-6)
    # The file's probabilities are the weighted mean of the members' probabilities.
    x, lengths = as_padded(X_test, 12)
    probs = member_outputs(est.bag_, torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    expected = np.tensordot(weights, probs, axes=1)
    got = EnsembleSession(path, providers="cpu").predict_proba(X_test)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("task,scores,n_classes,expected", [
    ("classification", [0.9, 0.5, 1 / 9], 9, [0.9 - 1 / 9, 0.5 - 1 / 9, 0.0]),
    ("regression", [1.0, 2.0, 4.0], None, [1.0, 0.5, 0.25]),
    ("regression", [1.0, float("nan")], None, [1.0, 1.0]),
    ("classification", [0.1, 0.05], 2, [1.0, 1.0]),  # no skill anywhere: uniform
])
def test_oob_weight_rule(task, scores, n_classes, expected):
    expected = np.asarray(expected) / np.sum(expected)
    np.testing.assert_allclose(oob_member_weights(task, scores, n_classes), expected, rtol=1e-6)


def test_cli_export_with_oob_weights_and_drop_policy(vowels, tmp_path):
    est, _, _ = vowels
    run_dir = est.save(tmp_path / "run")
    x, lengths = as_padded(load_japanese_vowels("test")[0][:64], 12)
    save_file({"x": x, "lengths": lengths}, str(run_dir / VERIFY_FILE))
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), "--weights", "oob",
                                      "--nonfinite", "drop"])
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["nonfinite_policy"] == "drop"
    np.testing.assert_allclose(json.loads(meta["member_weights"]),
                               oob_member_weights("classification", est.oob_member_scores_, 9), rtol=1e-6)
