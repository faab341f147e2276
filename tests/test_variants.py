"""Precision/format variants (int8 dynamic, float16, ORT format) of real exported bags.

One tiny Japanese Vowels bag (trained through the real workflow, so the CLI can export its run)
and one tiny ETTh1 forecaster; every variant is made from the verified fp32 export and measured
on the real test sets with the torch-free runtime. Tolerances are set from measured values
(quoted in the comments) with headroom.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bagcompile_runtime import EnsembleSession, pad_sequences
from click.testing import CliRunner

from bagcompile import BaggedLSTMRegressor, recipes
from bagcompile.cli import cli
from bagcompile.compiler.variants import (
    ORT_CONFIG_SUFFIX,
    to_float16,
    to_int8_dynamic,
    to_ort_format,
    variant_report,
)
from bagcompile.compiler.verify import ragged_probe
from bagcompile.datasets import (
    ETTH1_COLUMNS,
    etth1_forecast_split,
    load_etth1,
    load_japanese_vowels,
)
from bagcompile.inspection import describe
from bagcompile.workflow import export_run, train_recipe

ETTH1_SCALE = float(load_etth1()[0][:8640, 6].std())  # training part's OT std, as in the recipe
EXPORTED = Path(__file__).resolve().parents[1] / "exported"  # the committed 10-member reference files


def meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def jv(tmp_path_factory):
    """A tiny bag trained on Japanese Vowels as a saved run, exported (verified fp32), + variants."""
    base = tmp_path_factory.mktemp("jv")
    recipe = recipes.BUNDLED["japanese_vowels"]()
    train_recipe(recipe, base / "run", n_members=2, hidden_size=16, max_epochs=8, random_state=0)
    fp32 = base / "jv.onnx"
    export_run(base / "run", fp32)
    X, y = load_japanese_vowels("test")
    return {"dir": base, "fp32": fp32, "X": X, "y": y,
            "int8": to_int8_dynamic(fp32, base / "jv.int8.onnx"),
            "fp16": to_float16(fp32, base / "jv.fp16.onnx"),
            "ort": to_ort_format(fp32, base / "ort")}


@pytest.fixture(scope="module")
def etth1(tmp_path_factory):
    base = tmp_path_factory.mktemp("etth1")
    X, y, spans = etth1_forecast_split("train", stride=16)
    est = BaggedLSTMRegressor(n_members=2, hidden_size=16, max_epochs=3, level_free=True, feature_indices=[6],
                              residual_feature=6, random_state=0)
    est.fit(X, y, time_spans=spans, feature_names=ETTH1_COLUMNS)
    X_test, y_test, _ = etth1_forecast_split("test")
    fp32 = base / "etth1.onnx"
    est.export_onnx(fp32, X=X_test[:256])
    return {"dir": base, "fp32": fp32, "X": X_test, "y": y_test,
            "int8": to_int8_dynamic(fp32, base / "etth1.int8.onnx"),
            "fp16": to_float16(fp32, base / "etth1.fp16.onnx"),
            "ort": to_ort_format(fp32, base / "ort")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Variants of the committed reference ensembles (10 members, hidden 32): their files are
    mostly weights, unlike the tiny bags above, whose names, metadata and the quantization
    nodes outweigh the weights."""
    base = tmp_path_factory.mktemp("reference")
    out = {}
    for name in ("japanese_vowels", "etth1"):
        fp32 = EXPORTED / f"{name}.onnx"
        out[name] = {"fp32": fp32, "int8": to_int8_dynamic(fp32, base / f"{name}.int8.onnx"),
                     "fp16": to_float16(fp32, base / f"{name}.fp16.onnx")}
    return out


def weight_bytes(path):
    return sum(len(t.SerializeToString()) for t in onnx.load(str(path)).graph.initializer)


def assert_metadata_kept(fp32, variant, precision):
    before, after = meta(fp32), meta(variant)
    assert after.pop("precision") == precision
    assert after == before  # every contract key, nothing added by the tools (e.g. 'onnx.infer')
    model = onnx.load(str(variant))
    assert model.producer_name == "bagcompile"


# ------------------------------------------------------------------------------------ int8


def test_int8_has_dynamic_quantize_lstm_and_is_small(jv, etth1):
    for data in (jv, etth1):
        model = onnx.load(str(data["int8"]))
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
        assert "MatMulInteger" in ops  # the heads are quantized too
        ratio = weight_bytes(data["int8"]) / weight_bytes(data["fp32"])
        assert ratio < 0.5, ratio  # observed 0.35 (JV), 0.40 (ETTh1); whole files 0.64, 0.78
    assert_metadata_kept(jv["fp32"], jv["int8"], "int8-dynamic")
    assert_metadata_kept(etth1["fp32"], etth1["int8"], "int8-dynamic")
    assert json.loads(meta(jv["int8"])["classes"]) == list(range(1, 10))
    assert meta(etth1["int8"])["task"] == "regression"


def test_int8_accuracy_on_the_real_test_sets(jv, etth1):
    r = variant_report(jv["fp32"], jv["int8"], jv["X"], y=jv["y"])
    assert r["precision"] == "int8-dynamic" and r["n_rows"] == 370
    assert abs(r["accuracy_change"]) <= 0.02, r  # observed 0.0 (0.919 both)
    assert r["max_abs_diff"] <= 0.05, r  # observed 0.017
    assert r["label_agreement"] >= 0.98, r  # observed 0.997 (1 of 370 rows flips)
    r = variant_report(etth1["fp32"], etth1["int8"], etth1["X"], y=etth1["y"], target_scale=ETTH1_SCALE)
    assert r["n_rows"] == 2857
    assert abs(r["mse_change"]) <= 0.002, r  # observed -5e-7 (standardised MSE 0.032)
    assert r["max_abs_diff"] <= 1.0, r  # observed 0.065 degC (0.40 on the reference file)


def test_int8_padding_is_never_read(jv):
    """Dynamic quantization takes its range from the whole input tensor; the variant zeroes the
    padding first, so garbage past a row's length does not move the results (without that:
    up to 0.97 in a probability on the reference model)."""
    x, lengths = pad_sequences(jv["X"], 12)
    probe_x, probe_lengths = ragged_probe(x, lengths, seed=0)  # re-padded with N(0, 1000) garbage
    fp32 = EnsembleSession(jv["fp32"], providers="cpu")
    int8 = EnsembleSession(jv["int8"], providers="cpu")
    got = int8.predict_proba(probe_x, probe_lengths)
    want = fp32.predict_proba(probe_x, probe_lengths)
    assert np.abs(got - want).max() <= 0.05  # observed 0.023 (0.017 with clean padding)


# ------------------------------------------------------------------------------------ float16


def test_fp16_weights_are_half_and_integer_parts_untouched(jv, etth1):
    for data in (jv, etth1):
        fp32, fp16 = onnx.load(str(data["fp32"])), onnx.load(str(data["fp16"]))
        lstm_weights = {i for n in fp16.graph.node if n.op_type == "LSTM" for i in n.input[1:4] if i}
        head_weights = {i for n in fp16.graph.node if n.op_type == "MatMul" for i in n.input[1:]}
        types = {t.name: t.data_type for t in fp16.graph.initializer}
        assert lstm_weights and head_weights
        assert all(types[w] == onnx.TensorProto.FLOAT16 for w in lstm_weights | head_weights)
        # The raw-unit arithmetic (input scaling, target de-scaling) keeps float32 constants.
        assert types["inputs.mean"] == types["inputs.scale"] == onnx.TensorProto.FLOAT
        ints = lambda m: {t.name: t.SerializeToString() for t in m.graph.initializer
                          if t.data_type == onnx.TensorProto.INT64}
        assert ints(fp16).items() <= ints(fp32).items()
        io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]
        assert io(fp16) == io(fp32)  # x float32, lengths int64, outputs as in the contract
        onnx.checker.check_model(fp16, full_check=True)
        ratio = weight_bytes(data["fp16"]) / weight_bytes(data["fp32"])
        assert ratio < 0.6, ratio  # observed 0.51 (JV), 0.52 (ETTh1); whole files 0.61, 0.66
    assert_metadata_kept(jv["fp32"], jv["fp16"], "fp16")
    assert_metadata_kept(etth1["fp32"], etth1["fp16"], "fp16")


def test_fp16_results_on_the_real_test_sets(jv, etth1):
    r = variant_report(jv["fp32"], jv["fp16"], jv["X"], y=jv["y"])
    assert r["max_abs_diff"] <= 1e-2, r  # observed 3.3e-4
    assert r["label_agreement"] == 1.0 and r["accuracy_change"] == 0.0, r
    r = variant_report(etth1["fp32"], etth1["fp16"], etth1["X"], y=etth1["y"], target_scale=ETTH1_SCALE)
    # Raw degrees C: fp16 weights round at ~5e-4 relative. Observed 2.9e-3 degC (3e-4 in units
    # of the training std), std output 2.6e-3; MSE change +3e-7.
    assert r["max_abs_diff"] / ETTH1_SCALE <= 1e-2 and r["max_abs_diff_std"] / ETTH1_SCALE <= 1e-2, r
    assert abs(r["mse_change"]) <= 1e-4, r


def test_reference_ensembles_variants_size_and_accuracy(reference):
    """The committed 10-member files: all 370 test utterances, every 3rd of the 2,857 test windows
    (953; the full-set numbers are in the comments)."""
    jv, et = reference["japanese_vowels"], reference["etth1"]
    for data in (jv, et):
        assert data["int8"].stat().st_size < 0.5 * data["fp32"].stat().st_size  # observed 0.37, 0.39
        assert data["fp16"].stat().st_size < 0.6 * data["fp32"].stat().st_size  # observed 0.53, 0.53
    X, y = load_japanese_vowels("test")
    r8, r16 = (variant_report(jv["fp32"], jv[v], X, y=y) for v in ("int8", "fp16"))
    assert abs(r8["accuracy_change"]) <= 0.02 and r8["max_abs_diff"] <= 0.05, r8  # observed 0.0, 0.028
    assert r16["accuracy_change"] == 0.0 and r16["max_abs_diff"] <= 1e-2, r16  # observed 5.9e-4
    X, y, _ = etth1_forecast_split("test")
    X, y = X[::3], y[::3]
    r8, r16 = (variant_report(et["fp32"], et[v], X, y=y, target_scale=ETTH1_SCALE) for v in ("int8", "fp16"))
    # Full test set: int8 MSE 0.027814 -> 0.027825, max |diff| 0.40 degC; fp16 -> 0.027814, 4.2e-3 degC.
    assert abs(r8["mse_change"]) <= 0.002, r8  # observed +1.2e-5 on 0.0280, max |diff| 0.40 degC
    assert abs(r16["mse_change"]) <= 1e-4 and r16["max_abs_diff"] <= 0.05, r16  # observed +4e-7, 2.7e-3 degC


# ------------------------------------------------------------------------------------ ORT format


def test_ort_format_loads_in_the_runtime_and_matches(jv, etth1):
    for data, name in ((jv, "jv"), (etth1, "etth1")):
        files = data["ort"]
        assert files.model.name == f"{name}.ort" and files.config.name == f"{name}{ORT_CONFIG_SUFFIX}"
        config = files.config.read_text()
        assert "LSTM" in config and f"# - {name}.ort" in config
        session = EnsembleSession(files.model, providers="cpu")
        assert session.task == meta(data["fp32"])["task"]
        task_y = {"y": data["y"]} if name == "jv" else {"y": data["y"], "target_scale": ETTH1_SCALE}
        r = variant_report(data["fp32"], files.model, data["X"], **task_y)
        assert r["precision"] == "fp32"
        assert r["max_abs_diff"] <= 1e-5, r  # observed 0.0: same kernels, graph fused at level 'all'
    assert EnsembleSession(jv["ort"].model, providers="cpu").classes == tuple(range(1, 10))


# ------------------------------------------------------------------------------------ inspect + CLI


def test_describe_shows_the_precision(jv):
    assert "precision: fp32" in describe(jv["fp32"]).splitlines()
    assert "precision: int8-dynamic" in describe(jv["int8"]).splitlines()
    assert "precision: fp16" in describe(jv["fp16"]).splitlines()


def test_cli_export_writes_the_variants(jv, tmp_path):
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["export", str(jv["dir"] / "run"), "-o", str(out),
                                      "--variants", "fp16,int8,ort"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote {out} (")
    written = {"fp16": tmp_path / "model.fp16.onnx", "int8": tmp_path / "model.int8.onnx",
               "ort": tmp_path / "model.ort"}
    assert len(lines) == 4
    for line, (variant, path) in zip(lines[1:], written.items()):
        assert path.is_file(), variant
        assert line.startswith(f"wrote {path} (") and f"|{variant} - fp32| probabilities" in line, line
        assert "labels agree" in line and "over 370 held-out rows" in line, line
    assert (tmp_path / f"model{ORT_CONFIG_SUFFIX}").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.ort", f"model{ORT_CONFIG_SUFFIX}"])

    # inspect reads every variant, the ORT-format file through onnxruntime (onnx cannot parse it).
    for variant, precision in (("fp16", "fp16"), ("int8", "int8-dynamic")):
        shown = CliRunner().invoke(cli, ["inspect", str(written[variant])])
        assert shown.exit_code == 0 and f"precision: {precision}" in shown.stdout.splitlines(), shown.output
    shown = CliRunner().invoke(cli, ["inspect", str(written["ort"])])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1].startswith("format: ORT") and "  probabilities: float [batch, 9]" in lines
    assert "  precision: fp32" in lines and "members: 2" in lines
    assert any(line.startswith("  ai.onnx  ") and "LSTM" in line for line in lines)


def test_cli_export_rejects_an_unknown_variant(jv, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(jv["dir"] / "run"), "-o", str(tmp_path / "m.onnx"),
                                      "--variants", "fp16,bf16"])
    assert result.exit_code == 2 and "bf16" in result.stderr, result.output
    assert not any(tmp_path.iterdir())  # rejected before anything is exported
