"""Random (untrained) bags for compiler tests: weights as PyTorch initialises them, real transforms."""
import numpy as np
import torch

from bagcompile.bag import Bag, InputTransform, TargetTransform
from bagcompile.members import LSTMMember, MemberSpec


def random_bag(task="classification", n_features=4, n_outputs=3, members=((8, 1, False),), seed=0,
               level_free=False, feature_indices=None, reference_feature=None, weights=None, vote="soft",
               dropout=0.0):
    """``members``: (hidden, layers, bidirectional) per member, architectures may differ."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    transform = InputTransform(rng.normal(size=n_features), rng.uniform(0.5, 3.0, size=n_features),
                               level_free, feature_indices)
    specs = [MemberSpec(transform.n_member_inputs, h, layers, bidir, dropout if layers > 1 else 0.0, n_outputs)
             for h, layers, bidir in members]
    kwargs = dict(classes=[f"c{i}" for i in range(n_outputs)]) if task == "classification" else dict(
        target_transform=TargetTransform(rng.normal(size=n_outputs), rng.uniform(0.5, 2, size=n_outputs),
                                         reference_feature),
        target_names=[f"t{i}" for i in range(n_outputs)])
    return Bag(task, [LSTMMember(s).eval() for s in specs], transform,
               [f"f{i}" for i in range(n_features)], member_weights=weights, vote=vote, **kwargs)


def ragged_batch(bag, batch, time, seed=0, garbage=1e3, lengths=None):
    """Raw-unit inputs with ragged lengths (1..time, any order) and garbage, not zeros, in the padding."""
    rng = np.random.default_rng(seed)
    t = bag.input_transform
    x = (rng.normal(size=(batch, time, t.n_features)) * t.scale + t.mean).astype(np.float32)
    if lengths is None:
        lengths = rng.integers(1, time + 1, size=batch)
        lengths[rng.integers(batch)] = time
    lengths = np.asarray(lengths, dtype=np.int64)
    for i, n in enumerate(lengths):
        x[i, n:] = rng.normal(0, garbage, size=(time - n, t.n_features))
    return x, lengths
