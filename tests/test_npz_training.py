"""`bagcompile train FILE.npz`: a user's arrays (x, y, optional lengths, spans, names), on the real
data sets written out as NPZ files."""
import json

import numpy as np
import pytest

from bagcompile import recipes
from bagcompile.datasets import (ETTH1_COLUMNS, JAPANESE_VOWELS_FEATURES, etth1_forecast_split,
                                 load_japanese_vowels)
from bagcompile.persistence import load_run
from bagcompile.report import recipe_from_source, recipe_source
from bagcompile_runtime import pad_sequences
from test_cli import TINY, assert_one_line_error, invoke, ok, read_csv


@pytest.fixture(scope="module")
def vowels_npz(tmp_path_factory):
    X, y = load_japanese_vowels("train")
    x, lengths = pad_sequences(X, 12)
    x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 1e3  # garbage padding: lengths decide
    path = tmp_path_factory.mktemp("npz") / "vowels.npz"
    np.savez(path, x=x, lengths=lengths, y=np.array([f"spk{v}" for v in y]),
             feature_names=np.array(JAPANESE_VOWELS_FEATURES))
    return path, X, y


@pytest.fixture(scope="module")
def etth1_npz(tmp_path_factory):
    X, y, spans = etth1_forecast_split("train", input_length=24, horizon=6, stride=8)
    path = tmp_path_factory.mktemp("npz") / "etth1.npz"
    np.savez(path, x=X, y=y, spans=spans, feature_names=np.array(ETTH1_COLUMNS),
             target_names=np.array([f"OT+{h}" for h in range(1, 7)]))
    return path, X, y


def test_classification_recipe_splits_per_class_in_order(vowels_npz):
    path, X, y = vowels_npz
    recipe = recipes.npz_arrays(path)  # string labels: classification
    assert recipe.task == "classification" and recipe.feature_names == JAPANESE_VOWELS_FEATURES
    # 30 utterances per speaker -> 21 / 3 / 6, the earliest of each speaker in training.
    assert [len(p[0]) for p in (recipe.train, recipe.validation, recipe.test)] == [189, 27, 54]
    np.testing.assert_array_equal(recipe.train[0][0], X[0])  # cut to its length: no padding
    np.testing.assert_array_equal(recipe.test[0][-1], X[-1])
    assert recipe.test[1][-1] == "spk9" and set(recipe.validation[1]) == {f"spk{k}" for k in range(1, 10)}
    again = recipe_from_source(json.loads(json.dumps(recipe_source(recipe))))
    assert [len(p[0]) for p in (again.train, again.validation, again.test)] == [189, 27, 54]


def test_regression_recipe_keeps_time_order_and_spans(etth1_npz):
    path, X, y = etth1_npz
    recipe = recipes.npz_arrays(path)  # float targets: regression
    assert recipe.task == "regression" and recipe.target_names == [f"OT+{h}" for h in range(1, 7)]
    n = len(X)
    a, b = round(0.7 * n), round(0.8 * n)
    assert [len(recipe.train[0]), len(recipe.validation[0]), len(recipe.test[0])] == [a, b - a, n - b]
    train_spans, test_first = recipe.train[2], recipe.test[0][0]
    assert train_spans.shape == (a, 2) and np.all(np.diff(train_spans[:, 0]) > 0)
    np.testing.assert_array_equal(test_first, X[b])  # the latest windows are the test part


def test_cli_classification_from_npz(vowels_npz, tmp_path):
    path = vowels_npz[0]
    run_dir, model, out = tmp_path / "run", tmp_path / "m.onnx", tmp_path / "p.csv"
    result = ok(invoke("train", path, "--out", run_dir, *TINY, "--epochs", 3))
    scores = json.loads(result.stdout.partition("\n")[2])
    assert 1 / 9 < scores["test_accuracy"] <= 1 and "validation_accuracy" in scores
    ok(invoke("export", run_dir, "-o", model))
    ok(invoke("predict", model, path, "-o", out))
    header, rows = read_csv(out)
    assert header[:2] == ["id", "label"] and len(rows) == 270
    assert {r[1] for r in rows} <= {f"spk{k}" for k in range(1, 10)}


def test_cli_regression_from_npz_uses_the_block_bootstrap(etth1_npz, tmp_path):
    path = etth1_npz[0]
    run_dir = tmp_path / "run"
    result = ok(invoke("train", path, "--out", run_dir, *TINY, "--epochs", 2))
    scores = json.loads(result.stdout.partition("\n")[2])
    assert {"test_mse", "validation_mse", "oob"} <= set(scores)
    config = json.loads((run_dir / "bag.json").read_text())
    assert config["feature_names"] == ETTH1_COLUMNS and config["target_names"][0] == "OT+1"
    # The spans reached the trainer: out-of-bag windows share no time step with in-bag ones.
    _, draws, _ = load_run(run_dir)
    spans = recipes.npz_arrays(path).train[2]
    for draw in draws:
        inside = np.zeros(spans.max() + 1, bool)
        for first, stop in spans[np.unique(draw.in_bag)]:
            inside[first:stop] = True
        assert len(draw.out_of_bag) and not any(inside[a:b].any() for a, b in spans[draw.out_of_bag])
    # Forcing classification onto forecasting windows is refused before training.
    assert_one_line_error(invoke("train", path, "--out", tmp_path / "c", "--task", "classification"), 1,
                          "'spans' must be (1077, 2) and is for regression")


@pytest.mark.parametrize("arrays,needle", [
    (dict(x=np.zeros((4, 3, 2))), "lacks the array(s) 'y'"),
    (dict(x=np.zeros((4, 3)), y=np.arange(4)), "'x' must be a numeric (rows, time, features) array"),
    (dict(x=np.zeros((4, 3, 2)), y=np.arange(3)), "'y' has 3 rows for 4 rows of 'x'"),
    (dict(x=np.zeros((4, 3, 2)), y=np.arange(4), lengths=np.array([1, 2, 3, 4])), "'lengths' must be 4 integers in 1..3"),
    (dict(x=np.zeros((4, 3, 2)), y=np.zeros(4), spans=np.zeros((4, 3))), "'spans' must be (4, 2)"),
    (dict(x=np.zeros((4, 3, 2)), y=np.ones(4, int)), "one class only"),
    (dict(x=np.zeros((4, 3, 2)), y=np.array([1, "a", None, 2], dtype=object)), "object arrays (pickled)"),
])
def test_bad_npz_files(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert_one_line_error(invoke("train", path, "--out", tmp_path / "r"), 1, needle)
    assert not (tmp_path / "r").exists()


def test_csv_options_are_refused_for_npz(vowels_npz, tmp_path):
    assert_one_line_error(invoke("train", vowels_npz[0], "--out", tmp_path / "r", "--target", "y"), 2,
                          "--target is for CSV sources")
    assert_one_line_error(invoke("train", "japanese_vowels", "--out", tmp_path / "r", "--task", "regression"), 2,
                          "--task is for NPZ sources")
