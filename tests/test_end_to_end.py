"""Real data through the whole product: fit -> export (verified) -> torch-free runtime predictions."""
import numpy as np
import pytest

from bagcompile import BaggedLSTMClassifier, BaggedLSTMRegressor
from bagcompile.datasets import ETTH1_COLUMNS, etth1_forecast_split, load_japanese_vowels
from bagcompile_runtime import EnsembleSession


@pytest.fixture(scope="module")
def vowels_model(tmp_path_factory):
    X, y = load_japanese_vowels("train")
    est = BaggedLSTMClassifier(n_members=3, hidden_size=16, max_epochs=12, random_state=1).fit(X, y)
    X_test, y_test = load_japanese_vowels("test")
    path = tmp_path_factory.mktemp("jv") / "jv.onnx"
    result = est.export_onnx(path, X=X_test)
    return est, path, result, X_test, y_test


def test_vowels_runtime_equals_estimator_on_the_real_test_set(vowels_model):
    est, path, result, X_test, y_test = vowels_model
    assert all(r.max_abs_diff <= 1e-4 and r.labels_equal for r in result.parity)
    assert sum(r.n_rows for r in result.parity) == 3 * 370
    session = EnsembleSession(path, providers="cpu")
    assert session.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(session.predict_proba(X_test), est.predict_proba(X_test), atol=1e-4, rtol=1e-5)
    labels = session.predict(X_test)
    np.testing.assert_array_equal(labels, est.predict(X_test))
    assert set(np.unique(labels)) <= set(range(1, 10))
    assert np.mean(labels == y_test) >= 0.85  # 3 small members, 12 epochs (observed 0.95)


def test_vowels_ragged_order_does_not_matter(vowels_model):
    est, path, _, X_test, _ = vowels_model
    session = EnsembleSession(path, providers="cpu")
    order = np.random.default_rng(0).permutation(len(X_test))[:50]
    shuffled = session.predict_proba([X_test[i] for i in order])
    np.testing.assert_allclose(shuffled, session.predict_proba(X_test)[order], atol=1e-6)


def test_etth1_forecaster_raw_units_in_and_out():
    X, y, spans = etth1_forecast_split("train", stride=16)
    est = BaggedLSTMRegressor(n_members=2, hidden_size=8, max_epochs=3, level_free=True, feature_indices=[6],
                              residual_feature=6, random_state=0)
    est.fit(X, y, time_spans=spans, feature_names=ETTH1_COLUMNS)
    X_test, y_test, _ = etth1_forecast_split("test")
    import tempfile, os
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "etth1.onnx")
        result = est.export_onnx(path, X=X_test[:400])
        session = EnsembleSession(path, providers="cpu")
        pred, std = session.predict(X_test, return_std=True)
    assert max(r.max_abs_diff for r in result.parity) <= 1e-4
    assert pred.shape == y_test.shape == (2857, 24) and np.all(std >= 0)
    np.testing.assert_allclose(pred, est.predict(X_test), atol=1e-4, rtol=1e-5)
    # Raw units: predictions stay near the last observed OT value (level-free + residual targets).
    assert np.median(np.abs(pred[:, 0] - X_test[:, -1, 6])) < 2.0
    assert list(session.target_names) == [f"y{i}" for i in range(24)]
