"""The main job: both bundled data sets, trained, compiled, run by the torch-free runtime, scored."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from . import recipes
from .atomic import atomic_write_bytes
from .estimators import as_padded
from .workflow import train_recipe

PARITY_ATOL = 1e-4


def _runtime_check(est, recipe, model_path: Path) -> dict:
    """Load the exported file with the runtime and score the test split with it alone."""
    from bagcompile_runtime import EnsembleSession

    session = EnsembleSession(model_path, providers="cpu")
    X, y = recipe.test
    torch_pred = est.predict(X)
    out = {}
    if recipe.task == "classification":
        labels = session.predict(X)
        out["runtime_test_accuracy"] = float(np.mean(labels == np.asarray(y)))
        out["runtime_equals_estimator"] = bool(np.array_equal(labels, torch_pred))
        out["max_abs_diff_probabilities"] = float(np.max(np.abs(session.predict_proba(X) - est.predict_proba(X))))
    else:
        pred = session.predict(X)
        out["runtime_test_mse"] = float(np.mean((pred - y) ** 2)) / recipe.target_scale**2
        out["max_abs_diff_prediction"] = float(np.max(np.abs(pred - torch_pred)))
        out["runtime_equals_estimator"] = out["max_abs_diff_prediction"] <= PARITY_ATOL
    return out


def _one(recipe, out_dir: Path, runs_dir: Path, progress, n_members, n_jobs) -> dict:
    click.echo(f"== {recipe.name}: training", err=True)
    start = time.perf_counter()
    est = train_recipe(recipe, runs_dir / recipe.name, progress=progress, n_members=n_members, n_jobs=n_jobs)
    train_s = time.perf_counter() - start
    X_test = recipe.test[0]
    x, lengths = as_padded(X_test, est.n_features_in_)
    result = est.export_onnx(out_dir / f"{recipe.name}.onnx", X=x, lengths=lengths)
    metrics = {"train_seconds": round(train_s, 1), **est.bag_.scores,
               "export_max_abs_diff": max(r.max_abs_diff for r in result.parity),
               "export_rows_checked": sum(r.n_rows for r in result.parity),
               "file_kib": round(result.size_bytes / 1024, 1), "nodes": result.n_nodes,
               **_runtime_check(est, recipe, result.path)}
    return metrics


def _checks(jv: dict, ett: dict) -> list[tuple[str, bool, str]]:
    return [
        ("Japanese Vowels test accuracy >= 0.95", jv["runtime_test_accuracy"] >= 0.95,
         f"{jv['runtime_test_accuracy']:.4f}"),
        ("Japanese Vowels bag beats its mean member", jv["test_accuracy"] > jv["test_member_accuracy_mean"],
         f"{jv['test_accuracy']:.4f} vs {jv['test_member_accuracy_mean']:.4f}"),
        ("ETTh1 test MSE below persistence", ett["runtime_test_mse"] < ett["persistence_mse"],
         f"{ett['runtime_test_mse']:.4f} vs {ett['persistence_mse']:.4f} (linear {ett['linear_mse']:.4f})"),
        ("compiled vs PyTorch max |diff| <= 1e-4 (both, ragged included)",
         max(jv["export_max_abs_diff"], ett["export_max_abs_diff"]) <= PARITY_ATOL
         and jv["runtime_equals_estimator"] and ett["runtime_equals_estimator"],
         f"{jv['export_max_abs_diff']:.2e} / {ett['export_max_abs_diff']:.2e}"),
    ]


def run_main_job(out_dir, runs_dir, progress=None, n_members=None, n_jobs=2) -> bool:
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    jv = _one(recipes.japanese_vowels(), out_dir, runs_dir, progress, n_members, n_jobs)
    ett = _one(recipes.etth1(), out_dir, runs_dir, progress, n_members, n_jobs)
    checks = _checks(jv, ett)
    report = {"japanese_vowels": jv, "etth1": ett,
              "checks": [{"check": c, "passed": ok, "value": v} for c, ok, v in checks]}
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(report, indent=1).encode())
    click.echo("")
    click.echo("Japanese Vowels (9 speakers, test 370 sequences of 7-29 frames)")
    click.echo(f"  bag test accuracy (runtime) {jv['runtime_test_accuracy']:.4f}   mean member "
               f"{jv['test_member_accuracy_mean']:.4f}   OOB {jv['oob']:.4f}   train {jv['train_seconds']} s")
    click.echo("ETTh1 (96 h of 7 columns -> next 24 h of OT; MSE in training-std units)")
    click.echo(f"  bag test MSE (runtime) {ett['runtime_test_mse']:.4f}   mean member {ett['test_member_mse_mean']:.4f}"
               f"   validation {ett['validation_mse']:.4f}   train {ett['train_seconds']} s")
    click.echo(f"  persistence {ett['persistence_mse']:.4f}   linear on last 96 OT {ett['linear_mse']:.4f}")
    click.echo("Checks")
    for check, ok, value in checks:
        click.echo(f"  [{'PASS' if ok else 'FAIL'}] {check}: {value}")
    click.echo(f"files: {out_dir / 'japanese_vowels.onnx'}, {out_dir / 'etth1.onnx'}, {out_dir / 'metrics.json'}")
    return all(ok for _, ok, _ in checks)
