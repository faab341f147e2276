"""Train the bag's members one after another, in worker processes, or as Ray tasks, keeping
finished ones.

Workers are separate processes (``spawn``) with one torch thread each: small LSTMs do not
scale with intra-op threads, but independent members do scale with cores. With ``n_jobs`` = n
the calling process is one of the n workers. Each worker receives
the prepared training data once (at start-up) and then only a member's seed and sample indices;
it sends back the member's weights as numpy arrays. Finished members are checkpointed by the
parent as they arrive, so an interrupt loses only the members still training.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

from .members import LSTMMember, MemberSpec
from .persistence import load_member, save_member
from .training import MemberData, TrainConfig, train_member

_worker_data: MemberData | None = None
PARENT_TRAINS = True  # with n_jobs > 1, the calling process trains queued members too


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` intra-op threads (None: leave torch's setting alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(data: MemberData, threads: int) -> None:
    global _worker_data
    _worker_data = data
    torch.set_num_threads(threads)


def _train_in_worker(k: int, spec: MemberSpec, in_bag, out_of_bag, seed: int, config: TrainConfig):
    member, history = train_member(spec, _worker_data, in_bag, out_of_bag, seed, config)
    return k, {name: t.numpy().copy() for name, t in member.state_dict().items()}, history


def _train_on_ray(data: MemberData, k: int, spec: MemberSpec, in_bag, out_of_bag, seed: int,
                  config: TrainConfig, threads: int):
    torch.set_num_threads(threads)
    member, history = train_member(spec, data, in_bag, out_of_bag, seed, config)
    return k, {name: t.numpy().copy() for name, t in member.state_dict().items()}, history


def _member_from_state(spec: MemberSpec, state: dict) -> LSTMMember:
    member = LSTMMember(spec)
    # Ray hands back read-only arrays (zero-copy from its object store): copy before torch owns them.
    member.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in state.items()})
    return member.eval()


def _run_on_ray(spec, data, config, seeds, draws, pending, address, threads, finish, say) -> None:
    """Members as Ray tasks: the training data goes to the object store once, each task gets a
    reference plus its seed and indices, and sends back numpy weights."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("backend='ray' needs Ray: pip install 'bagcompile[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=threads)(_train_on_ray)
        data_ref = ray.put(data)
        refs = [task.remote(data_ref, k, spec, draws[k].in_bag, draws[k].out_of_bag, seeds[k], config, threads)
                for k in pending]
        say(f"training {len(pending)} members as Ray tasks", len(seeds) - len(pending), len(seeds))
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            k, state, history = ray.get(done[0])
            finish(k, _member_from_state(spec, state), history)
    except BaseException:
        if ray.is_initialized():
            for ref in locals().get("refs", []):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def train_members(spec: MemberSpec, data: MemberData, config: TrainConfig, seeds, draws, *, n_jobs: int = 1,
                  threads_per_member: int | None = None, checkpoint_dir=None, fingerprint: str = "",
                  progress=None, backend: str = "local", ray_address: str | None = None
                  ) -> tuple[list[LSTMMember], list[dict]]:
    n = len(seeds)
    members: list = [None] * n
    histories: list = [None] * n
    say = progress or (lambda message, done, total: None)

    def finish(k, member, history):
        if checkpoint_dir is not None:
            save_member(Path(checkpoint_dir) / f"member_{k}.safetensors", member,
                        {"fingerprint": fingerprint, "history": history, "seed": seeds[k]})
        members[k], histories[k] = member, history
        done = sum(m is not None for m in members)
        say(f"member {k + 1}/{n} done (best epoch {history['best_epoch'] + 1})", done, n)

    for k in range(n):
        path = Path(checkpoint_dir) / f"member_{k}.safetensors" if checkpoint_dir else None
        if path is not None and path.is_file():
            member, meta = load_member(path)
            kept = sum(m is not None for m in members)
            if meta.get("fingerprint") == fingerprint and meta.get("seed") == seeds[k]:
                members[k], histories[k] = member, meta["history"]
                say(f"member {k + 1}/{n}: kept from checkpoint", kept + 1, n)
            else:
                say(f"member {k + 1}/{n}: checkpoint is from other data or settings; retraining", kept, n)
    pending = [k for k in range(n) if members[k] is None]

    if backend == "ray":
        if pending:
            _run_on_ray(spec, data, config, seeds, draws, pending, ray_address, threads_per_member or 1, finish, say)
        return members, histories
    if n_jobs <= 1 or len(pending) <= 1:
        with torch_threads(threads_per_member):
            for k in pending:
                _train_here(k, spec, data, config, seeds, draws, finish, say)
        return members, histories

    # n_jobs - 1 worker processes, and this process is the n-th worker. Each worker holds one
    # member at a time (the next is handed over when it finishes); this process trains the rest
    # from the back of the queue instead of waiting, so training starts before the workers'
    # start-up (~2 s of importing torch) and no member waits in a busy worker's queue.
    context = multiprocessing.get_context("spawn")
    workers = min(n_jobs, len(pending)) - (1 if PARENT_TRAINS else 0)
    queue = list(pending)
    running: dict = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_worker, initargs=(data, threads_per_member or 1)) as pool:
        def hand_out():
            while queue and len(running) < workers:
                k = queue.pop(0)
                running[pool.submit(_train_in_worker, k, spec, draws[k].in_bag, draws[k].out_of_bag,
                                    seeds[k], config)] = k

        def collect(timeout):
            finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                del running[future]
                k, state, history = future.result()
                finish(k, _member_from_state(spec, state), history)

        say(f"training {len(pending)} members in {min(n_jobs, len(pending))} processes", n - len(pending), n)
        try:
            with torch_threads(threads_per_member or 1):
                hand_out()
                while queue or running:
                    if queue and PARENT_TRAINS:
                        _train_here(queue.pop(), spec, data, config, seeds, draws, finish, say)
                        collect(timeout=0)
                    else:
                        collect(timeout=None)
                    hand_out()
        except BrokenProcessPool:
            raise RuntimeError("a training worker process died (out of memory, or started from a script "
                               "without `if __name__ == '__main__':` around fit with n_jobs > 1); finished "
                               "members are kept in the checkpoint directory") from None
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return members, histories


def _train_here(k, spec, data, config, seeds, draws, finish, say) -> None:
    n = len(seeds)
    on_epoch = lambda e, loss: say(f"member {k + 1}/{n} epoch {e + 1} loss {loss:.4f}", k, n)
    member, history = train_member(spec, data, draws[k].in_bag, draws[k].out_of_bag, seeds[k], config, on_epoch)
    finish(k, member, history)
