"""A training report for a saved run: PNG figures and one HTML page (``bagcompile report RUN_DIR``).

* ``learning_curves.png``: each member's training and out-of-bag loss per epoch, best epoch marked.
* ``members_curve.png``: the error of the first k members' ensemble against k (out-of-bag,
  validation, test), beside the mean single member: does bagging help, and where does it saturate.
* ``forecast.png`` (regression): the test period of the first target, with the ensemble mean and
  a band of ±2 member standard deviations.
* ``report.html``: the run's scores and parameters, two sentences computed from the curves, and
  the figures.

A run directory holds the model, not the data; the data are rebuilt from ``source.json``, which
:func:`bagcompile.workflow.train_recipe` writes beside the run (or pass ``recipe=``).
matplotlib is an optional extra (``pip install 'bagcompile[report]'``) imported only when
figures are drawn, always on the Agg canvas (no pyplot, no global backend change).
"""
from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import recipes
from .atomic import atomic_write_bytes
from .bag import Bag, member_outputs
from .bootstrap import BootstrapDraw
from .estimators import as_padded
from .persistence import RunFormatError, load_run
from .recipes import Recipe

SOURCE_FILE = "source.json"
FORECAST_WINDOWS = 500      # test windows shown in forecast.png (the last ones)
SATURATION_TOLERANCE = 0.01  # relative: "within 1% (or one test sample) of the full bag's test error"
MAX_MEMBER_PANELS = 16      # learning_curves.png draws at most this many members
_CHUNK = 4096               # rows per member_outputs call (bounds memory on long test parts)


# --- where the data came from -------------------------------------------------------------------
def recipe_source(recipe: Recipe) -> dict:
    """What ``source.json`` records: enough to rebuild ``recipe`` later, and its part sizes to
    check that the rebuilt data are the data the run was trained on."""
    source = {"name": recipe.name, "task": recipe.task, "n_train": len(recipe.train[0]),
              "n_validation": None if recipe.validation is None else len(recipe.validation[0]),
              "n_test": len(recipe.test[0])}
    if recipe.task == "regression" and len(recipe.train) == 3 and "residual_feature" in recipe.params:
        X, y, spans = recipe.train[0], np.asarray(recipe.train[1]), np.asarray(recipe.train[2])
        t_idx = int(recipe.params["residual_feature"])
        indices = recipe.params.get("feature_indices") or [t_idx]
        source.update(target=recipe.feature_names[t_idx], input_length=int(np.shape(X)[1]),
                      horizon=int(y.reshape(len(y), -1).shape[1]),
                      stride=int(spans[1, 0] - spans[0, 0]) if len(spans) > 1 else 1,
                      features=[recipe.feature_names[i] for i in indices])
    source.update(recipe.source_options)
    if recipe.name not in recipes.BUNDLED and Path(recipe.name).is_file():
        source["path"] = str(Path(recipe.name).resolve())
    return source


def recipe_from_source(source: dict) -> Recipe:
    """Rebuild the recipe a run was trained on from its ``source.json`` record."""
    name = source.get("name")
    if name == "japanese_vowels":
        recipe = recipes.japanese_vowels()
    elif name == "etth1":
        recipe = recipes.etth1(source["input_length"], source["horizon"], source["stride"], source.get("features"))
    elif source.get("path"):
        if not Path(source["path"]).is_file():
            raise FileNotFoundError(f"the run's training data {source['path']} is gone; the report "
                                    "needs it (from Python: write_report(run_dir, recipe=...))")
        if source.get("format") == "npz":
            recipe = recipes.npz_arrays(source["path"], source["task"])
        elif source["task"] == "classification":
            recipe = recipes.csv_classification(source["path"], source["sequence_column"],
                                                source["label_column"], source.get("features"))
        else:
            recipe = recipes.csv_forecast(source["path"], source["target"], source["input_length"],
                                          source["horizon"], source["stride"], source.get("features"))
    else:
        raise ValueError(f"cannot rebuild the run's data source {name!r} (not a bundled data set or "
                         "a CSV file); from Python: write_report(run_dir, recipe=...)")
    sizes = {"n_train": len(recipe.train[0]), "n_test": len(recipe.test[0]),
             "n_validation": None if recipe.validation is None else len(recipe.validation[0])}
    changed = [f"{k} {source[k]} -> {v}" for k, v in sizes.items() if k in source and source[k] != v]
    if changed:
        raise ValueError(f"the data of {name!r} no longer match the run ({', '.join(changed)}); "
                         "from Python: write_report(run_dir, recipe=...)")
    return recipe


def load_recipe(run_dir) -> Recipe:
    path = Path(run_dir) / SOURCE_FILE
    if not path.is_file():
        raise RunFormatError(f"{run_dir} has no {SOURCE_FILE} (the run was not trained by "
                             "'bagcompile train', or before reports existed), so its data are "
                             "unknown; from Python: write_report(run_dir, recipe=...)")
    try:
        return recipe_from_source(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise RunFormatError(f"{path} is not a valid data-source record: {error}") from None


# --- the numbers ---------------------------------------------------------------------------------
@dataclass
class MembersCurve:
    """Errors of the first-k members' ensemble, k = 1..M (index k-1), and each member alone.

    Error: 1 - accuracy (classification) or MSE in training-std units (regression, when the
    recipe has a ``target_scale``). ``oob``: each training sample averaged over those of the
    first k members it is out-of-bag for (samples with none left out; NaN if no sample is
    covered); ``oob_coverage``: the fraction of training samples covered at each k.
    """

    k: np.ndarray
    test: np.ndarray
    validation: np.ndarray | None
    oob: np.ndarray | None
    oob_coverage: np.ndarray | None
    member_test: np.ndarray          # (M,) each member alone on the test part
    metric: str
    resolution: float = 0.0          # the smallest step the test error can take (1/n_test for accuracy)

    @property
    def mean_member_test(self) -> float:
        return float(np.mean(self.member_test))

    def saturation_k(self, tolerance: float = SATURATION_TOLERANCE) -> int | None:
        """The smallest k from which on the test error stays within ``tolerance`` (relative) of
        the full bag's, or within one test sample for accuracy (a curve that dips early and rises
        again has not saturated there)."""
        full = self.test[-1]
        if not np.isfinite(full):
            return None
        band = max(tolerance * abs(full), self.resolution) * (1 + 1e-9)
        far = np.flatnonzero(~(np.abs(self.test - full) <= band))
        return int(self.k[far[-1] + 1]) if len(far) else int(self.k[0])


def all_member_outputs(bag: Bag, X) -> np.ndarray:
    """(members, rows, outputs) float64: every member on every row (probabilities or raw units)."""
    x, lengths = as_padded(X, bag.input_transform.n_features)
    parts = [member_outputs(bag, torch.from_numpy(x[s:s + _CHUNK]), torch.from_numpy(lengths[s:s + _CHUNK])).numpy()
             for s in range(0, len(x), _CHUNK)]
    return np.concatenate(parts, axis=1).astype(np.float64)


def _prepared(bag: Bag, outs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The members' outputs as the bag combines them, and each member's weight per row (M, N)."""
    if bag.task == "classification" and bag.vote == "hard":
        outs = np.eye(outs.shape[-1])[outs.argmax(-1)]
    w = np.ones(outs.shape[0]) if bag.member_weights is None else np.asarray(bag.member_weights, np.float64)
    w = np.broadcast_to(w[:, None], outs.shape[:2]).copy()
    if bag.nonfinite == "drop":
        kept = np.isfinite(outs).all(-1)
        w = w * kept
        outs = np.where(kept[..., None], outs, 0.0)
    return outs, w


def prefix_means(bag: Bag, outs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(M, N, O) ensemble of the first k members for every k (the bag's weights, vote and
    non-finite policy), and the (M, N) total weight behind each; ``mask`` (M, N) leaves a
    member out of a row (out-of-bag: only members that did not train on it)."""
    outs, w = _prepared(bag, outs)
    if mask is not None:
        w = w * mask
    num = np.cumsum(outs * w[..., None], axis=0)
    den = np.cumsum(w, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den[..., None], den


def _errors(bag: Bag, recipe: Recipe, means: np.ndarray, y) -> np.ndarray:
    """Error of each (…, N, O) prediction against targets ``y``: one number per leading index."""
    if bag.task == "classification":
        labels = np.asarray(bag.classes, dtype=object)[np.nan_to_num(means).argmax(-1)]
        wrong = labels != np.asarray(y, dtype=object)
        return np.mean(wrong, axis=-1).astype(np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(means.shape[-2], -1)
    mse = np.mean((means - y) ** 2, axis=(-2, -1))
    return mse if recipe.target_scale is None else mse / recipe.target_scale**2


def members_curve(bag: Bag, draws: list[BootstrapDraw], recipe: Recipe, outputs: dict | None = None) -> MembersCurve:
    """Error against the number of members (the bag's first k members, k = 1..M).

    ``outputs``: precomputed :func:`all_member_outputs` per part ("train", "validation",
    "test"); missing parts are computed here.
    """
    outputs = dict(outputs or {})
    parts = {"train": recipe.train, "validation": recipe.validation, "test": recipe.test}
    for name, part in parts.items():
        if part is not None and name not in outputs:
            outputs[name] = all_member_outputs(bag, part[0])
    m = len(bag.members)
    test_means, _ = prefix_means(bag, outputs["test"])
    test = _errors(bag, recipe, test_means, recipe.test[1])
    member_test = _errors(bag, recipe, outputs["test"], recipe.test[1])
    validation = None
    if recipe.validation is not None:
        validation = _errors(bag, recipe, prefix_means(bag, outputs["validation"])[0], recipe.validation[1])
    oob = coverage = None
    n_train = outputs["train"].shape[1]
    if draws and any(len(d.out_of_bag) for d in draws):
        mask = np.zeros((m, n_train), dtype=bool)
        for j, draw in enumerate(draws):
            if len(draw.out_of_bag) and int(np.max(draw.out_of_bag)) >= n_train:
                raise ValueError(f"the run's bootstrap indices reach past the {n_train} training samples "
                                 "given: these are not the data the run was trained on")
            mask[j, draw.out_of_bag] = True
        means, den = prefix_means(bag, outputs["train"], mask)
        oob, coverage = np.full(m, np.nan), np.zeros(m)
        y_train = recipe.train[1]
        for k in range(m):
            covered = den[k] > 0
            coverage[k] = covered.mean()
            if covered.any():
                y_k = np.asarray(y_train)[covered] if bag.task == "classification" else \
                    np.asarray(y_train, dtype=np.float64).reshape(n_train, -1)[covered]
                oob[k] = _errors(bag, recipe, means[k][covered], y_k)
    metric = ("error (1 - accuracy)" if bag.task == "classification" else
              "MSE (training-std units)" if recipe.target_scale is not None else "MSE")
    resolution = 1.0 / outputs["test"].shape[1] if bag.task == "classification" else 0.0
    return MembersCurve(np.arange(1, m + 1), test, validation, oob, coverage, member_test, metric, resolution)


# --- figures -------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the training report needs matplotlib: pip install 'bagcompile[report]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def learning_curves_figure(histories: list[dict], task: str):
    from matplotlib.ticker import MaxNLocator

    m = len(histories)
    shown = histories[:MAX_MEMBER_PANELS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = _figure(3.0 * cols + 0.6, 2.3 * rows + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for j, (ax, h) in enumerate(zip(axes, shown)):
        train, oob = h.get("train_loss", []), h.get("oob_loss", [])
        ax.plot(np.arange(1, len(train) + 1), train, color="tab:blue", lw=1.4, label="train")
        if oob:
            ax.plot(np.arange(1, len(oob) + 1), oob, color="tab:orange", lw=1.4, label="out-of-bag")
        best = h.get("best_epoch")
        if best is not None and best < len(train):
            ax.axvline(best + 1, color="0.4", ls=":", lw=1)
            curve = oob if oob else train
            ax.plot(best + 1, curve[best], "o", color="tab:red", ms=5, label=f"best epoch ({best + 1})")
        ax.set_title(f"member {j}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    loss = "cross-entropy" if task == "classification" else "MSE (scaled targets)"
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel(f"loss ({loss})", fontsize=9)
    more = f" (first {len(shown)} of {m})" if m > len(shown) else ""
    fig.suptitle(f"Learning curves per member{more}", fontsize=11)
    return fig


def members_curve_figure(curve: MembersCurve):
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8.6, 4.2)
    ax = fig.subplots()
    if curve.oob is not None and np.isfinite(curve.oob).any():
        ax.plot(curve.k, curve.oob, "o-", color="tab:orange", ms=4, label="out-of-bag")
    if curve.validation is not None:
        ax.plot(curve.k, curve.validation, "s-", color="tab:green", ms=4, label="validation")
    ax.plot(curve.k, curve.test, "D-", color="tab:blue", ms=4, label="test")
    ax.axhline(curve.mean_member_test, color="tab:blue", ls="--", lw=1, label="mean single member (test)")
    k_sat = curve.saturation_k()
    if k_sat is not None and k_sat < len(curve.k):
        ax.axvline(k_sat, color="0.5", ls=":", lw=1, label=f"saturated: within {'one sample' if curve.resolution > SATURATION_TOLERANCE * abs(curve.test[-1]) else '1%'} of full bag from k={k_sat}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of members k (the bag's first k)")
    ax.set_ylabel(curve.metric)
    ax.set_title("Ensemble error against the number of members")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def forecast_figure(y_true, mean, std, target_name: str, first_window: int):
    fig = _figure(10.0, 4.0)
    ax = fig.subplots()
    t = np.arange(first_window, first_window + len(y_true))
    ax.fill_between(t, mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25, lw=0,
                    label="ensemble mean ± 2 std (members)")
    ax.plot(t, y_true, color="black", lw=1.1, label="truth")
    ax.plot(t, mean, color="tab:blue", lw=1.1, label="ensemble mean")
    ax.set_xlabel("test window (one step apart)")
    ax.set_ylabel(target_name)
    ax.set_title(f"Test period: {target_name}, last {len(y_true)} windows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --- the report ----------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _sentences(curve: MembersCurve, task: str) -> list[str]:
    m = len(curve.k)
    full, single = float(curve.test[-1]), curve.mean_member_test
    out = []
    k_sat = curve.saturation_k()
    if m == 1:
        out.append("The bag has one member, so there is no curve to saturate.")
    elif k_sat is None:
        out.append("The test error of the full bag is not finite; saturation cannot be judged.")
    elif k_sat == m:
        out.append(f"The members curve does not saturate: only all {m} members reach the full bag's "
                   f"test error ({_fmt(full)}); more members may still help.")
    else:
        band = "one test sample" if curve.resolution > SATURATION_TOLERANCE * abs(full) else "1%"
        out.append(f"The members curve saturates at k = {k_sat} of {m}: the first {k_sat} members already "
                   f"reach, and from there on stay within {band} of, the full bag's test error ({_fmt(float(curve.test[k_sat - 1]))} "
                   f"vs {_fmt(full)}).")
    what = "test error (1 - accuracy)" if task == "classification" else f"test {curve.metric}"
    if not (math.isfinite(full) and math.isfinite(single)):
        out.append("The bag and the mean member cannot be compared (non-finite errors).")
    elif single > 0:
        change = (single - full) / single
        verdict = "lower" if change > 0 else "higher"
        out.append(f"The bag's {what} is {_fmt(full)} against {_fmt(single)} for the mean single member: "
                   f"{abs(change):.1%} {verdict}" + (" (bagging helps)." if change > 0 else " (bagging does not help here)."))
    else:
        out.append(f"The mean single member already has zero test error; the bag has {_fmt(full)}.")
    return out


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1040px;margin:1.5em auto;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em}.tables{display:flex;gap:3em;flex-wrap:wrap}
table{border-collapse:collapse;font-size:.9em}th,td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}
td{font-variant-numeric:tabular-nums}img{max-width:100%;display:block;margin:.5em 0}
.note{color:#555;font-size:.9em}"""


def _html(run_dir: Path, bag: Bag, record: dict, recipe: Recipe, curve: MembersCurve, images: dict) -> str:
    e = html.escape
    facts = {"run": str(run_dir), "data": recipe.name, "task": bag.task,
             "estimator": record.get("estimator", "?"), "members": len(bag.members)}
    figures = "".join(f"<h2>{e(title)}</h2><img src=\"{e(name)}\" alt=\"{e(title)}\">"
                      + (f"<p class=\"note\">{e(note)}</p>" if note else "")
                      for name, (title, note) in images.items())
    sentences = "".join(f"<li>{e(s)}</li>" for s in _sentences(curve, bag.task))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bagcompile report: {e(recipe.name)}</title>
<style>{_CSS}</style></head><body>
<h1>Training report: {e(recipe.name)}</h1>
<ul>{sentences}</ul>
<div class="tables"><div><h2>Run</h2>{_table(facts)}</div>
<div><h2>Scores</h2>{_table(bag.scores)}</div>
<div><h2>Parameters</h2>{_table(record.get("params", {}))}</div></div>
{figures}
</body></html>
"""


def write_report(run_dir, recipe: Recipe | None = None, out_dir=None) -> list[Path]:
    """Write the report of the run in ``run_dir`` to ``out_dir`` (default ``run_dir/report``).

    ``recipe``: the data the run was trained on (default: rebuilt from ``source.json``).
    Returns the written files (PNGs, then report.html); each is written atomically.
    """
    run_dir = Path(run_dir)
    bag, draws, record = load_run(run_dir)
    if recipe is None:
        recipe = load_recipe(run_dir)
    if recipe.task != bag.task:
        raise ValueError(f"the recipe is for {recipe.task}, the run is {bag.task}")
    out_dir = run_dir / "report" if out_dir is None else Path(out_dir)
    _figure(1, 1)  # fail on a missing matplotlib before the (slower) forward passes

    outputs = {name: all_member_outputs(bag, part[0]) for name, part in
               {"train": recipe.train, "validation": recipe.validation, "test": recipe.test}.items()
               if part is not None}
    curve = members_curve(bag, draws, recipe, outputs)
    written, images = [], {}

    def save(name, fig, title, note=""):
        path = out_dir / name
        atomic_write_bytes(path, _png(fig))
        written.append(path)
        images[name] = (title, note)

    if record.get("histories"):
        save("learning_curves.png", learning_curves_figure(record["histories"], bag.task),
             "Learning curves", "Each member's loss on its bootstrap sample (train) and on its "
             "out-of-bag samples, per epoch; the dot marks the epoch whose weights were kept.")
    save("members_curve.png", members_curve_figure(curve), "Error against the number of members",
         "The ensemble of the bag's first k members, combined as the bag combines them. Out-of-bag: "
         "each training sample averaged over those first-k members that did not train on it "
         "(samples with none left out"
         + (f"; k = 1 covers {curve.oob_coverage[0]:.0%} of them" if curve.oob_coverage is not None else "")
         + "). Dashed: the test error of a single member, averaged over the members.")
    if bag.task == "regression":
        outs, w = _prepared(bag, outputs["test"])
        total = w.sum(0)[:, None]
        mean = (outs * w[..., None]).sum(0) / total
        std = np.sqrt((((outs - mean) ** 2) * w[..., None]).sum(0) / total)
        y = np.asarray(recipe.test[1], dtype=np.float64).reshape(len(mean), -1)
        start = max(0, len(y) - FORECAST_WINDOWS)
        name = (bag.target_names or ["y0"])[0]
        save("forecast.png", forecast_figure(y[start:, 0], mean[start:, 0], std[start:, 0], name, start),
             "Forecast on the test period", f"First target ({name}) of the last {len(y) - start} test "
             "windows: truth, ensemble mean and a band of ±2 standard deviations across the members.")
    page = out_dir / "report.html"
    atomic_write_bytes(page, _html(run_dir, bag, record, recipe, curve, images).encode())
    written.append(page)
    return written
