"""Inference speed: the compiled graph in the runtime vs the usual alternatives, side by side.

    python benchmarks/inference.py            # default grid, a few minutes on 2 cores
    python benchmarks/inference.py --full     # the whole grid of issue 5 (long: batch 4096 x 500 steps)
    python benchmarks/inference.py --smoke    # one tiny row: does the script run (the tests do this)

Per configuration (members of LSTM 2 layers, hidden 64, 12 features, 1 output), median ms per
call over repeated runs, and each alternative as a multiple of the compiled graph's time:
- graph: one ONNX file, every member + the mean inside, bagcompile_runtime.EnsembleSession;
- torch: PyTorch eager loop over the members, then the mean (torch.no_grad, inference mode);
- jit: the same loop traced with torch.jit.trace;
- compile: the same loop through torch.compile (inductor; needs a C++ compiler, 'nan' where it
  cannot build; its compile time is not counted);
- ort/member: one onnxruntime session per member, then a numpy mean;
- int8: the same graph after ``export --variants int8`` (onnxruntime's dynamic quantization,
  LSTM -> DynamicQuantizeLSTM), in the runtime; its results differ from float32 by the 'int8 dev'
  column (largest |difference| over the batch, outputs of scale ~0.1), so it is a trade, not a
  drop-in;
- torch-int8: PyTorch's own dynamic quantization of the loop (torch.ao.quantization, LSTM+Linear).
'floor' is the compiled graph's time as a multiple of the arithmetic floor (LSTM FLOPs at
320 GFLOP/s, this machine's measured float32 peak on 2 threads).
Then where the graph's time goes (onnxruntime's profiler: kernel time by operator), and cold
start (import + session creation + first prediction) and peak resident memory, each in a fresh
process.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PEAK_FLOPS = 320e9
HIDDEN, LAYERS, FEATURES = 64, 2, 12


def make_bag(n_members: int, seed: int = 0):
    import torch

    from bagcompile.bag import Bag, InputTransform, TargetTransform
    from bagcompile.members import LSTMMember, MemberSpec

    torch.manual_seed(seed)
    spec = MemberSpec(FEATURES, HIDDEN, LAYERS, False, 0.0, 1)
    return Bag("regression", [LSTMMember(spec).eval() for _ in range(n_members)],
               InputTransform(np.zeros(FEATURES), np.ones(FEATURES)), [f"f{i}" for i in range(FEATURES)],
               target_transform=TargetTransform([0.0], [1.0]), target_names=["y"])


def lstm_flops(n_members, batch, length):
    per_step = sum(8 * HIDDEN * ((FEATURES if layer == 0 else HIDDEN) + HIDDEN) for layer in range(LAYERS))
    return n_members * batch * length * per_step


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def compiled_or_none(module, example):
    """torch.compile of ``module``, compiled here on ``example``; None where this machine cannot."""
    import torch

    torch._dynamo.reset()  # a fresh cache per configuration: no silent fall-back to eager after
    # the recompile limit, and no guard on an earlier configuration's members
    try:
        compiled = torch.compile(module)
        with torch.inference_mode():
            compiled(example)
        return compiled
    except Exception as exc:  # no C++ compiler, unsupported platform: the column says nan
        print(f"torch.compile unavailable here: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
        return None


def measure(n_members, length, batch, threads, repeats, workdir: Path):
    import onnxruntime as ort
    import torch

    from bagcompile.compiler import compile_bag
    from bagcompile.compiler.variants import to_int8_dynamic
    from bagcompile_runtime import EnsembleSession

    bag = make_bag(n_members)
    x = np.random.default_rng(0).normal(size=(batch, length, FEATURES)).astype(np.float32)
    lengths = np.full(batch, length, np.int64)
    graph_path = workdir / f"bag_{n_members}.onnx"
    if not graph_path.exists():
        graph_path.write_bytes(compile_bag(bag).SerializeToString())
    int8_path = workdir / f"bag_{n_members}.int8.onnx"
    if not int8_path.exists():
        to_int8_dynamic(graph_path, int8_path)
    session = EnsembleSession(graph_path, providers="cpu", intra_op_threads=threads, batch_size=batch)
    int8_session = EnsembleSession(int8_path, providers="cpu", intra_op_threads=threads, batch_size=batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    member_sessions = []
    for k, member in enumerate(bag.members):
        path = workdir / f"member_{n_members}_{k}.onnx"
        if not path.exists():
            single = make_bag(1)
            single.members = [member]
            path.write_bytes(compile_bag(single).SerializeToString())
        member_sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)

    class Loop(torch.nn.Module):
        """The common recipe: each member on the batch, then the mean."""

        def __init__(self, members):
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, inputs):
            return torch.stack([m.head(m.lstm(inputs)[1][0][-1]) for m in self.members]).mean(0)

    def inferring(module):
        def call():
            with torch.inference_mode():
                return module(xt)
        return call

    torch_loop = inferring(Loop(bag.members).eval())
    with torch.inference_mode():
        traced = torch.jit.trace(Loop(bag.members).eval(), (xt,), check_trace=False)
    compiled = compiled_or_none(Loop(bag.members).eval(), xt)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice, once per call
        warnings.simplefilter("ignore")
        torch_int8_loop = inferring(torch.ao.quantization.quantize_dynamic(
            Loop(bag.members).eval(), {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8))

    feeds = {"x": x, "lengths": lengths}

    def per_member():
        return np.mean([s.run(["prediction"], feeds)[0] for s in member_sessions], 0)

    float32_methods = {"torch": torch_loop, "jit": inferring(traced), "ort/member": per_member}
    if compiled is not None:
        float32_methods["compile"] = inferring(compiled)
    results = {"graph": median_ms(lambda: session.run(x), repeats),
               **{name: median_ms(fn, repeats) for name, fn in float32_methods.items()},
               "int8": median_ms(lambda: int8_session.run(x), repeats),
               "torch-int8": median_ms(torch_int8_loop, repeats)}
    results.setdefault("compile", float("nan"))
    # Same numbers from every method (else the timing compares different work).
    ref = session.run(x)["prediction"]
    for name, fn in float32_methods.items():
        other = fn()
        np.testing.assert_allclose(other.detach().numpy() if torch.is_tensor(other) else other, ref,
                                   atol=1e-4, err_msg=name)
    results["int8 dev"] = float(np.abs(int8_session.run(x)["prediction"] - ref).max())
    assert results["int8 dev"] < 1e-2, results["int8 dev"]  # a working quantisation, not noise
    results["floor"] = results["graph"] / (1e3 * lstm_flops(n_members, batch, length) / PEAK_FLOPS)
    return results


COLD_RUNTIME = """
import time, numpy as np
def peak_mb():
    # VmHWM is this process's own peak (ru_maxrss would include the parent's size at fork).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
t = time.perf_counter()
from bagcompile_runtime import EnsembleSession
s = EnsembleSession({path!r}, providers="cpu")
s.predict(np.zeros((1, 20, {f}), np.float32))
print(time.perf_counter() - t, peak_mb())
"""

COLD_TORCH = """
import time, numpy as np
def peak_mb():
    # VmHWM is this process's own peak (ru_maxrss would include the parent's size at fork).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
t = time.perf_counter()
from bagcompile import BaggedLSTMRegressor
est = BaggedLSTMRegressor.load({run!r})
est.predict(np.zeros((1, 20, {f}), np.float32))
print(time.perf_counter() - t, peak_mb())
"""

PEAK = """
import numpy as np
def rss_mb(field):
    # VmHWM is this process's own peak (ru_maxrss would include the parent's size at fork).
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
from bagcompile_runtime import EnsembleSession
s = EnsembleSession({path!r}, providers="cpu", batch_size={chunk})
x = np.random.default_rng(0).standard_normal(({n}, 100, {f}), dtype=np.float32).astype({dtype!r})
s.predict(x[:1])
before = rss_mb("VmRSS")  # model, engine and the caller's input, before the call
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to now (Linux >= 4.0)
s.predict(x)
print(x.nbytes / 2**20, before, rss_mb("VmHWM") - before)
"""


def run_python(code: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [float(v) for v in out.split()]


def cold_start_and_memory(workdir: Path):
    from bagcompile.persistence import save_run

    bag = make_bag(10)
    path = workdir / "cold_10.onnx"
    from bagcompile.compiler import compile_bag

    path.write_bytes(compile_bag(bag).SerializeToString())
    run_dir = workdir / "run_10"
    from bagcompile.bootstrap import BootstrapDraw

    draws = [BootstrapDraw(np.arange(1), np.arange(0)) for _ in bag.members]
    save_run(run_dir, bag, draws, {"params": {"n_members": 10}, "member_seeds": [0] * 10, "histories": [],
                                   "oob_score": float("nan"), "estimator": "BaggedLSTMRegressor"})
    runtime = [run_python(COLD_RUNTIME.format(path=str(path), f=FEATURES)) for _ in range(3)]
    torch_side = [run_python(COLD_TORCH.format(run=str(run_dir), f=FEATURES)) for _ in range(3)]
    print("\nCold start, 10 members (import + load + first prediction; median of 3 fresh processes)")
    print(f"  runtime (numpy + onnxruntime): {statistics.median(r[0] for r in runtime):.3f} s, "
          f"peak RSS {statistics.median(r[1] for r in runtime):.0f} MB")
    print(f"  PyTorch estimator (load run):  {statistics.median(r[0] for r in torch_side):.3f} s, "
          f"peak RSS {statistics.median(r[1] for r in torch_side):.0f} MB")
    print("\nMemory of one call beyond the caller's input (10 members, 100 steps, runtime chunks of "
          "1024 rows; peak RSS during predict minus RSS before it)")
    for dtype in ("float32", "float64"):
        for n in (1024, 8192, 32768):
            size, before, extra = run_python(PEAK.format(path=str(path), chunk=1024, n=n, f=FEATURES, dtype=dtype))
            print(f"  {n:>6} rows of {dtype} ({size:6.1f} MiB of input): RSS before {before:4.0f} MiB, "
                  f"call's peak beyond it {extra:5.1f} MiB")


def time_by_operator(n_members: int, length: int, batch: int, threads: int, runs: int, workdir: Path) -> dict:
    """onnxruntime's own profiler: kernel microseconds per run, by operator type."""
    import onnxruntime as ort

    from bagcompile.compiler import compile_bag

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "profile")
    session = ort.InferenceSession(compile_bag(make_bag(n_members)).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(0).normal(size=(batch, length, FEATURES)).astype(np.float32),
             "lengths": np.full(batch, length, np.int64)}
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            totals[e["args"]["op_name"]] = totals.get(e["args"]["op_name"], 0) + e["dur"] / runs
    return totals


def where_the_time_goes(workdir: Path):
    import onnxruntime as ort

    from bagcompile.compiler import compile_bag

    print("\nWhere the graph's time goes (onnxruntime profiler, 10 members, kernel time per run)")
    for length, batch, threads, runs in ((20, 1, 1, 300), (50, 256, 2, 10)):
        totals = time_by_operator(10, length, batch, threads, runs, workdir)
        whole = sum(totals.values())
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:4]
        print(f"  batch {batch:>4}, {length} steps, {threads} thread(s): {whole / 1e3:7.3f} ms; "
              + ", ".join(f"{op} {100 * us / whole:.0f} %" for op, us in top))
    print("Graph optimisation level (median ms per call, 10 members; the runtime uses onnxruntime's default, all)")
    model = compile_bag(make_bag(10)).SerializeToString()
    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    for length, batch, threads, repeats in ((20, 1, 1, 200), (50, 256, 2, 7)):
        feeds = {"x": np.random.default_rng(0).normal(size=(batch, length, FEATURES)).astype(np.float32),
                 "lengths": np.full(batch, length, np.int64)}
        times = {}
        for name, level in levels.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.graph_optimization_level = threads, level
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            times[name] = median_ms(lambda: session.run(None, feeds), repeats)
        print(f"  batch {batch:>4}, {length} steps, {threads} thread(s): "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in times.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the whole grid (members 1,5,10,20 x lengths "
                        "20,100,500 x batches 1,256,4096 x threads 1,2)")
    parser.add_argument("--smoke", action="store_true", help="one tiny configuration and the table only: "
                        "checks that the script runs (the tests do this), measures nothing worth quoting")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.smoke:
        grid = [(2, 5, 3, 1)]
    elif args.full:
        grid = list(itertools.product([1, 5, 10, 20], [20, 100, 500], [1, 256, 4096], [1, 2]))
    else:
        grid = ([(m, 20, 1, t) for m in (1, 5, 10, 20) for t in (1, 2)]
                + [(m, 50, 256, 2) for m in (1, 5, 10, 20)]
                + [(5, 100, 256, t) for t in (1, 2)] + [(5, 500, 1, 1), (5, 20, 4096, 2)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'members':>7} {'len':>4} {'batch':>5} {'thr':>3} | {'graph ms':>9} {'floor':>6} | "
              f"{'torch/graph':>11} {'jit/graph':>9} {'compile/graph':>13} {'ort-per-member/graph':>20} | "
              f"{'int8 ms':>8} {'torch/int8':>10} {'torch-int8/int8':>15} {'int8 dev':>8}")
        for n_members, length, batch, threads in grid:
            heavy = batch * length * n_members > 2_000_000
            r = measure(n_members, length, batch, threads, 3 if heavy else args.repeats, Path(tmp))
            rows.append({"members": n_members, "length": length, "batch": batch, "threads": threads, **r})
            print(f"{n_members:>7} {length:>4} {batch:>5} {threads:>3} | {r['graph']:>9.3f} {r['floor']:>5.1f}x | "
                  f"{r['torch'] / r['graph']:>10.2f}x {r['jit'] / r['graph']:>8.2f}x {r['compile'] / r['graph']:>12.2f}x "
                  f"{r['ort/member'] / r['graph']:>19.2f}x | {r['int8']:>8.3f} {r['torch'] / r['int8']:>9.2f}x "
                  f"{r['torch-int8'] / r['int8']:>14.2f}x {r['int8 dev']:>8.1e}", flush=True)
        if not args.smoke:
            where_the_time_goes(Path(tmp))
            cold_start_and_memory(Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
