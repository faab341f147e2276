"""The training report (bagcompile.report, ``bagcompile report``) on tiny real runs.

One Japanese Vowels bag (3 members) and one ETTh1 bag (2 members) are trained once per module
with ``train_recipe``, which writes the ``source.json`` the report rebuilds the data from. The
members curve is checked against the scores the trainer saved (same numbers, computed apart).
"""
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from bagcompile import datasets, recipes
from bagcompile.cli import cli
from bagcompile.persistence import RunFormatError, load_run
from bagcompile.report import (
    SOURCE_FILE,
    all_member_outputs,
    load_recipe,
    members_curve,
    recipe_source,
    write_report,
)
from bagcompile.workflow import train_recipe

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def jv_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("jv") / "run"
    with warnings.catch_warnings():  # tiny bags leave some samples in every member's bag
        warnings.simplefilter("ignore", RuntimeWarning)
        train_recipe(recipes.japanese_vowels(), run_dir, n_members=3, hidden_size=8, max_epochs=3)
    return run_dir


@pytest.fixture(scope="module")
def ett_recipe():
    return recipes.etth1(stride=16)


@pytest.fixture(scope="module")
def ett_run(tmp_path_factory, ett_recipe):
    run_dir = tmp_path_factory.mktemp("ett") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        train_recipe(ett_recipe, run_dir, n_members=2, hidden_size=8, max_epochs=2)
    return run_dir


def check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert width >= 400 and height >= 200
    assert image[..., :3].std() > 0.01  # something is drawn
    return image


def check_html(page, pngs):
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for png in pngs:
        assert f'<img src="{png.name}"' in text, png.name  # relative links
    return text


# ------------------------------------------------------------------ Japanese Vowels (classification)


def test_jv_report_files(jv_run, tmp_path):
    written = write_report(jv_run, out_dir=tmp_path / "out")
    names = [p.name for p in written]
    assert names == ["learning_curves.png", "members_curve.png", "report.html"]  # no forecast
    assert all(p.parent == tmp_path / "out" and p.is_file() for p in written)
    for png in written[:2]:
        check_png(png)
    bag, _, _ = load_run(jv_run)
    text = check_html(written[-1], written[:2])
    assert f"<td>{bag.scores['test_accuracy']:.4f}</td>" in text
    assert "saturate" in text and "mean single member" in text
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_jv_default_out_dir(jv_run):
    written = write_report(jv_run)
    assert {p.parent for p in written} == {jv_run / "report"}


def test_jv_members_curve_matches_saved_scores(jv_run):
    bag, draws, record = load_run(jv_run)
    recipe = load_recipe(jv_run)
    curve = members_curve(bag, draws, recipe)
    assert list(curve.k) == [1, 2, 3] and curve.validation is None
    assert curve.metric == "error (1 - accuracy)"
    assert abs(curve.test[-1] - (1 - bag.scores["test_accuracy"])) < 1e-9
    assert abs(curve.mean_member_test - (1 - bag.scores["test_member_accuracy_mean"])) < 1e-9
    assert abs(curve.oob[-1] - (1 - record["oob_score"])) < 1e-9
    assert curve.test[0] == curve.member_test[0]  # k = 1 is the first member alone
    assert np.all((curve.oob_coverage > 0) & (curve.oob_coverage <= 1))
    assert np.all(np.diff(curve.oob_coverage) >= 0)

    # k = 1 out-of-bag, by hand: member 0 on its own out-of-bag samples only.
    X, y = recipe.train
    probs = all_member_outputs(bag, X)[0]
    oob = draws[0].out_of_bag
    labels = np.asarray(bag.classes)[probs[oob].argmax(-1)]
    assert abs(curve.oob[0] - np.mean(labels != np.asarray(y)[oob])) < 1e-12
    assert abs(curve.oob_coverage[0] - len(np.unique(oob)) / len(X)) < 1e-12


def test_jv_members_curve_uses_the_bags_weights(jv_run):
    import dataclasses

    bag, draws, _ = load_run(jv_run)
    recipe = load_recipe(jv_run)
    outputs = {"train": all_member_outputs(bag, recipe.train[0]), "test": all_member_outputs(bag, recipe.test[0])}
    only_first = dataclasses.replace(bag, member_weights=np.array([1.0, 0.0, 0.0]))
    curve = members_curve(only_first, draws, recipe, outputs)
    assert np.allclose(curve.test, curve.member_test[0])  # the other members weigh nothing


def test_source_record(jv_run, ett_run, ett_recipe):
    assert json.loads((jv_run / SOURCE_FILE).read_text()) == {
        "name": "japanese_vowels", "task": "classification", "n_train": 270, "n_validation": None, "n_test": 370}
    source = json.loads((ett_run / SOURCE_FILE).read_text())
    assert source == recipe_source(ett_recipe)
    assert (source["target"], source["input_length"], source["horizon"], source["stride"]) == ("OT", 96, 24, 16)


# ------------------------------------------------------------------ ETTh1 (forecasting)


def test_ett_report(ett_run, tmp_path):
    written = write_report(ett_run, out_dir=tmp_path)
    assert [p.name for p in written] == ["learning_curves.png", "members_curve.png", "forecast.png", "report.html"]
    for png in written[:3]:
        check_png(png)
    bag = load_run(ett_run)[0]
    text = check_html(written[-1], written[:3])
    assert f"<td>{bag.scores['test_mse']:.4f}</td>" in text
    assert "last 500 test windows" in text


def test_ett_members_curve_matches_saved_scores(ett_run, ett_recipe):
    bag, draws, _ = load_run(ett_run)
    curve = members_curve(bag, draws, ett_recipe)
    assert curve.metric == "MSE (training-std units)"
    s = bag.scores  # the trainer's numbers come from float32 predictions: agree to rounding
    assert curve.test[-1] == pytest.approx(s["test_mse"], rel=1e-5)
    assert curve.validation[-1] == pytest.approx(s["validation_mse"], rel=1e-5)
    assert curve.mean_member_test == pytest.approx(s["test_member_mse_mean"], rel=1e-5)
    assert curve.oob[-1] == pytest.approx(s["oob"], rel=1e-5)
    k_sat = curve.saturation_k()
    assert 1 <= k_sat <= 2
    assert abs(curve.test[k_sat - 1] - curve.test[-1]) <= 0.01 * curve.test[-1]


def test_csv_source_rebuilds(tmp_path):
    with open(datasets.__file__.replace("__init__.py", "ett/ETTh1.csv")) as src:
        lines = src.read().splitlines()[:801]
    csv_path = tmp_path / "series.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    recipe = recipes.csv_forecast(csv_path, "OT", 24, 4, stride=4)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        train_recipe(recipe, run_dir, n_members=2, hidden_size=4, max_epochs=1)
    source = json.loads((run_dir / SOURCE_FILE).read_text())
    assert source["path"] == str(csv_path.resolve()) and source["stride"] == 4
    rebuilt = load_recipe(run_dir)
    assert np.array_equal(rebuilt.train[0], recipe.train[0]) and np.array_equal(rebuilt.test[1], recipe.test[1])
    assert [p.name for p in write_report(run_dir)][2] == "forecast.png"


# ------------------------------------------------------------------ data that cannot be rebuilt


def test_missing_or_changed_source(jv_run, ett_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(jv_run, bare)
    (bare / SOURCE_FILE).unlink()
    with pytest.raises(RunFormatError, match="write_report\\(run_dir, recipe=...\\)"):
        write_report(bare, out_dir=tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    written = write_report(bare, recipe=recipes.japanese_vowels(), out_dir=tmp_path / "r2")
    assert written[-1].is_file()
    with pytest.raises(ValueError, match="recipe is for regression"):
        write_report(bare, recipe=recipes.etth1(stride=16))

    changed = tmp_path / "changed"
    shutil.copytree(ett_run, changed)
    source = json.loads((changed / SOURCE_FILE).read_text())
    (changed / SOURCE_FILE).write_text(json.dumps({**source, "stride": 8}))
    with pytest.raises(ValueError, match="no longer match the run"):
        write_report(changed)


# ------------------------------------------------------------------ command line


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_report(jv_run, tmp_path):
    result = invoke("report", jv_run, "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.stdout.strip().splitlines()
    assert lines == [str(tmp_path / "cli" / n) for n in ("learning_curves.png", "members_curve.png", "report.html")]
    assert all((tmp_path / "cli" / n).is_file() for n in ("learning_curves.png", "report.html"))


def test_cli_report_help():
    result = invoke("report", "--help")
    assert result.exit_code == 0 and "RUN_DIR" in result.stdout and "--out" in result.stdout
    assert "report" in invoke("--help").stdout


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_cli_report_not_a_run(tmp_path):
    one_line_error(invoke("report", tmp_path), "not a bagcompile run")
    assert not (tmp_path / "report").exists()


def test_cli_report_without_matplotlib(jv_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    one_line_error(invoke("report", jv_run, "--out", tmp_path / "x"), "pip install 'bagcompile[report]'")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ saturation, by hand


def curve_of(test, resolution=0.0):
    from bagcompile.report import MembersCurve

    test = np.asarray(test, dtype=np.float64)
    return MembersCurve(np.arange(1, len(test) + 1), test, None, None, None, test, "MSE", resolution)


def test_saturation_needs_the_curve_to_stay_close():
    assert curve_of([0.5, 0.3, 0.30, 0.301, 0.300]).saturation_k() == 2
    # k = 2 touches the final value, k = 3 leaves the band again: saturated only from k = 4.
    assert curve_of([0.5, 0.300, 0.35, 0.3005, 0.300]).saturation_k() == 4
    assert curve_of([0.5, 0.4, 0.3]).saturation_k() == 3          # only the full bag: no saturation
    assert curve_of([0.3]).saturation_k() == 1
    assert curve_of([0.5, np.nan]).saturation_k() is None


def test_saturation_of_accuracy_allows_one_test_sample():
    n = 370
    errors = np.array([17, 11, 9, 7, 8, 10, 8, 8, 10, 9]) / n   # wrong answers out of 370
    assert curve_of(errors).saturation_k() == 10                   # 1% of 9/370 is under one sample
    assert curve_of(errors, resolution=1 / n).saturation_k() == 5  # 8..10 wrong from k = 5 on
