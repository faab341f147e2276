"""Train a recipe into a run directory, score it, and export a run: the steps behind the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_numpy_bytes
from safetensors.numpy import save as save_numpy_bytes

from .atomic import atomic_write_bytes
from .compiler.export import export_bag
from .estimators import (
    BaggedLSTMClassifier,
    BaggedLSTMRegressor,
    as_padded,
    with_aggregation,
)
from .persistence import RunFormatError, load_run
from .recipes import Recipe
from .report import SOURCE_FILE, recipe_source

VERIFY_FILE = "verify.safetensors"
VERIFY_ROWS = 512


def make_estimator(recipe: Recipe, **overrides):
    params = {**recipe.params, **{k: v for k, v in overrides.items() if v is not None}}
    cls = BaggedLSTMClassifier if recipe.task == "classification" else BaggedLSTMRegressor
    return cls(**params)


def evaluate(est, recipe: Recipe) -> dict:
    """Scores on the held-out parts, the members' mean score, and the recipe's baselines."""
    scores = {"oob": _standardised(est.oob_score_, recipe)}
    parts = {"test": recipe.test, **({"validation": recipe.validation} if recipe.validation else {})}
    for split, (X, y) in parts.items():
        if recipe.task == "classification":
            y = np.asarray(y)
            scores[f"{split}_accuracy"] = float(np.mean(est.predict(X) == y))
            member_acc = [float(np.mean(p == y)) for p in est.member_predictions(X)]
            scores[f"{split}_member_accuracy_mean"] = float(np.mean(member_acc))
        else:
            scores[f"{split}_mse"] = _standardised(float(np.mean((est.predict(X) - y) ** 2)), recipe)
            member_mse = [float(np.mean((p.reshape(y.shape) - y) ** 2)) for p in est.member_predictions(X)]
            scores[f"{split}_member_mse_mean"] = _standardised(float(np.mean(member_mse)), recipe)
    scores.update(recipe.baselines)
    return scores


def _standardised(mse, recipe: Recipe):
    """Regression MSE in units of the training part's target standard deviation."""
    return mse if recipe.target_scale is None else float(mse) / recipe.target_scale**2


def train_recipe(recipe: Recipe, run_dir, progress=None, **overrides):
    """Fit, score, save the run (resumable: finished members are kept in run_dir/checkpoints)."""
    run_dir = Path(run_dir)
    est = make_estimator(recipe, **overrides)
    X, y, *spans = recipe.train
    fit_args = {"feature_names": recipe.feature_names, "checkpoint_dir": run_dir / "checkpoints",
                "progress": progress}
    if recipe.task == "regression":
        fit_args.update(time_spans=spans[0] if spans else None, target_names=recipe.target_names)
    est.fit(X, y, **fit_args)
    est.bag_.scores = evaluate(est, recipe)
    est.save(run_dir)
    atomic_write_bytes(run_dir / SOURCE_FILE, json.dumps(recipe_source(recipe), indent=1).encode())  # for reports
    x, lengths = as_padded(recipe.test[0][:VERIFY_ROWS], est.n_features_in_)
    atomic_write_bytes(run_dir / VERIFY_FILE, save_numpy_bytes({"x": x, "lengths": lengths}))
    return est


def export_run(run_dir, path, member_weights=None, nonfinite: str = "propagate", **options):
    """Export a saved run, verified on the held-out rows saved with it (weights: see export_onnx)."""
    bag, _, record = load_run(run_dir)
    bag = with_aggregation(bag, member_weights, nonfinite, record.get("oob_member_scores"))
    verify = Path(run_dir) / VERIFY_FILE
    if not verify.is_file():
        raise RunFormatError(f"{run_dir} is incomplete: {VERIFY_FILE} is missing")
    sample = load_numpy_bytes(verify.read_bytes())
    return export_bag(bag, path, verify_x=sample["x"], verify_lengths=sample["lengths"], **options)
