"""End-to-end tests of the ``bagcompile`` command line on the bundled real data sets.

Every command runs in-process through click's CliRunner. Each bundled data set is trained
(a tiny bag: 2 members, hidden size 8, 1-2 epochs) and exported once per module, and the
resulting ONNX files are reused by the predict/inspect/bench tests. No mocks: the predictions
written by the CLI are checked against ``bagcompile_runtime.EnsembleSession`` on the same file.
"""
import csv
import json
from pathlib import Path
import zipfile

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from bagcompile.cli import cli
from bagcompile import datasets
from bagcompile.datasets import ETTH1_COLUMNS, JAPANESE_VOWELS_FEATURES, load_etth1, load_japanese_vowels
from bagcompile_runtime import EnsembleSession, pad_sequences

ETTH1_CSV = Path(datasets.__file__).parent / "ett" / "ETTh1.csv"
TINY = ["--members", "2", "--hidden", "8"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result):
    """The command succeeded (and did not just swallow an exception)."""
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.exception is None
    return result


def assert_one_line_error(result, exit_code, *needles):
    """Exit ``exit_code`` via click (no stray exception), one 'Error:' line on stderr, no traceback."""
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def write_etth1_head(path, n_rows):
    """The bundled ETTh1.csv's header and first ``n_rows`` data rows (date column included)."""
    with open(ETTH1_CSV, newline="") as src:
        lines = src.read().splitlines()
    path.write_text("\n".join(lines[: n_rows + 1]) + "\n")
    return path


# ------------------------------------------------------------------ fixtures: one bag per data set


@pytest.fixture(scope="module")
def jv(tmp_path_factory):
    """Japanese Vowels: trained and exported once; returns (run_dir, model_path)."""
    base = tmp_path_factory.mktemp("jv")
    run_dir, model = base / "run", base / "jv.onnx"
    result = ok(invoke("train", "japanese_vowels", "--out", run_dir, *TINY, "--epochs", 2, "--seed", 0))
    first, _, scores = result.stdout.partition("\n")
    assert first == f"trained 2 members on japanese_vowels; run saved to {run_dir}"
    scores = json.loads(scores)
    assert 0.0 <= scores["test_accuracy"] <= 1.0 and "oob" in scores
    for name in ("bag.json", "members.safetensors", "bootstrap.safetensors", "verify.safetensors"):
        assert (run_dir / name).is_file(), name
    result = ok(invoke("export", run_dir, "-o", model))
    assert result.stdout.startswith(f"wrote {model} (")
    assert model.is_file() and model.stat().st_size > 1000
    return run_dir, model


@pytest.fixture(scope="module")
def etth1(tmp_path_factory):
    """ETTh1 (input length 96, horizon 24): trained and exported once; returns (run_dir, model)."""
    base = tmp_path_factory.mktemp("etth1")
    run_dir, model = base / "run", base / "etth1.onnx"
    result = ok(invoke("train", "etth1", "--out", run_dir, *TINY, "--epochs", 1))
    assert result.stdout.startswith("trained 2 members on etth1;")
    scores = json.loads(result.stdout.partition("\n")[2])
    assert {"test_mse", "validation_mse", "persistence_mse", "linear_mse"} <= set(scores)
    ok(invoke("export", run_dir, "-o", model))
    assert model.is_file()
    return run_dir, model


@pytest.fixture(scope="module")
def jv_test():
    seqs, labels = load_japanese_vowels("test")
    return seqs, labels


# ------------------------------------------------------------------ help and version


@pytest.mark.parametrize("command,options", [
    (None, ["train", "export", "predict", "inspect", "bench", "reproduce"]),
    ("train", ["SOURCE", "--out", "--members", "--hidden", "--layers", "--epochs", "--batch-size",
               "--seed", "--target", "--input-length", "--horizon", "--stride"]),
    ("export", ["RUN_DIR", "--output", "--opset", "--member-outputs"]),
    ("predict", ["MODEL", "INPUT", "--output", "--sequence-column", "--window", "--providers"]),
    ("inspect", ["MODEL"]),
    ("bench", ["MODEL...", "--batch", "--length", "--threads", "--repeats", "--providers"]),
    ("reproduce", ["--out", "--runs", "--members"]),
])
def test_help(command, options):
    result = ok(invoke(*([command] if command else []), "--help"))
    assert result.stdout.startswith("Usage: ")
    for option in options:
        assert option in result.stdout, option


def test_version():
    from bagcompile import __version__

    assert ok(invoke("--version")).stdout.strip() == f"bagcompile, version {__version__}"


# ------------------------------------------------------------------ Japanese Vowels (classification)


def test_inspect_classifier(jv):
    _, model = jv
    out = ok(invoke("inspect", model)).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"file: {model} (")
    inputs = lines[lines.index("inputs:") + 1: lines.index("outputs:")]
    assert inputs == ["  x: float [batch, time, 12]", "  lengths: int64 [batch]"]
    outputs = lines[lines.index("outputs:") + 1: lines.index("outputs:") + 3]
    assert outputs == ["  probabilities: float [batch, 9]", "  label: int64 [batch]"]
    assert "members: 2" in lines
    assert sum(line.startswith("  ") and ": LSTM 12->8 x1 unidirectional -> 9" in line for line in lines) == 2
    assert "  n_members: 2" in lines and "  task: classification" in lines
    assert "  classes: [1, 2, 3, 4, 5, 6, 7, 8, 9]" in lines


def test_predict_npz(jv, jv_test, tmp_path):
    _, model = jv
    seqs, _ = jv_test
    x, lengths = pad_sequences(seqs, 12)
    npz, out = tmp_path / "test.npz", tmp_path / "pred.csv"
    np.savez(npz, x=x, lengths=lengths)
    result = ok(invoke("predict", model, npz, "-o", out))
    assert result.stdout.startswith(f"wrote 370 predictions to {out} (providers: CPUExecutionProvider")
    header, rows = read_csv(out)
    assert header == ["id", "label", *[f"p_{c}" for c in range(1, 10)]]
    assert len(rows) == 370
    assert [int(r[0]) for r in rows] == list(range(370))
    labels = np.array([int(r[1]) for r in rows])
    proba = np.array([[float(v) for v in r[2:]] for r in rows])
    assert set(labels) <= set(range(1, 10))
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)

    session = EnsembleSession(model, providers="cpu")
    np.testing.assert_array_equal(labels, session.predict(x, lengths))
    np.testing.assert_allclose(proba, session.predict_proba(x, lengths), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, np.arange(1, 10)[proba.argmax(axis=1)])


def test_predict_npz_without_lengths_equals_ragged(jv, jv_test, tmp_path):
    """x only (no 'lengths'): every row is taken at full length."""
    _, model = jv
    seqs, _ = jv_test
    same = [s for s in seqs if len(s) == 15][:5]
    assert len(same) == 5
    npz, out = tmp_path / "x_only.npz", tmp_path / "pred.csv"
    np.savez(npz, x=np.stack(same))
    ok(invoke("predict", model, npz, "-o", out))
    _, rows = read_csv(out)
    proba = np.array([[float(v) for v in r[2:]] for r in rows])
    expected = EnsembleSession(model, providers="cpu").predict_proba(same)
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)


def test_predict_csv_sequence_column(jv, jv_test, tmp_path):
    _, model = jv
    seqs, _ = jv_test
    picks = [200, 7, 365]  # ids in first-appearance order, not sorted
    path, out = tmp_path / "long.csv", tmp_path / "pred.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seq", *JAPANESE_VOWELS_FEATURES])
        for k in picks:
            for row in seqs[k]:
                writer.writerow([f"s{k}", *[repr(float(v)) for v in row]])
    ok(invoke("predict", model, path, "-o", out, "--sequence-column", "seq"))
    header, rows = read_csv(out)
    assert header[:2] == ["id", "label"] and len(header) == 11
    assert len(rows) == 3
    assert [r[0] for r in rows] == [f"s{k}" for k in picks]
    proba = np.array([[float(v) for v in r[2:]] for r in rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    expected = EnsembleSession(model, providers="cpu").predict_proba([seqs[k] for k in picks])
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)

    # Without --sequence-column the whole file is one sequence.
    ok(invoke("predict", model, path, "-o", out))
    _, rows = read_csv(out)
    assert len(rows) == 1 and rows[0][0] == "0"


def test_bench(jv):
    _, model = jv
    out = ok(invoke("bench", model, "--batch", 1, "--batch", 4, "--length", 10, "--repeats", 3)).stdout
    lines = out.strip().splitlines()
    assert lines[0].split() == ["batch", "length", "median", "ms", "p90", "ms", "rows/s"]
    assert [line.split()[:2] for line in lines[1:-1]] == [["1", "10"], ["4", "10"]]
    assert all(float(line.split()[2]) > 0 for line in lines[1:-1])
    assert lines[-1] == "providers: CPUExecutionProvider"


def test_bench_compares_a_model_with_its_int8_variant(jv, tmp_path):
    """Several models: one row per batch and model, timed in turn, with the speed-up over the first."""
    from bagcompile.compiler.variants import to_int8_dynamic

    _, model = jv
    int8 = to_int8_dynamic(model, tmp_path / "jv.int8.onnx")
    out = ok(invoke("bench", model, int8, "--batch", 1, "--batch", 8, "--length", 7, "--repeats", 3)).stdout
    lines = out.strip().splitlines()
    assert lines[0].split() == ["batch", "length", "model", "median", "ms", "p90", "ms", "rows/s", "vs", "first"]
    rows = [line.split() for line in lines[1:-1]]
    assert [r[:3] for r in rows] == [["1", "7", "jv.onnx"], ["1", "7", "jv.int8.onnx"],
                                     ["8", "7", "jv.onnx"], ["8", "7", "jv.int8.onnx"]]
    assert rows[0][-1] == rows[2][-1] == "1.00x"  # the first model against itself
    for first, other in ((rows[0], rows[1]), (rows[2], rows[3])):  # ratio = first's median / this one's
        assert float(other[-1][:-1]) == pytest.approx(float(first[3]) / float(other[3]), rel=0.02, abs=0.01)
    assert lines[-1] == "providers: CPUExecutionProvider"


def test_bench_bad_input(jv, tmp_path):
    _, model = jv
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert_one_line_error(invoke("bench", model, junk), 1, "junk.onnx")
    assert_one_line_error(invoke("bench"), 2, "MODEL")
    result = invoke("bench", model, "--providers", "cuda", "--repeats", 3, "--batch", 1)
    if result.exit_code == 0:  # a machine where CUDA really starts
        assert "CUDAExecutionProvider" in result.stdout.splitlines()[-1]
    else:
        assert_one_line_error(result, 1, "CUDAExecutionProvider")


# ------------------------------------------------------------------ ETTh1 (regression)


def test_inspect_regressor(etth1):
    _, model = etth1
    lines = ok(invoke("inspect", model)).stdout.splitlines()
    inputs = lines[lines.index("inputs:") + 1: lines.index("outputs:")]
    assert inputs == ["  x: float [batch, time, 7]", "  lengths: int64 [batch]"]
    outputs = lines[lines.index("outputs:") + 1: lines.index("outputs:") + 3]
    assert outputs == ["  prediction: float [batch, 24]", "  std: float [batch, 24]"]
    assert "members: 2" in lines and "  n_members: 2" in lines and "  task: regression" in lines
    assert "  input_length: 96" in lines


def test_predict_csv_window(etth1, tmp_path):
    _, model = etth1
    path, out = write_etth1_head(tmp_path / "slice.csv", 120), tmp_path / "forecast.csv"
    result = ok(invoke("predict", model, path, "-o", out, "--window", 96))
    assert result.stdout.startswith(f"wrote 25 predictions to {out}")
    header, rows = read_csv(out)
    targets = [f"OT+{h}" for h in range(1, 25)]
    assert header == ["id", *targets, *[f"{t}_std" for t in targets]]
    assert len(rows) == 25
    assert [int(r[0]) for r in rows] == list(range(95, 120))  # the row each window ends on
    values = np.array([[float(v) for v in r[1:]] for r in rows])
    pred, std = values[:, :24], values[:, 24:]
    assert (std >= 0).all() and np.isfinite(values).all()

    series = load_etth1()[0][:120]
    windows = np.stack([series[s:s + 96] for s in range(25)])
    exp_pred, exp_std = EnsembleSession(model, providers="cpu").predict(windows, return_std=True)
    np.testing.assert_allclose(pred, exp_pred, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, exp_std, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ a user's CSV


def test_train_export_predict_user_csv(tmp_path):
    data, run_dir, model = write_etth1_head(tmp_path / "mine.csv", 1500), tmp_path / "run", tmp_path / "m.onnx"
    result = ok(invoke("train", data, "--out", run_dir, "--target", "OT", "--input-length", 24,
                       "--horizon", 6, *TINY, "--epochs", 1))
    first, _, scores = result.stdout.partition("\n")
    assert first == f"trained 2 members on {data}; run saved to {run_dir}"
    scores = json.loads(scores)
    assert {"test_mse", "validation_mse", "persistence_mse"} <= set(scores)
    assert all(np.isfinite(v) and v >= 0 for v in scores.values())
    config = json.loads((run_dir / "bag.json").read_text())
    assert config["feature_names"] == ETTH1_COLUMNS and config["input_length"] == 24
    assert config["target_names"] == [f"OT+{h}" for h in range(1, 7)]

    ok(invoke("export", run_dir, "-o", model))
    lines = ok(invoke("inspect", model)).stdout.splitlines()
    assert "  prediction: float [batch, 6]" in lines and "  n_members: 2" in lines

    tail, out = write_etth1_head(tmp_path / "recent.csv", 30), tmp_path / "pred.csv"
    ok(invoke("predict", model, tail, "-o", out, "--window", 24))
    header, rows = read_csv(out)
    assert header[1:7] == [f"OT+{h}" for h in range(1, 7)] and header[7:] == [f"OT+{h}_std" for h in range(1, 7)]
    assert len(rows) == 7


def test_train_etth1_windowing_and_csv_features(tmp_path):
    """Forecasting options reach the bundled ETTh1 recipe and a CSV (no silent defaults)."""
    run_dir = tmp_path / "e"
    ok(invoke("train", "etth1", "--out", run_dir, "--input-length", 24, "--horizon", 6, "--stride", 16,
              *TINY, "--epochs", 1))
    config = json.loads((run_dir / "bag.json").read_text())
    assert config["input_length"] == 24 and config["target_names"] == [f"OT+{h}" for h in range(1, 7)]
    source = json.loads((run_dir / "source.json").read_text())
    assert (source["input_length"], source["horizon"], source["stride"]) == (24, 6, 16)

    data, run_dir = write_etth1_head(tmp_path / "d.csv", 800), tmp_path / "c"
    ok(invoke("train", data, "--out", run_dir, "--target", "OT", "--features", "OT, HUFL", "--input-length", 12,
              "--horizon", 3, *TINY, "--epochs", 1))
    assert json.loads((run_dir / "bag.json").read_text())["input_transform"]["feature_indices"] == [6, 0]
    assert json.loads((run_dir / "source.json").read_text())["features"] == ["OT", "HUFL"]


@pytest.mark.parametrize("args,code,needle", [
    (["japanese_vowels", "--horizon", 5], 2, "--horizon is for forecasting"),
    (["japanese_vowels", "--features", "lpc_1"], 2, "--features is for CSV sources"),
    (["CSV", "--target", "OT", "--features", "OT,oil"], 1, "feature column(s) 'oil' not found"),
    (["CSV", "--target", "OT", "--features", "OT,,HUFL"], 2, "comma list of column names"),
    (["CSV", "--sequence-column", "date", "--label-column", "OT", "--stride", 2], 2, "--stride is for forecasting"),
])
def test_train_options_that_do_not_apply_are_refused(tmp_path, args, code, needle):
    data = write_etth1_head(tmp_path / "d.csv", 300)
    args = [data if a == "CSV" else a for a in args]
    assert_one_line_error(invoke("train", *args, "--out", tmp_path / "r"), code, needle)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ bad input: one line, no traceback


def test_train_unknown_source(tmp_path):
    assert_one_line_error(invoke("train", "no_such_dataset", "--out", tmp_path / "r"), 2,
                          "'no_such_dataset'", "japanese_vowels", "etth1")
    assert not (tmp_path / "r").exists()


def test_train_csv_without_target(tmp_path):
    data = write_etth1_head(tmp_path / "d.csv", 200)
    assert_one_line_error(invoke("train", data, "--out", tmp_path / "r"), 2, "--target")
    assert not (tmp_path / "r").exists()


def test_train_csv_too_short_for_a_window_names_the_part(tmp_path):
    data = write_etth1_head(tmp_path / "d.csv", 100)
    assert_one_line_error(invoke("train", data, "--out", tmp_path / "r", "--target", "OT"), 1,
                          "the train part (rows 0..69 of 100) is too short for one window: it needs 120 rows")
    assert_one_line_error(invoke("train", data, "--out", tmp_path / "r", "--target", "OT", "--input-length", 12,
                                 "--horizon", 12), 1, "the validation part (rows 70..79 of 100)", "needs 12 rows")
    assert not (tmp_path / "r").exists()


def test_train_csv_target_not_in_file(tmp_path):
    data = write_etth1_head(tmp_path / "d.csv", 200)
    line = assert_one_line_error(invoke("train", data, "--out", tmp_path / "r", "--target", "oil_temp"), 1,
                                 "'oil_temp'")
    assert "OT" in line  # lists the columns that exist
    assert not (tmp_path / "r").exists()


def test_export_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "x.onnx"
    assert_one_line_error(invoke("export", tmp_path / "empty", "-o", out), 1, "not a bagcompile run")
    assert not out.exists()


def test_predict_garbage_model(jv, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    npz, out = tmp_path / "in.npz", tmp_path / "out.csv"
    np.savez(npz, x=np.zeros((2, 5, 12), np.float32))
    assert_one_line_error(invoke("predict", garbage, npz, "-o", out), 1, "garbage.onnx")
    assert not out.exists()
    assert_one_line_error(invoke("inspect", garbage), 1, "not a readable ONNX file")


def test_predict_csv_missing_feature_column(etth1, tmp_path):
    _, model = etth1
    full = write_etth1_head(tmp_path / "full.csv", 120)
    with open(full, newline="") as handle:
        rows = [[c for k, c in enumerate(r) if k != 6] for r in csv.reader(handle)]  # drop LULL
    assert "LULL" not in rows[0]
    path, out = tmp_path / "no_lull.csv", tmp_path / "out.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    assert_one_line_error(invoke("predict", model, path, "-o", out, "--window", 96), 1, "'LULL'")
    assert not out.exists()


def test_predict_npz_wrong_feature_count(jv, tmp_path):
    _, model = jv
    npz, out = tmp_path / "bad.npz", tmp_path / "out.csv"
    np.savez(npz, x=np.zeros((3, 10, 5), np.float32), lengths=np.full(3, 10))
    assert_one_line_error(invoke("predict", model, npz, "-o", out), 1, "12 features", "5")
    assert not out.exists()


def test_predict_nonfinite_input_needs_the_flag(jv, jv_test, tmp_path):
    _, model = jv
    x, lengths = pad_sequences(jv_test[0][:5], 12)
    x[1, 0, 3] = np.nan
    npz, out = tmp_path / "nan.npz", tmp_path / "out.csv"
    np.savez(npz, x=x, lengths=lengths)
    assert_one_line_error(invoke("predict", model, npz, "-o", out), 1, "NaN or Inf (row 1)",
                          "pass --allow-nonfinite to run anyway")
    assert not out.exists()
    ok(invoke("predict", model, npz, "-o", out, "--allow-nonfinite"))
    _, rows = read_csv(out)
    assert len(rows) == 5 and all(v == "nan" for v in rows[1][2:])
    assert rows[1][1] == "" and all(r[1] != "" for r in rows[:1] + rows[2:])  # no class for a NaN row
    assert all(np.isfinite(float(v)) for r in rows[:1] + rows[2:] for v in r[2:])
    # CSV: a 'nan' cell is refused with the same advice, and scored with the flag.
    csv_path = tmp_path / "nan.csv"
    csv_path.write_text(",".join(JAPANESE_VOWELS_FEATURES) + "\n" + ",".join(["0.5"] * 11 + ["nan"]) + "\n")
    assert_one_line_error(invoke("predict", model, csv_path, "-o", out), 1, "line 2", "is not finite",
                          "--allow-nonfinite")
    ok(invoke("predict", model, csv_path, "-o", out, "--allow-nonfinite"))
    # A finite number beyond float32's range is named as such, with no numpy warning line.
    csv_path.write_text(",".join(JAPANESE_VOWELS_FEATURES) + "\n" + ",".join(["0.5"] * 11 + ["-1e39"]) + "\n")
    assert_one_line_error(invoke("predict", model, csv_path, "-o", out), 1, "line 2",
                          "'-1e39' in column", "is not finite in float32 (beyond ±3.4e38)")


def test_predict_wrong_file_kinds_say_what_they_are(jv, jv_test, tmp_path):
    _, model = jv
    x, lengths = pad_sequences(jv_test[0][:5], 12)
    np.savez(tmp_path / "real.npz", x=x, lengths=lengths)
    binary = tmp_path / "data.csv"
    binary.write_bytes((tmp_path / "real.npz").read_bytes())
    assert_one_line_error(invoke("predict", model, binary, "-o", tmp_path / "o.csv"), 1,
                          "is not a text CSV file", "named .npz")
    text = tmp_path / "data.npz"
    text.write_text(",".join(JAPANESE_VOWELS_FEATURES) + "\n" + ",".join(["0.5"] * 12) + "\n")
    line = assert_one_line_error(invoke("predict", model, text, "-o", tmp_path / "o.csv"), 1,
                                 "not a usable NPZ file", "not a zip archive")
    assert "pickle" not in line
    # A spreadsheet's UTF-8 byte-order mark before the header is not part of the first column's name.
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.read_bytes())
    ok(invoke("predict", model, bom, "-o", tmp_path / "o.csv"))


def test_predict_progress_counts_without_a_made_up_total(jv, jv_test, tmp_path):
    _, model = jv
    csv_path, out = tmp_path / "seqs.csv", tmp_path / "o.csv"
    rows = [f"{i}," + ",".join(map(str, frame)) for i, seq in enumerate(jv_test[0][:7]) for frame in seq]
    csv_path.write_text("seq," + ",".join(JAPANESE_VOWELS_FEATURES) + "\n" + "\n".join(rows) + "\n")
    result = ok(invoke("predict", model, csv_path, "-o", out, "--sequence-column", "seq", "--chunk-size", 3))
    assert result.stderr.splitlines() == ["3 sequences scored", "6 sequences scored", "7 sequences scored"]


def test_predict_npz_without_x(jv, tmp_path):
    _, model = jv
    npz, out = tmp_path / "bad.npz", tmp_path / "out.csv"
    np.savez(npz, features=np.zeros((3, 10, 12), np.float32))
    assert_one_line_error(invoke("predict", model, npz, "-o", out), 1, "'x'", "features")
    assert not out.exists()


def test_predict_bad_csv_options(jv, etth1, tmp_path):
    path, out = write_etth1_head(tmp_path / "slice.csv", 50), tmp_path / "out.csv"
    assert_one_line_error(invoke("predict", etth1[1], path, "-o", out, "--window", 96), 1,
                          "--window 96", "50 rows")
    assert_one_line_error(invoke("predict", etth1[1], path, "-o", out, "--sequence-column", "nope"), 1,
                          "'nope'")
    assert not out.exists()


def test_inspect_onnx_that_is_not_an_ensemble(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "identity",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph), str(path))
    onnx.checker.check_model(onnx.load(str(path)))  # a valid ONNX model...
    assert_one_line_error(invoke("inspect", path), 1, "not a bagcompile ensemble")  # ...but not ours
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.zeros((1, 2, 1), np.float32))
    assert_one_line_error(invoke("predict", path, npz, "-o", tmp_path / "o.csv"), 1, "not a bagcompile ensemble")


def test_missing_input_file_is_a_usage_error(jv, tmp_path):
    """click's own argument checks: exit 2, one 'Error:' line that points to the command's help."""
    assert_one_line_error(invoke("predict", jv[1], tmp_path / "absent.npz", "-o", tmp_path / "o.csv"), 2,
                          "does not exist", "(see 'cli predict --help')")
    assert_one_line_error(invoke("train", "japanese_vowels", "--out", tmp_path / "r", "--members", 0), 2,
                          "'--members': 0 is not in the range")
    assert_one_line_error(invoke("no-such-command"), 2, "No such command")


def test_predict_truncated_npz_is_one_line(jv, tmp_path):
    _, model = jv
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert_one_line_error(invoke("predict", model, bad, "-o", tmp_path / "p.csv"), 1, "not a usable NPZ file")
    assert not (tmp_path / "p.csv").exists()


def test_target_option_is_refused_for_bundled_sets(tmp_path):
    result = invoke("train", "japanese_vowels", "--out", tmp_path / "r", "--target", "OT")
    assert_one_line_error(result, 2, "--target is for CSV sources")


def test_window_and_sequence_column_together_are_refused(etth1, tmp_path):
    _, model = etth1
    csv_path = tmp_path / "slice.csv"
    write_etth1_head(csv_path, 120)
    result = invoke("predict", model, csv_path, "-o", tmp_path / "p.csv", "--window", 96, "--sequence-column", "OT")
    assert_one_line_error(result, 1, "either --sequence-column or --window")


def test_written_files_get_the_usual_permissions(jv, tmp_path):
    import os
    run_dir, model = jv
    umask = os.umask(0)
    os.umask(umask)
    for path in (model, run_dir / "bag.json", run_dir / "members.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_predict_path_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, bagcompile.cli, bagcompile.predict_io; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_predict_streams_in_chunks_with_bounded_memory(etth1, tmp_path):
    """The whole bundled ETTh1.csv (17,420 rows) through --window 96 in chunks of 50 windows: the
    same numbers as one big chunk, and peak Python-side memory far below the windows' 46 MB."""
    import tracemalloc

    _, model = etth1
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    tracemalloc.start()
    ok(invoke("predict", model, ETTH1_CSV, "-o", small, "--window", 96, "--chunk-size", 50))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    windows = 17420 - 96 + 1
    assert peak < 8e6, peak  # all windows at once would be windows * 96 * 7 * 4 bytes = 46.8 MB
    ok(invoke("predict", model, ETTH1_CSV, "-o", big, "--window", 96, "--chunk-size", 100_000))
    _, rows_small = read_csv(small)
    _, rows_big = read_csv(big)
    assert len(rows_small) == windows and rows_small[0][0] == "95" and rows_small[-1][0] == "17419"
    np.testing.assert_allclose(np.array(rows_small, float), np.array(rows_big, float), rtol=1e-5, atol=1e-5)


def test_predict_rejects_non_contiguous_sequences(jv, jv_test, tmp_path):
    _, model = jv
    seqs, _ = jv_test
    path = tmp_path / "mixed.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seq", *JAPANESE_VOWELS_FEATURES])
        for key, k in (("a", 0), ("b", 1), ("a", 2)):
            for row in seqs[k]:
                writer.writerow([key, *row])
    result = invoke("predict", model, path, "-o", tmp_path / "p.csv", "--sequence-column", "seq")
    assert_one_line_error(result, 1, "not contiguous", "sort the file")
    assert not (tmp_path / "p.csv").exists()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_predict_streams_npz_with_bounded_memory(jv, jv_test, tmp_path, save):
    """'x' is read from the archive chunk by chunk: the whole test set repeated to 7,400 rows
    (float64, 31 MB) in chunks of 64, with peak Python-side memory far below the array's size,
    and the same numbers as scoring the array in memory."""
    import tracemalloc

    _, model = jv
    x, lengths = pad_sequences(jv_test[0], 12)
    x, lengths = np.tile(x.astype(np.float64), (20, 1, 1)), np.tile(lengths, 20)
    npz, out = tmp_path / "big.npz", tmp_path / "pred.csv"
    save(npz, x=x, lengths=lengths)
    tracemalloc.start()
    ok(invoke("predict", model, npz, "-o", out, "--chunk-size", 64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes / 8, (peak, x.nbytes)
    _, rows = read_csv(out)
    assert [int(r[0]) for r in rows] == list(range(len(x)))
    proba = np.array([[float(v) for v in r[2:]] for r in rows])
    expected = EnsembleSession(model, providers="cpu").predict_proba(x[:370], lengths[:370])
    np.testing.assert_allclose(proba[:370], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba[370:740], proba[:370], rtol=1e-6, atol=1e-7)


def assert_error_after_progress(result, *needles):
    """Progress lines for the chunks scored so far, then one 'Error:' line; no output written."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    *progress, last = result.stderr.strip().splitlines()
    assert all(line.endswith("sequences scored") for line in progress), result.stderr
    assert last.startswith("Error:") and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in last, (needle, last)


def test_predict_npz_errors_name_the_file_row(jv, jv_test, tmp_path):
    """Chunked scoring still names rows as the output's 'id' does (file rows, not chunk rows)."""
    _, model = jv
    x, lengths = pad_sequences(jv_test[0][:40], 12)
    out = tmp_path / "out.csv"
    x[33, 0, 3] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, lengths=lengths)
    assert_error_after_progress(invoke("predict", model, tmp_path / "inf.npz", "-o", out, "--chunk-size", 8),
                          "NaN or Inf (row 33)", "--allow-nonfinite")
    x[33, 0, 3] = 0
    x[27, :, 0] = np.finfo(np.float32).max  # finite, but the model's arithmetic overflows
    np.savez(tmp_path / "huge.npz", x=x, lengths=lengths)
    assert_error_after_progress(invoke("predict", model, tmp_path / "huge.npz", "-o", out, "--chunk-size", 8),
                                "outputs are not finite although the inputs are (row 27", "--allow-nonfinite")
    x[27, :, 0] = 0
    bad_lengths = lengths.copy()
    bad_lengths[21] = 0
    np.savez(tmp_path / "len.npz", x=x, lengths=bad_lengths)
    assert_error_after_progress(invoke("predict", model, tmp_path / "len.npz", "-o", out, "--chunk-size", 8),
                          "lengths[21]=0 is outside 1..")
    np.savez(tmp_path / "whole.npz", x=x, lengths=lengths)
    data = (tmp_path / "whole.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(cut, "w") as archive:  # a valid zip whose x.npy stops mid-array
        with zipfile.ZipFile(tmp_path / "whole.npz") as whole:
            archive.writestr("x.npy", whole.read("x.npy")[: len(data) // 2])
    assert_error_after_progress(invoke("predict", model, cut, "-o", out, "--chunk-size", 8),
                          "not a usable NPZ file", "'x' is truncated: its header says shape (40, 29, 12)")
    assert not out.exists()


def test_predict_npz_damage_and_misuse_are_one_line_errors(jv, jv_test, tmp_path):
    import io

    _, model = jv
    out = tmp_path / "out.csv"
    out.write_text("kept\n")  # a failed run must not touch an existing output

    def npz_with(name, raw):
        path = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", raw)
        return path

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 5, 12), np.float32))
    damaged = bytearray(buffer.getvalue())
    damaged[8] = 0x20  # the header's dict no longer parses (numpy raised tokenize.TokenError)
    assert_one_line_error(invoke("predict", model, npz_with("header", bytes(damaged)), "-o", out), 1,
                          "header.npz is not a usable NPZ file")
    negative = buffer.getvalue().replace(b"(3, 5, 12), ", b"(-3, 5, 12),")  # same header length
    assert negative != buffer.getvalue()
    assert_one_line_error(invoke("predict", model, npz_with("negative", negative), "-o", out), 1,
                          "'x' is damaged: its header says shape (-3, 5, 12)")
    for shape, needle in (((370, 12), "got shape (370, 12)"), ((0, 5, 12), "'x' has no rows")):
        np.savez(tmp_path / "shape.npz", x=np.zeros(shape, np.float32))
        assert_one_line_error(invoke("predict", model, tmp_path / "shape.npz", "-o", out, "--chunk-size", 7), 1,
                              needle)
    for option in (["--window", 5], ["--sequence-column", "id"]):
        assert_one_line_error(invoke("predict", model, tmp_path / "shape.npz", "-o", out, *option), 1,
                              "are for CSV input")
    assert out.read_text() == "kept\n"
    # .npy format 3.0 (numpy writes it for UTF-8 field names; np.load reads it) streams too.
    x, lengths = pad_sequences(jv_test[0][:9], 12)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(x[:, :15]), version=(3, 0))
    ok(invoke("predict", model, npz_with("v3", buffer.getvalue()), "-o", out, "--chunk-size", 4))
    _, rows = read_csv(out)
    expected = EnsembleSession(model, providers="cpu").predict_proba(x[:, :15])
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in rows]), expected, rtol=1e-5, atol=1e-6)


def test_failed_predict_leaves_no_new_folders_and_names_the_output(jv, tmp_path):
    _, model = jv
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 5, 3), np.float32))  # wrong feature count
    assert_one_line_error(invoke("predict", model, bad, "-o", tmp_path / "new" / "deeper" / "out.csv"), 1,
                          "12 features")
    assert not (tmp_path / "new").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((2, 5, 12), np.float32))
    line = assert_one_line_error(invoke("predict", model, good, "-o", blocker / "out.csv"), 1)
    assert f"cannot write {blocker / 'out.csv'}" in line and ".tmp" not in line, line


def test_sigterm_mid_predict_leaves_no_temporary_file(etth1, tmp_path):
    """kill / a scheduler's timeout unwinds like Ctrl-C: exit 143, no output, no .tmp file."""
    import signal
    import subprocess
    import sys
    import time

    _, model = etth1
    out = tmp_path / "pred.csv"
    process = subprocess.Popen([sys.executable, "-m", "bagcompile.cli", "predict", str(model), str(ETTH1_CSV),
                                "-o", str(out), "--window", "96", "--chunk-size", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".pred.csv.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until the temporary output exists: the write is under way
    assert list(tmp_path.glob(".pred.csv.*.tmp")), process.communicate()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_outputs_to_stdout_keep_the_summary_off_the_data(jv, jv_test, tmp_path):
    """-o /dev/stdout into a pipe: stdout is exactly the CSV (or the ONNX bytes), the summary goes
    to stderr; --variants needs a real file beside which to write."""
    import subprocess
    import sys

    run_dir, model = jv
    npz = tmp_path / "x.npz"
    x, lengths = pad_sequences(jv_test[0][:6], 12)
    np.savez(npz, x=x, lengths=lengths)
    bagcompile = [sys.executable, "-m", "bagcompile.cli"]
    piped = subprocess.run([*bagcompile, "predict", str(model), str(npz), "-o", "/dev/stdout"],
                           capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    rows = list(csv.reader(piped.stdout.splitlines()))
    assert rows[0][:2] == ["id", "label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(6)]
    assert "wrote 6 predictions to /dev/stdout" in piped.stderr
    exported = subprocess.run([*bagcompile, "export", str(run_dir), "-o", "/dev/stdout"], capture_output=True,
                              timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert onnx.load_model_from_string(exported.stdout).graph.node  # the bytes are the model itself
    assert b"wrote /dev/stdout" in exported.stderr
    assert_one_line_error(invoke("export", run_dir, "-o", "/dev/null", "--variants", "fp16"), 2,
                          "--variants writes files beside the output; /dev/null is not a regular file")


def test_row_renaming_survives_ids_with_backslashes(jv, jv_test, tmp_path):
    _, model = jv
    path = tmp_path / "seq.csv"
    rows = [["sid", *JAPANESE_VOWELS_FEATURES]]
    rows += [["ok", *["0.5"] * 12] for _ in range(4)]
    rows += [["C:\\data\\d1", *(["3.4028234e38"] + ["0.5"] * 11)] for _ in range(6)]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    assert_one_line_error(invoke("predict", model, path, "-o", tmp_path / "o.csv", "--sequence-column", "sid"),
                          1, "outputs are not finite although the inputs are (row C:\\data\\d1,")
