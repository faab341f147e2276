"""Compare the two graph forms of the compiled LSTM stack, "gather" and "sequence_lens".

For each member count: export time (``compile_bag`` + ``SerializeToString``, median of 3), file
size, node count, and onnxruntime CPU latency (median ms; 1 and 2 intra-op threads, sequential
execution) at batch 1 x 20 steps and batch 256 x 50 steps, with the ratio sequence_lens/gather.
Members are random (untrained) classifiers: speed does not depend on the weights. Before timing,
both forms are checked to give the same probabilities on the timed batch.

    .venv/bin/python benchmarks/compile.py                      # ~2-3 min on 2 cores
    .venv/bin/python benchmarks/compile.py --members 1,4 --bidirectional --ragged
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
import torch

from bagcompile.bag import Bag, InputTransform
from bagcompile.compiler import compile_bag
from bagcompile.members import LSTMMember, MemberSpec

FORMS = ("gather", "sequence_lens")
# (batch, steps): latency workloads.
WORKLOADS = ((1, 20), (256, 50))


def make_bag(members: int, hidden: int, layers: int, bidirectional: bool, features: int, classes: int,
             seed: int = 0) -> Bag:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    transform = InputTransform(rng.normal(size=features), rng.uniform(0.5, 3.0, size=features), False, None)
    spec = MemberSpec(features, hidden, layers, bidirectional, 0.0, classes)
    return Bag("classification", [LSTMMember(spec).eval() for _ in range(members)], transform,
               [f"f{i}" for i in range(features)], classes=[f"c{i}" for i in range(classes)])


def export_time(bag: Bag, form: str, repeats: int = 3) -> tuple[float, bytes, int]:
    times, data, nodes = [], b"", 0
    for _ in range(repeats):
        start = time.perf_counter()
        model = compile_bag(bag, form=form)
        data = model.SerializeToString()
        times.append(time.perf_counter() - start)
        nodes = len(model.graph.node)
    return statistics.median(times), data, nodes


def session(data: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def latency_ms(sessions: dict, feeds: dict, budget_s: float, min_repeats: int = 3,
               max_repeats: int = 200) -> dict[str, float]:
    """Median ms per form. Calls alternate between the forms (order flipped every round), so any
    load from other processes on the machine hits both alike; as many rounds as fit in
    ``budget_s`` (at least ``min_repeats``, at most ``max_repeats``), after one warm-up call each."""
    forms = list(sessions)
    start = time.perf_counter()
    for form in forms:
        sessions[form].run(["probabilities"], feeds)
    first = time.perf_counter() - start
    rounds = int(min(max_repeats, max(min_repeats, budget_s / max(first, 1e-6))))
    times = {form: [] for form in forms}
    for k in range(rounds):
        for form in (forms if k % 2 == 0 else forms[::-1]):
            start = time.perf_counter()
            sessions[form].run(["probabilities"], feeds)
            times[form].append(time.perf_counter() - start)
    return {form: 1e3 * statistics.median(t) for form, t in times.items()}


def batch_inputs(batch: int, steps: int, features: int, ragged: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, features)).astype(np.float32)
    lengths = rng.integers(1, steps + 1, size=batch) if ragged else np.full(batch, steps)
    lengths[0] = steps
    return {"x": x, "lengths": lengths.astype(np.int64)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="1,2,4,8,16,32,64", help="comma-separated member counts")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--ragged", action="store_true",
                        help="lengths uniform in 1..steps (default: every row full length)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timed calls per latency row, both forms together "
                             "(at least 3 calls each, at most 200)")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts")
    args = parser.parse_args(argv)
    member_counts = [int(m) for m in args.members.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    workloads = {w: batch_inputs(*w, args.features, args.ragged) for w in WORKLOADS}

    metrics = ["export ms", "file KiB", "nodes"] + [f"b{b}x{t} {n}t ms" for b, t in WORKLOADS
                                                   for n in thread_counts]
    table = {}  # (members, metric) -> {form: value}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    for members in member_counts:
        bag = make_bag(members, args.hidden, args.layers, args.bidirectional, args.features, args.classes)
        datas = {}
        for form in FORMS:
            seconds, data, nodes = export_time(bag, form)
            datas[form] = data
            table.setdefault((members, "export ms"), {})[form] = 1e3 * seconds
            table.setdefault((members, "file KiB"), {})[form] = len(data) / 1024
            table.setdefault((members, "nodes"), {})[form] = nodes
        for (b, t), feeds in workloads.items():
            for n in thread_counts:
                sessions = {form: session(datas[form], n) for form in FORMS}
                outs = {form: s.run(["probabilities"], feeds)[0] for form, s in sessions.items()}
                diff = float(np.abs(outs["gather"] - outs["sequence_lens"]).max())
                assert diff < 1e-4, f"forms disagree by {diff} at {members} members, batch {b}"
                table[(members, f"b{b}x{t} {n}t ms")] = latency_ms(sessions, feeds, args.budget)
        print(f"# {members} members done ({time.perf_counter() - started:.0f} s)", flush=True)

    kind = "bidirectional" if args.bidirectional else "unidirectional"
    print(f"\nLSTM {args.features}->{args.hidden} x{args.layers} {kind} + Linear -> {args.classes} classes; "
          f"{'ragged' if args.ragged else 'full-length'} rows; onnxruntime {ort.__version__} CPU, "
          f"sequential, median ms; total {time.perf_counter() - started:.0f} s; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)\n")
    print("| metric | members | gather | sequence_lens | seq_lens / gather |")
    print("|---|---:|---:|---:|---:|")
    for metric in metrics:
        for members in member_counts:
            g, s = (table[(members, metric)][f] for f in FORMS)
            fmt = (lambda v: f"{v:d}") if metric == "nodes" else (lambda v: f"{v:.3g}" if v < 100 else f"{v:.0f}")
            print(f"| {metric} | {members} | {fmt(g)} | {fmt(s)} | {s / g:.2f} |")


if __name__ == "__main__":
    main()
