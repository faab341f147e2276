"""Which onnxruntime releases load and run bagcompile models, at which opsets.

Three modes:

    # 1. with the main venv (torch, onnx, bagcompile): write the test models and their expectations
    .venv/bin/python benchmarks/ort_compat.py build OUT_DIR [--all-opsets]

    # 2. with ANY interpreter that has only numpy + some onnxruntime (never imports torch, onnx or
    #    bagcompile): load every model on CPU, run its NPZ input, compare, print one table row each
    /tmp/ortXX/bin/python benchmarks/ort_compat.py check OUT_DIR [--json RESULTS.json]

    # 3. the torch-free runtime itself on this onnxruntime (numpy + onnxruntime + the runtime
    #    package on the path, e.g. PYTHONPATH=runtime; no install needed)
    PYTHONPATH=runtime /tmp/ortXX/bin/python benchmarks/ort_compat.py smoke

``build`` writes, for opsets 14, 15, 17, 18, 19, 21 and the newest the installed onnx knows
(``--all-opsets``: every opset from bagcompile's MIN_OPSET to the newest):

* ``classification_opsetN.onnx``: a random bag with a bidirectional 2-layer member and a
  unidirectional 1-layer member (so both LSTM directions, stacking and ragged reversal are used);
* ``regression_opsetN.onnx``: a random regression bag with ``level_free`` and
  ``reference_feature`` (the residual target), two members;

each with ``<name>.npz`` holding a ragged input batch (garbage in the padding) and the outputs
computed by ``bagcompile.bag.bag_forward`` (PyTorch). It also copies the committed real models
(``exported/*.onnx``, opset 17) with real test inputs; their expected outputs come from the
onnxruntime of the build interpreter (the configuration verified against PyTorch at export time),
and the Japanese Vowels file also carries the true labels. ``manifest.json`` lists everything.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys

import numpy as np

OPSETS = (14, 15, 17, 18, 19, 21)  # + the newest the installed onnx supports (added in build)
BATCH, TIME = 16, 12
# Pass thresholds: float32 end to end; probabilities are in [0, 1], regression outputs in the
# synthetic bags are O(1..10) (real ETTh1: degrees C, O(10)).
ATOL = 1e-4
RTOL = 1e-5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JV_TEST = os.path.join(REPO, "bagcompile", "datasets", "japanese_vowels", "ae.test")
JV_COUNTS = [31, 35, 88, 44, 29, 24, 40, 50, 29]


# ---------------------------------------------------------------------------------------------
# build (main venv)
# ---------------------------------------------------------------------------------------------

def _synthetic_bags():
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from bags import random_bag

    clf = random_bag("classification", n_features=4, n_outputs=3,
                     members=((8, 2, True), (6, 1, False)), seed=0)
    reg = random_bag("regression", n_features=5, n_outputs=3,
                     members=((8, 1, False), (6, 2, True)), seed=1,
                     level_free=True, reference_feature=2)
    return {"classification": clf, "regression": reg}


def _pad_ragged(seqs, garbage=1e3, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    x = rng.normal(0, garbage, size=(len(seqs), lengths.max(), seqs[0].shape[1])).astype(np.float32)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    return x, lengths


def build(out_dir, all_opsets=False):
    import inspect
    import subprocess

    import onnx
    import onnxruntime as ort
    import torch

    from bagcompile.bag import bag_forward
    from bagcompile.compiler import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, compile_bag
    from bagcompile.datasets import etth1_forecast_split, load_japanese_vowels

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from bags import ragged_batch

    os.makedirs(out_dir, exist_ok=True)
    opsets = list(range(MIN_OPSET, MAX_OPSET + 1)) if all_opsets else sorted(set(OPSETS) | {MAX_OPSET})

    def git(*args):
        try:
            return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return None

    manifest = {"built_with": {"python": platform.python_version(), "onnx": onnx.__version__,
                               "torch": torch.__version__, "onnxruntime": ort.__version__,
                               "git_head": git("rev-parse", "HEAD"),
                               "git_dirty_files": (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()},
                "models": []}

    for task, bag in _synthetic_bags().items():
        x, lengths = ragged_batch(bag, BATCH, TIME, seed=1)
        expected = bag_forward(bag, x, lengths)
        for opset in opsets:
            name = f"{task}_opset{opset}"
            model = compile_bag(bag, opset=opset)
            onnx.checker.check_model(model, full_check=True)
            onnx.save(model, os.path.join(out_dir, name + ".onnx"))
            np.savez(os.path.join(out_dir, name + ".npz"), x=x, lengths=lengths,
                     **{f"expected_{k}": v for k, v in expected.items()})
            manifest["models"].append({"name": name, "kind": "synthetic", "task": task,
                                       "opset": opset, "ir_version": model.ir_version,
                                       "reference": "bagcompile.bag.bag_forward (PyTorch)"})

    # Optional graph variants of the working tree, at the default opset, when this bagcompile
    # has them: the "sequence_lens" LSTM form and the nonfinite="drop" aggregation.
    for task, bag in _synthetic_bags().items():
        x, lengths = ragged_batch(bag, BATCH, TIME, seed=1)
        variants = []
        if "form" in inspect.signature(compile_bag).parameters:
            variants.append(("seqlens", {"form": "sequence_lens"}, None))
        if hasattr(bag, "nonfinite"):
            variants.append(("dropnonfinite", {}, "drop"))
        for suffix, kwargs, nonfinite in variants:
            if nonfinite:
                bag.nonfinite = nonfinite
            name = f"{task}_opset{DEFAULT_OPSET}_{suffix}"
            model = compile_bag(bag, opset=DEFAULT_OPSET, **kwargs)
            onnx.checker.check_model(model, full_check=True)
            onnx.save(model, os.path.join(out_dir, name + ".onnx"))
            expected = bag_forward(bag, x, lengths)
            np.savez(os.path.join(out_dir, name + ".npz"), x=x, lengths=lengths,
                     **{f"expected_{k}": v for k, v in expected.items()})
            manifest["models"].append({"name": name, "kind": "variant", "task": task,
                                       "opset": DEFAULT_OPSET, "ir_version": model.ir_version,
                                       "reference": "bagcompile.bag.bag_forward (PyTorch)"})
            if nonfinite:
                bag.nonfinite = "propagate"

    # The committed real models, with real test inputs.
    seqs, labels = load_japanese_vowels("test")
    jv_x, jv_len = _pad_ragged(seqs)
    X, _, _ = etth1_forecast_split("test", stride=10)
    ett_x, ett_len = X.astype(np.float32), np.full(len(X), X.shape[1], dtype=np.int64)
    for name, src, x, lengths, extra in (
            ("real_japanese_vowels", "japanese_vowels.onnx", jv_x, jv_len, {"true_labels": labels}),
            ("real_etth1", "etth1.onnx", ett_x, ett_len, {})):
        path = os.path.join(out_dir, name + ".onnx")
        shutil.copyfile(os.path.join(REPO, "exported", src), path)
        model = onnx.load(path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, {"x": x, "lengths": lengths})
        np.savez(os.path.join(out_dir, name + ".npz"), x=x, lengths=lengths,
                 **{f"expected_{k}": v for k, v in zip(names, outs)}, **extra)
        task = next(p.value for p in model.metadata_props if p.key == "task")
        manifest["models"].append({"name": name, "kind": "real", "task": task,
                                   "opset": model.opset_import[0].version,
                                   "ir_version": model.ir_version,
                                   "reference": f"onnxruntime {ort.__version__} (build venv)"})

    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(manifest['models'])} models to {out_dir} (opsets {opsets})")


# ---------------------------------------------------------------------------------------------
# check (numpy + onnxruntime only)
# ---------------------------------------------------------------------------------------------

def _short_error(exc):
    """onnxruntime's message without its '[ONNXRuntimeError] : 1 : FAIL :' prefix, the model path
    and the C++ source location / signature, which hide the actual reason."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from \S+ failed:\s*", "", text)
    text = re.sub(r"\S+\.(?:cc|h|cpp):\d+ (?:[\w:]+ )?[\w:~<>]+\([^)]*\)\s*", "", text)
    m = re.search(r"(Opset \d+ is under development).*(Current official support for domain "
                  r"\S+ is till opset \d+)", text)
    if m:  # "ONNX Runtime only *guarantees* support for ... opset versions. Opset 22 is under ..."
        text = f"{m.group(1)}; {m.group(2)}"
    return text[:200]


def check_one(ort, out_dir, entry):
    row = {"name": entry["name"], "kind": entry["kind"], "task": entry["task"],
           "opset": entry["opset"], "ir_version": entry["ir_version"],
           "loaded": False, "ran": False, "max_abs_diff": None, "labels_equal": None,
           "accuracy": None, "ok": False, "error": None}
    path = os.path.join(out_dir, entry["name"] + ".onnx")
    data = np.load(os.path.join(out_dir, entry["name"] + ".npz"))
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 (onnxruntime's exception types vary by release)
        row["error"] = f"{type(exc).__name__}: {_short_error(exc)}"
        row["error_full"] = str(exc)
        return row
    row["loaded"] = True
    names = [o.name for o in sess.get_outputs()]
    try:
        outs = dict(zip(names, sess.run(names, {"x": data["x"], "lengths": data["lengths"]})))
    except Exception as exc:  # noqa: BLE001 (a row of the table, not a crash)
        row["error"] = f"run: {type(exc).__name__}: {_short_error(exc)}"
        return row
    row["ran"] = True
    ok, worst = True, 0.0
    for key in data.files:
        if not key.startswith("expected_"):
            continue
        out_name = key[len("expected_"):]
        exp, got = data[key], outs.get(out_name)
        if got is None or got.shape != exp.shape:
            row["error"] = f"output {out_name}: shape {None if got is None else got.shape} != {exp.shape}"
            ok = False
            continue
        if exp.dtype.kind in "iu":
            equal = bool(np.array_equal(exp, got))
            row["labels_equal"] = equal
            ok &= equal
        else:
            diff = np.abs(got.astype(np.float64) - exp.astype(np.float64))
            worst = max(worst, float(diff.max()))
            ok &= bool(np.all(diff <= ATOL + RTOL * np.abs(exp)))
    row["max_abs_diff"] = worst
    if "true_labels" in data.files and "label" in outs:
        # classes metadata are 1..9 for Japanese Vowels: label index i -> class i+1
        row["accuracy"] = float(np.mean(outs["label"] + 1 == data["true_labels"]))
    row["ok"] = ok
    return row


def check(out_dir, json_path=None):
    import onnxruntime as ort

    for banned in ("torch", "onnx", "bagcompile"):
        assert banned not in sys.modules, f"check mode must not import {banned}"
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    rows = [check_one(ort, out_dir, e) for e in manifest["models"]]
    for banned in ("torch", "onnx", "bagcompile"):
        assert banned not in sys.modules, f"check mode imported {banned}"

    print(f"onnxruntime {ort.__version__}  python {platform.python_version()}  "
          f"numpy {np.__version__}  ({ort.get_device()})")
    head = f"{'onnxruntime':<12} {'opset':>5} {'ir':>3} {'model':<36} {'loaded':<6} {'max_abs_diff':>12} {'result':<6} error"
    print(head)
    print("-" * len(head))
    for r in rows:
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        result = "ok" if r["ok"] else ("FAIL" if r["ran"] else "-")
        extra = "" if r["accuracy"] is None else f"accuracy {r['accuracy']:.4f}"
        print(f"{ort.__version__:<12} {r['opset']:>5} {r['ir_version']:>3} "
              f"{r['name']:<36} {'yes' if r['loaded'] else 'no':<6} {diff:>12} {result:<6} "
              f"{r['error'] or extra}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "python": platform.python_version(),
                       "numpy": np.__version__, "rows": rows}, f, indent=1)
    return 0 if all(r["ok"] or not r["loaded"] for r in rows) else 1


# ---------------------------------------------------------------------------------------------
# smoke (the torch-free runtime package on this onnxruntime)
# ---------------------------------------------------------------------------------------------

def load_jv_test(path=JV_TEST):
    """Japanese Vowels test split without bagcompile: 12-float lines, blocks ended by all 1.0."""
    seqs, block = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            row = [float(p) for p in parts]
            if all(v == 1.0 for v in row):
                seqs.append(np.asarray(block, dtype=np.float32))
                block = []
            else:
                block.append(row)
    labels = np.repeat(np.arange(1, 10), JV_COUNTS)
    assert len(seqs) == len(labels) == 370, len(seqs)
    return seqs, labels


def smoke():
    import traceback

    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}  python {platform.python_version()}  numpy {np.__version__}")
    status = 0
    try:
        import bagcompile_runtime
        from bagcompile_runtime import EnsembleSession

        assert "torch" not in sys.modules and "bagcompile" not in sys.modules
        print(f"bagcompile_runtime {bagcompile_runtime.__version__} from "
              f"{os.path.dirname(bagcompile_runtime.__file__)}")
        seqs, labels = load_jv_test()
        sess = EnsembleSession(os.path.join(REPO, "exported", "japanese_vowels.onnx"),
                               providers="cpu")
        pred = sess.predict(seqs)
        acc = float(np.mean(np.asarray(pred).astype(np.int64) == labels))
        proba = sess.predict_proba(seqs)
        print(f"japanese_vowels: providers={sess.providers} accuracy={acc:.4f} "
              f"proba rows sum to 1: {bool(np.allclose(proba.sum(1), 1, atol=1e-5))} "
              f"fallback disabled: {not getattr(sess.session, '_enable_fallback', False)}")
        # Other API paths that touch onnxruntime: options, threads, bytes, errors.
        opts = ort.SessionOptions()
        with open(os.path.join(REPO, "exported", "japanese_vowels.onnx"), "rb") as f:
            blob = f.read()
        s2 = EnsembleSession(blob, providers=["CPUExecutionProvider"], session_options=opts,
                             intra_op_threads=1, batch_size=50)
        same = bool(np.array_equal(s2.predict(seqs), pred))
        from bagcompile_runtime.errors import ModelFormatError, ProviderError
        try:
            EnsembleSession(blob[: len(blob) // 3], providers="cpu")
            truncated = "no error (WRONG)"
        except ModelFormatError as exc:
            truncated = f"ModelFormatError: {exc}"
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
            f.write(blob[: len(blob) // 3])
        try:
            EnsembleSession(f.name, providers="cpu")
            truncated_path = "no error (WRONG)"
        except ModelFormatError as exc:
            truncated_path = f"ModelFormatError: {str(exc).replace(f.name, 'FILE')}"
        finally:
            os.unlink(f.name)
        truncated += f"\n  truncated file (path) -> {truncated_path}"
        try:
            EnsembleSession(blob, providers="cuda")
            cuda = "no error (CUDA granted)"
        except ProviderError as exc:
            cuda = f"ProviderError: {exc}"
        print(f"  bytes+options+threads+chunks same labels: {same}\n  truncated file (bytes) -> {truncated}"
              f"\n  providers='cuda' -> {cuda}")
    except Exception:  # noqa: BLE001 (report and go on to the next check)
        status = 1
        print("japanese_vowels: FAILED")
        traceback.print_exc(file=sys.stdout)
    try:
        from bagcompile_runtime import EnsembleSession

        # A few raw ETTh1-like windows (any numbers work for a smoke test): 4 x 96 x 7.
        rng = np.random.default_rng(0)
        windows = (rng.normal(size=(4, 96, 7)).cumsum(1) + 10).astype(np.float32)
        sess = EnsembleSession(os.path.join(REPO, "exported", "etth1.onnx"), providers="auto")
        mean, std = sess.predict(windows, return_std=True)
        print(f"etth1: providers={sess.providers} prediction {mean.shape} std {std.shape} "
              f"finite={bool(np.isfinite(mean).all() and np.isfinite(std).all())}")
    except Exception:  # noqa: BLE001 (report and go on to the next check)
        status = 1
        print("etth1: FAILED")
        traceback.print_exc(file=sys.stdout)
    return status


def main(argv):
    if len(argv) >= 2 and argv[0] == "build":
        build(argv[1], all_opsets="--all-opsets" in argv)
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        json_path = argv[argv.index("--json") + 1] if "--json" in argv else None
        return check(argv[1], json_path)
    if argv[:1] == ["smoke"]:
        return smoke()
    print(__doc__.split("``build``")[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
