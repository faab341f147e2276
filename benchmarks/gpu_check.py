"""CUDA check (run by gpu_check.sh on a machine with an NVIDIA GPU; CI never runs it).

1. Parity: the compiled graph on CUDAExecutionProvider (with IO binding) vs CPU, on a ragged
   batch with lengths 1..500 in one batch, for a bidirectional 2-layer bag.
2. Throughput: rows/s of the graph on CUDA (IO binding, inputs resident on the GPU) vs the
   PyTorch loop over members on CUDA, at batch 256 and 4096, 100 steps.
Exit 0 with 'skipped' when CUDA is not usable.
"""
import statistics
import sys
import time
import warnings

import numpy as np


def main():
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        print("skipped: no CUDA (onnxruntime providers: %s, torch.cuda: %s)"
              % (ort.get_available_providers(), torch.cuda.is_available()))
        return 0
    sys.path.insert(0, "tests")
    from bags import ragged_batch, random_bag

    from bagcompile.compiler import compile_bag
    from bagcompile_runtime import EnsembleSession

    bag = random_bag("regression", n_features=12, n_outputs=3, members=((64, 2, True),) * 5, level_free=True,
                     reference_feature=0)
    data = compile_bag(bag).SerializeToString()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent fallback to CPU must fail this check
        gpu = EnsembleSession(data, providers="cuda")
    cpu = EnsembleSession(data, providers="cpu")
    x, lengths = ragged_batch(bag, 64, 500, seed=0)
    lengths[:2] = [1, 500]
    dx, dl = gpu.device_inputs(x, lengths)
    got = {k: v.numpy() for k, v in gpu.run_on_device(dx, dl).items()}
    want = cpu.run(x, lengths)
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"parity CUDA vs CPU, lengths 1..500 ragged: max |diff| = {worst:.2e} "
          f"({'ok' if worst <= 1e-3 else 'FAIL'}; cuDNN/TF32 may differ from CPU in the 4th digit)")

    bag = random_bag("regression", n_features=12, n_outputs=1, members=((64, 2, False),) * 10)
    gpu = EnsembleSession(compile_bag(bag).SerializeToString(), providers="cuda")
    members = [m.cuda().eval() for m in bag.members]
    for batch in (256, 4096):
        x = np.random.default_rng(0).normal(size=(batch, 100, 12)).astype(np.float32)
        dx, dl = gpu.device_inputs(x)
        xt = torch.from_numpy(x).cuda()

        def torch_loop():
            with torch.inference_mode():
                out = torch.stack([m.head(m.lstm(xt)[1][0][-1]) for m in members]).mean(0)
            torch.cuda.synchronize()
            return out

        def graph():
            return gpu.run_on_device(dx, dl, names=["prediction"])

        def median(fn, repeats=20):
            fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        tg, tt = median(graph), median(torch_loop)
        print(f"batch {batch:>5} x 100 steps, 10 members: graph {batch / tg:,.0f} rows/s, "
              f"torch loop {batch / tt:,.0f} rows/s, ratio {tt / tg:.2f}x")
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
