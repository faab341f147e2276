"""How should N members be laid out in one graph? And where does an LSTM node's time go?

    python benchmarks/member_layout.py [--repeats 15]

Issue 5 asks for 1.5x over the PyTorch loop at batch 256. This script measures, side by side in
one run, three layouts of the same members (LSTM 12->64 x 2 layers + Linear, full-length rows),
each checked against the PyTorch loop before it is timed:
- nodes: what bagcompile compiles, one ONNX ``LSTM`` node per member and layer, then ``Mean``;
- scan:  one ``Scan`` per layer for ALL members, the recurrent step a batched MatMul
  (members, batch, H) @ (members, H, 4H) plus the gate arithmetic as plain ONNX ops;
- wide:  one ``LSTM`` node per layer whose hidden state is every member's, side by side, with
  block-diagonal weights (members x the arithmetic, but one kernel call per step).
Then the anatomy of one LSTM node at batch 256: its time against the same GEMMs run alone (one
call for the input projection, one call per step for the recurrence), in onnxruntime and torch.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from bagcompile.compiler import compile_bag

from inference import FEATURES, HIDDEN, LAYERS, make_bag, median_ms

OPSET = 18


def session(model, threads=2):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def weights(member, layer):
    """W (4H, I), R (4H, H), bias (4H) of one layer, PyTorch gate order (i, f, g, o)."""
    get = lambda name: getattr(member.lstm, f"{name}_l{layer}").detach().numpy().astype(np.float32)
    return get("weight_ih"), get("weight_hh"), get("bias_ih") + get("bias_hh")


def gates(w, order):
    """Reorder PyTorch's (i, f, g, o) gate blocks along axis 0 to ``order`` (a string of i f g o)."""
    blocks = dict(zip("ifgo", np.split(w, 4, axis=0)))
    return [blocks[g] for g in order]


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), name)


def finish(nodes, inits, name):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", FEATURES])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def head_and_mean(last, members, nodes, inits):
    """``last`` [N, B, H] -> per-member Linear -> mean over members."""
    inits += [const("head_w", np.stack([m.head.weight.detach().numpy().T for m in members])),
              const("head_b", np.stack([m.head.bias.detach().numpy()[None] for m in members])),
              const("axis0", [0], np.int64)]
    nodes += [helper.make_node("MatMul", [last, "head_w"], ["head_mm"]),
              helper.make_node("Add", ["head_mm", "head_b"], ["per_member"]),
              helper.make_node("ReduceMean", ["per_member", "axis0"], ["out"], keepdims=0)]


def scan_step_body(layer, hidden):
    """One time step for every member: gates in (i, f, o, g) order so one Sigmoid covers three."""
    v = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("MatMul", ["h", f"R{layer}"], ["hr"]),
        helper.make_node("Add", ["hr", "xw"], ["pre"]),
        helper.make_node("Split", ["pre", "split_sizes"], ["pre_sig", "pre_g"], axis=2),
        helper.make_node("Sigmoid", ["pre_sig"], ["sig"]),
        helper.make_node("Tanh", ["pre_g"], ["g"]),
        helper.make_node("Split", ["sig"], ["i", "f", "o"], axis=2, num_outputs=3),
        helper.make_node("Mul", ["f", "c"], ["fc"]),
        helper.make_node("Mul", ["i", "g"], ["ig"]),
        helper.make_node("Add", ["fc", "ig"], ["c_next"]),
        helper.make_node("Tanh", ["c_next"], ["tc"]),
        helper.make_node("Mul", ["o", "tc"], ["h_next"]),
        helper.make_node("Identity", ["h_next"], ["y"]),
    ]
    return helper.make_graph(nodes, f"step{layer}", [v("h"), v("c"), v("xw")], [v("h_next"), v("c_next"), v("y")])


def scan_layout(members):
    n, h = len(members), HIDDEN
    nodes, inits = [], [const("split_sizes", [3 * h, h], np.int64), const("state_tail", [h], np.int64),
                        const("nb_start", [1], np.int64), const("nb_end", [3], np.int64)]
    layer_in = None
    for layer in range(LAYERS):
        w, r, b = zip(*(weights(m, layer) for m in members))
        w = np.stack([np.concatenate(gates(x, "ifog")).T for x in w])  # [N, I, 4H]
        inits += [const(f"R{layer}", np.stack([np.concatenate(gates(x, "ifog")).T for x in r])),
                  const(f"b{layer}", np.stack([np.concatenate(gates(x[:, None], "ifog"))[:, 0] for x in b])[:, None])]
        if layer == 0:  # one MatMul for all members' input projections: [T,B,F] @ [F, N*4H]
            inits += [const("W0", np.concatenate(list(w), axis=1)), const("split_members", [0, 0, n, 4 * h], np.int64)]
            nodes += [helper.make_node("MatMul", ["x", "W0"], ["xw0_flat"]),
                      helper.make_node("Reshape", ["xw0_flat", "split_members"], ["xw0_tbn"]),
                      helper.make_node("Transpose", ["xw0_tbn"], ["xw0_raw"], perm=[0, 2, 1, 3])]
        else:  # [T, N, B, H] @ [N, H, 4H]
            inits.append(const(f"W{layer}", w))
            nodes.append(helper.make_node("MatMul", [layer_in, f"W{layer}"], [f"xw{layer}_raw"]))
        nodes += [helper.make_node("Add", [f"xw{layer}_raw", f"b{layer}"], [f"xw{layer}"]),
                  helper.make_node("Shape", [f"xw{layer}"], [f"shape{layer}"]),
                  helper.make_node("Slice", [f"shape{layer}", "nb_start", "nb_end"], [f"nb{layer}"]),
                  helper.make_node("Concat", [f"nb{layer}", "state_tail"], [f"state_shape{layer}"], axis=0),
                  helper.make_node("ConstantOfShape", [f"state_shape{layer}"], [f"zeros{layer}"]),
                  helper.make_node("Scan", [f"zeros{layer}", f"zeros{layer}", f"xw{layer}"],
                                   [f"h_last{layer}", f"c_last{layer}", f"y{layer}"], num_scan_inputs=1,
                                   body=scan_step_body(layer, h))]
        layer_in = f"y{layer}"
    head_and_mean(f"h_last{LAYERS - 1}", members, nodes, inits)
    return finish(nodes, inits, "scan_layout")


def wide_layout(members):
    """Every member's state side by side in one LSTM of hidden N*H, block-diagonal weights."""
    n, h = len(members), HIDDEN
    nodes, inits, layer_in = [], [const("axis1", [1], np.int64), const("axis0_wide", [0], np.int64),
                                  const("nbh", [0, n, h], np.int64)], "x"
    for layer in range(LAYERS):
        w, r, b = zip(*(weights(m, layer) for m in members))
        onnx_order = "iofg"  # ONNX gate order (i, o, f, c)
        blocks_w = [gates(x, onnx_order) for x in w]
        if layer == 0:  # every member reads the same input
            wide_w = np.concatenate([np.concatenate([bw[g] for bw in blocks_w]) for g in range(4)])
        else:  # member k reads its own slice of the wide state
            wide_w = np.concatenate([np.block([[blocks_w[k][g] if j == k else np.zeros_like(blocks_w[k][g])
                                                for j in range(n)] for k in range(n)]) for g in range(4)])
        blocks_r = [gates(x, onnx_order) for x in r]
        wide_r = np.concatenate([np.block([[blocks_r[k][g] if j == k else np.zeros_like(blocks_r[k][g])
                                            for j in range(n)] for k in range(n)]) for g in range(4)])
        blocks_b = [gates(x[:, None], onnx_order) for x in b]
        wide_b = np.concatenate([np.concatenate([bb[g][:, 0] for bb in blocks_b]) for g in range(4)])
        inits += [const(f"W{layer}", wide_w[None]), const(f"R{layer}", wide_r[None]),
                  const(f"B{layer}", np.concatenate([wide_b, np.zeros_like(wide_b)])[None])]
        nodes += [helper.make_node("LSTM", [layer_in, f"W{layer}", f"R{layer}", f"B{layer}"],
                                   [f"Y{layer}", f"Yh{layer}"], hidden_size=n * h),
                  helper.make_node("Squeeze", [f"Y{layer}", "axis1"], [f"y{layer}"])]
        layer_in = f"y{layer}"
    nodes += [helper.make_node("Squeeze", [f"Yh{LAYERS - 1}", "axis0_wide"], ["last_b_nh"]),
              helper.make_node("Reshape", ["last_b_nh", "nbh"], ["last_bnh"]),
              helper.make_node("Transpose", ["last_bnh"], ["last"], perm=[1, 0, 2])]
    head_and_mean("last", members, nodes, inits)
    return finish(nodes, inits, "wide_layout")


def lstm_anatomy(repeats):
    """One LSTM node (64 -> 64, 50 steps, batch 256) against its GEMMs alone."""
    t, b, h = 50, 256, HIDDEN
    rng = np.random.default_rng(0)
    w = const("W", rng.normal(size=(1, 4 * h, h)) * 0.1)
    r = const("R", rng.normal(size=(1, 4 * h, h)) * 0.1)
    m = const("M", rng.normal(size=(h, 4 * h)))
    def model(nodes, inputs, inits):
        graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    fin = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    lstm = model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=h)], [fin("x", [t, b, h])], [w, r])
    projection = model([helper.make_node("MatMul", ["x", "M"], ["y"])], [fin("x", [t * b, h])], [m])
    steps = model([helper.make_node("MatMul", [f"x{i}", "M"], [f"y{i}"]) for i in range(t)]
                  + [helper.make_node("Concat", [f"y{i}" for i in range(t)], ["y"], axis=0)],
                  [fin(f"x{i}", [b, h]) for i in range(t)], [m])
    x = rng.normal(size=(t, b, h)).astype(np.float32)
    print(f"\nInside one LSTM node ({h}->{h}, {t} steps, batch {b}): median ms")
    print(f"{'thr':>3} | {'LSTM node':>9} | {'input GEMM':>10} {'50 step GEMMs':>13} {'GEMM share':>10} | "
          f"{'torch: input GEMM':>17} {'50 step GEMMs':>13}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        node = median_ms(lambda s=session(lstm, threads): s.run(None, {"x": x}), repeats)
        proj = median_ms(lambda s=session(projection, threads): s.run(None, {"x": x.reshape(t * b, h)}), repeats)
        feeds = {f"x{i}": x[i] for i in range(t)}
        step = median_ms(lambda s=session(steps, threads): s.run(None, feeds), repeats)
        xt, mt, st = torch.from_numpy(x.reshape(t * b, h)), torch.from_numpy(numpy_helper.to_array(m).copy()), torch.from_numpy(x[0])
        tproj = median_ms(lambda: xt @ mt, repeats)
        tstep = median_ms(lambda: [st @ mt for _ in range(t)], repeats)
        print(f"{threads:>3} | {node:>9.2f} | {proj:>10.2f} {step:>13.2f} {100 * (proj + step) / node:>9.0f}% | "
              f"{tproj:>17.2f} {tstep:>13.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print("Member layouts, 2 threads (median ms per call; x/torch = PyTorch loop time / layout time)")
    print(f"{'members':>7} {'len':>4} {'batch':>5} | {'torch':>8} | {'nodes':>8} {'x/torch':>7} | "
          f"{'scan':>8} {'x/torch':>7} | {'wide':>8} {'x/torch':>7}")
    for n_members, length, batch in ((5, 20, 1), (5, 50, 256), (10, 50, 256), (5, 100, 256)):
        bag = make_bag(n_members)
        members = bag.members
        x = rng.normal(size=(length, batch, FEATURES)).astype(np.float32)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))

        def torch_loop():
            with torch.inference_mode():
                return torch.stack([m(xt) for m in members]).mean(0).numpy()

        nodes = session(compile_bag(bag))
        node_feeds = {"x": np.ascontiguousarray(x.transpose(1, 0, 2)), "lengths": np.full(batch, length, np.int64)}
        layouts = {"nodes": lambda: nodes.run(["prediction"], node_feeds)[0]}
        for name, build in (("scan", scan_layout), ("wide", wide_layout)):
            layouts[name] = lambda s=session(build(members)): s.run(None, {"x": x})[0]
        expected = torch_loop()
        for name, fn in layouts.items():  # the compiled graph undoes the target scaling: identity here
            np.testing.assert_allclose(fn(), expected, rtol=1e-4, atol=1e-5, err_msg=name)
        repeats = args.repeats if batch == 1 else max(3, args.repeats // 3)
        ms = {"torch": median_ms(torch_loop, repeats)}
        ms.update({name: median_ms(fn, repeats) for name, fn in layouts.items()})
        print(f"{n_members:>7} {length:>4} {batch:>5} | {ms['torch']:>8.2f} | "
              + " | ".join(f"{ms[k]:>8.2f} {ms['torch'] / ms[k]:>6.2f}x" for k in ("nodes", "scan", "wide")), flush=True)
    lstm_anatomy(args.repeats)


if __name__ == "__main__":
    main()
