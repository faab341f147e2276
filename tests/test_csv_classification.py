"""Classification from a user's CSV of labelled sequences (`bagcompile train FILE --sequence-column
ID --label-column LABEL`), on the real Japanese Vowels data written out as such a file."""
import csv
import json

import numpy as np
import pytest

from bagcompile import recipes
from bagcompile.datasets import JAPANESE_VOWELS_FEATURES, load_csv_sequences, load_japanese_vowels
from bagcompile.report import recipe_from_source, recipe_source
from test_cli import TINY, assert_one_line_error, invoke, ok, read_csv


def write_sequences(path, X, y, order=None, label=lambda v: f"speaker_{v}"):
    """One row per frame: utterance id, label, the 12 coefficients (exact float32 round trip)."""
    order = range(len(X)) if order is None else order
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utterance", *JAPANESE_VOWELS_FEATURES, "speaker"])
        for i in order:
            for frame in X[i]:
                writer.writerow([f"u{i}", *[repr(float(v)) for v in frame], label(y[i])])
    return path


@pytest.fixture(scope="module")
def jv_csv(tmp_path_factory):
    X, y = load_japanese_vowels("train")
    # Interleave the speakers (the bundled file is sorted by speaker): file order = i mod 9, then i.
    order = sorted(range(len(X)), key=lambda i: (i % 30, y[i]))
    return write_sequences(tmp_path_factory.mktemp("csv") / "vowels.csv", X, y, order), X, y, order


def test_sequences_round_trip_exactly(jv_csv):
    path, X, y, order = jv_csv
    seqs, labels, names, ids = load_csv_sequences(path, "utterance", "speaker")
    assert names == JAPANESE_VOWELS_FEATURES and len(seqs) == 270
    assert ids[:2] == [f"u{order[0]}", f"u{order[1]}"]
    for seq, label, i in zip(seqs, labels, order):
        np.testing.assert_array_equal(seq, X[i])
        assert label == f"speaker_{y[i]}"


def test_integer_labels_stay_integers(tmp_path):
    X, y = load_japanese_vowels("test")
    path = write_sequences(tmp_path / "t.csv", X[:40], y[:40], label=int)
    _, labels, _, _ = load_csv_sequences(path, "utterance", "speaker")
    assert labels.dtype == np.int64 and set(labels.tolist()) == {1, 2}


def test_each_class_splits_in_file_order(jv_csv):
    path, _, _, order = jv_csv
    recipe = recipes.csv_classification(path, "utterance", "speaker")
    # 30 sequences per speaker -> 21 / 3 / 6 (70/10/20), every speaker in every part.
    assert (len(recipe.train[0]), len(recipe.validation[0]), len(recipe.test[0])) == (189, 27, 54)
    for part, per_class in ((recipe.train, 21), (recipe.validation, 3), (recipe.test, 6)):
        values, counts = np.unique(part[1], return_counts=True)
        assert len(values) == 9 and set(counts) == {per_class}
    # No sequence of a speaker in training comes after one of that speaker in the test part.
    X = load_japanese_vowels("train")[0]
    position = {X[i].tobytes(): k for k, i in enumerate(order)}  # the utterances are all distinct
    for speaker in np.unique(recipe.train[1]):
        last_train = max(position[s.tobytes()] for s, v in zip(*recipe.train) if v == speaker)
        first_val = min(position[s.tobytes()] for s, v in zip(*recipe.validation) if v == speaker)
        last_val = max(position[s.tobytes()] for s, v in zip(*recipe.validation) if v == speaker)
        first_test = min(position[s.tobytes()] for s, v in zip(*recipe.test) if v == speaker)
        assert last_train < first_val <= last_val < first_test
    # source.json rebuilds the same parts.
    again = recipe_from_source(json.loads(json.dumps(recipe_source(recipe))))
    assert [len(p[0]) for p in (again.train, again.validation, again.test)] == [189, 27, 54]
    assert again.feature_names == JAPANESE_VOWELS_FEATURES


def test_cli_train_export_predict(jv_csv, tmp_path):
    path = jv_csv[0]
    run_dir, model, out = tmp_path / "run", tmp_path / "m.onnx", tmp_path / "pred.csv"
    result = ok(invoke("train", path, "--out", run_dir, "--sequence-column", "utterance",
                       "--label-column", "speaker", *TINY, "--epochs", 3))
    first, _, scores = result.stdout.partition("\n")
    assert first == f"trained 2 members on {path}; run saved to {run_dir}"
    scores = json.loads(scores)
    assert {"test_accuracy", "validation_accuracy", "oob", "test_member_accuracy_mean"} <= set(scores)
    assert 1 / 9 < scores["test_accuracy"] <= 1  # 2 tiny members, 3 epochs: above chance
    source = json.loads((run_dir / "source.json").read_text())
    assert source["sequence_column"] == "utterance" and source["label_column"] == "speaker"

    ok(invoke("export", run_dir, "-o", model))
    lines = ok(invoke("inspect", model)).stdout.splitlines()
    assert "  probabilities: float [batch, 9]" in lines and "  n_members: 2" in lines
    # predict reads the same file format: --sequence-column groups rows, the label column is ignored.
    ok(invoke("predict", model, path, "-o", out, "--sequence-column", "utterance"))
    header, rows = read_csv(out)
    assert header == ["id", "label", *[f"p_speaker_{k}" for k in range(1, 10)]]
    assert len(rows) == 270 and {r[1] for r in rows} <= {f"speaker_{k}" for k in range(1, 10)}
    truth = {f"u{i}": f"speaker_{v}" for i, v in enumerate(jv_csv[2])}
    accuracy = np.mean([truth[r[0]] == r[1] for r in rows])
    assert accuracy > 1 / 9
    assert np.allclose([sum(map(float, r[2:])) for r in rows], 1, atol=1e-4)


@pytest.mark.parametrize("edit,needle", [
    (lambda rows: rows[:3] + [rows[3][:-1] + ["speaker_9"]] + rows[4:], "changes label from 'speaker_1' to 'speaker_9'"),
    (lambda rows: rows[:2] + rows[30:31] + rows[2:30] + rows[31:], "are not contiguous"),
    (lambda rows: rows[:5] + [rows[5][:3] + ["n/a"] + rows[5][4:]] + rows[6:], "non-numeric value 'n/a'"),
    (lambda rows: [r[:-1] + ["speaker_1"] for r in rows], "one class only"),
])
def test_bad_files_fail_before_training(tmp_path, edit, needle):
    X, y = load_japanese_vowels("train")
    path = write_sequences(tmp_path / "v.csv", X[:60], y[:60], range(0, 60, 1))
    header, rows = read_csv(path)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *edit(rows)])
    line = assert_one_line_error(invoke("train", path, "--out", tmp_path / "r", "--sequence-column",
                                        "utterance", "--label-column", "speaker"), 1, needle)
    assert str(path) in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,code,needle", [
    (["--label-column", "speaker"], 2, "needs both --sequence-column and --label-column"),
    (["--sequence-column", "utterance", "--label-column", "speaker", "--target", "lpc_1"], 2, "not both"),
    (["--sequence-column", "utterance", "--label-column", "who"], 1, "--label-column 'who' is not in"),
    (["--sequence-column", "id", "--label-column", "speaker"], 1, "--sequence-column 'id' is not in"),
])
def test_bad_options(jv_csv, tmp_path, args, code, needle):
    assert_one_line_error(invoke("train", jv_csv[0], "--out", tmp_path / "r", *args), code, needle)
    assert not (tmp_path / "r").exists()


def test_bundled_sets_refuse_csv_options(tmp_path):
    assert_one_line_error(invoke("train", "japanese_vowels", "--out", tmp_path / "r", "--label-column", "x"), 2,
                          "--sequence-column/--label-column is for CSV sources")
