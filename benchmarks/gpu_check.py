"""CUDA check (run by gpu_check.sh on a machine with an NVIDIA GPU; CI never runs it on CUDA).

1. Parity: the compiled graph on CUDAExecutionProvider (with IO binding) vs CPU, on a ragged
   batch with lengths 1..500 in one batch, for a bidirectional 2-layer bag.
2. Throughput: rows/s of the graph on CUDA (IO binding, inputs resident on the GPU) vs the
   PyTorch loop over members on CUDA, at batch 256 and 4096, 100 steps.
Exit 0 with 'skipped' when CUDA is not usable.

``--cpu-dry-run`` runs the same steps with CPU in place of CUDA, on small sizes: it proves the
script itself works (a test runs it) before a GPU machine's scarce minutes are spent on it.
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3  # cuDNN/TF32 may differ from CPU in the 4th digit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="CPU in place of CUDA, small sizes")
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import torch

    dry = args.cpu_dry_run
    if not dry and ("CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available()):
        print("skipped: no CUDA (onnxruntime providers: %s, torch.cuda: %s)"
              % (ort.get_available_providers(), torch.cuda.is_available()))
        return 0
    if not dry:
        # onnxruntime-gpu finds CUDA/cuDNN in the nvidia-* wheels (or torch's) only once loaded.
        torch.zeros(1, device="cuda")
        if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21
            ort.preload_dlls()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bags import ragged_batch, random_bag
    from inference import median_ms

    from bagcompile.compiler import compile_bag
    from bagcompile_runtime import EnsembleSession

    device, providers = ("cpu", "cpu") if dry else ("cuda", "cuda")
    max_length, batches, steps, repeats = (60, (16, 64), 20, 3) if dry else (500, (256, 4096), 100, 20)
    print(f"device: {device} ({'dry run' if dry else torch.cuda.get_device_name()}), onnxruntime "
          f"{ort.__version__}, torch {torch.__version__}")

    bag = random_bag("regression", n_features=12, n_outputs=3, members=((64, 2, True),) * 5, level_free=True,
                     reference_feature=0)
    data = compile_bag(bag).SerializeToString()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent fallback to CPU must fail this check
        accelerated = EnsembleSession(data, providers=providers)
    assert accelerated.device == device, (accelerated.providers, device)
    cpu = EnsembleSession(data, providers="cpu")
    x, lengths = ragged_batch(bag, 64, max_length, seed=0)
    lengths[:2] = [1, max_length]
    dx, dl = accelerated.device_inputs(x, lengths)
    got = {k: v.numpy() for k, v in accelerated.run_on_device(dx, dl).items()}
    want = cpu.run(x, lengths)
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"parity {device} (IO binding) vs CPU, 64 rows, lengths 1..{max_length} ragged: max |diff| = "
          f"{worst:.2e} ({'ok' if worst <= TOLERANCE else 'FAIL'}, tolerance {TOLERANCE:g})")

    bag = random_bag("regression", n_features=12, n_outputs=1, members=((64, 2, False),) * 10)
    accelerated = EnsembleSession(compile_bag(bag).SerializeToString(), providers=providers)
    members = [m.to(device).eval() for m in bag.members]
    for batch in batches:
        x = np.random.default_rng(0).normal(size=(batch, steps, 12)).astype(np.float32)
        dx, dl = accelerated.device_inputs(x)
        xt = torch.from_numpy(x).to(device)

        def torch_loop():
            with torch.inference_mode():
                out = torch.stack([m.head(m.lstm(xt)[1][0][-1]) for m in members]).mean(0)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        def graph():
            return accelerated.run_on_device(dx, dl, names=["prediction"])

        # The same numbers first (the graph undoes a target scaling the random bag sets).
        np.testing.assert_allclose(graph()["prediction"].numpy(), accelerated.predict(x), rtol=1e-5, atol=1e-5)
        tg, tt = median_ms(graph, repeats) / 1e3, median_ms(torch_loop, repeats) / 1e3
        print(f"batch {batch:>5} x {steps} steps, 10 members: graph {batch / tg:,.0f} rows/s, "
              f"torch loop {batch / tt:,.0f} rows/s, ratio {tt / tg:.2f}x")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
