"""Bag training time: the usual recipe vs bagcompile's trainer, on both real data sets, 10 members.

    python benchmarks/train.py [--members 10] [--repeats 3] [--quick]

Rows, measured side by side in one run on this machine:
- plain loop: one member after another, a standard PyTorch loop (DataLoader-style shuffled
  mini-batches over the member's bootstrap sample, ragged batches through pack_padded_sequence,
  fixed epochs, torch's default threads) — what most code does;
- trainer, 1 process: early stopping on each member's out-of-bag loss, batches trimmed to their
  longest row, no packing (unidirectional members gather each row's last valid step), data
  prepared once for the whole bag;
- trainer, n_jobs=2: the same, members in 2 processes of one thread each (this one and a worker).
Reports the median wall-clock seconds over ``--repeats`` runs of each (this machine is noisy:
single runs of the same bag varied by up to 30 %), the test score reached (the same in every
repeat: same seed, same bag), and the speed-up over the plain loop, ratio of medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from bagcompile import BaggedLSTMClassifier, BaggedLSTMRegressor
from bagcompile.bag import Bag, bag_forward
from bagcompile.estimators import as_padded
from bagcompile.members import LSTMMember, MemberSpec
from bagcompile.recipes import etth1, japanese_vowels


class PackedMember(LSTMMember):
    """The usual ragged-batch recipe: pack the padded batch, read the final hidden states."""

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.head(torch.cat(list(h_n[-self.spec.num_directions:]), dim=-1))


def plain_loop(est, recipe, epochs: int):
    """Train est's bag again, the usual way, reusing its bootstrap draws, transforms and seeds."""
    X, y, *spans = recipe.train
    x, lengths = as_padded(X, est.n_features_in_)
    from bagcompile.bag import member_inputs, target_to_head

    xs = member_inputs(est.input_transform_, torch.from_numpy(x), torch.from_numpy(lengths))
    if recipe.task == "classification":
        targets = torch.from_numpy(np.searchsorted(est.classes_, y).astype(np.int64))
        loss_fn, out = nn.CrossEntropyLoss(), len(est.classes_)
    else:
        t = est.target_transform_
        ref = x[np.arange(len(x)), lengths - 1, t.reference_feature] if t.reference_feature is not None else None
        targets = torch.from_numpy(np.ascontiguousarray(target_to_head(t, y, ref), dtype=np.float32))
        loss_fn, out = nn.MSELoss(), targets.shape[1]
    spec = MemberSpec(xs.shape[2], est.hidden_size, est.num_layers, est.bidirectional, 0.0, out)
    members = []
    start = time.perf_counter()
    for seed, draw in zip(est.member_seeds_, est.bootstrap_):
        torch.manual_seed(seed)
        model = PackedMember(spec)
        opt = torch.optim.Adam(model.parameters(), lr=est.learning_rate)
        for _ in range(epochs):
            order = torch.from_numpy(np.random.default_rng(seed).permutation(draw.in_bag))
            for i in range(0, len(order), est.batch_size):
                idx = order[i:i + est.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(xs[idx], torch.from_numpy(lengths)[idx]), targets[idx])
                loss.backward()
                opt.step()
        members.append(model.eval())
    seconds = time.perf_counter() - start
    bag = Bag(**{**est.bag_.__dict__, "members": members})
    return seconds, score(bag, recipe)


def score(bag, recipe) -> float:
    X, y = recipe.test
    x, lengths = as_padded(X, bag.input_transform.n_features)
    out = bag_forward(bag, x, lengths)
    if recipe.task == "classification":
        return float(np.mean(np.asarray(bag.classes)[out["label"]] == y))
    return float(np.mean((out["prediction"] - y) ** 2) / recipe.target_scale**2)


def trainer(recipe, members: int, n_jobs: int):
    cls = BaggedLSTMClassifier if recipe.task == "classification" else BaggedLSTMRegressor
    est = cls(**{**recipe.params, "n_members": members, "n_jobs": n_jobs})
    X, y, *spans = recipe.train
    kwargs = {"time_spans": spans[0]} if spans else {}
    start = time.perf_counter()
    est.fit(X, y, **kwargs)
    return est, time.perf_counter() - start, score(est.bag_, recipe)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 members, 1 repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    members = 3 if args.quick else args.members
    repeats = 1 if args.quick else args.repeats
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)
    rows = []
    for recipe, epochs, metric in ((japanese_vowels(), 30, "accuracy"), (etth1(), 20, "MSE")):
        t1, t2, tp = [], [], []
        for _ in range(repeats):  # interleaved, so slow spells of the machine hit every row alike
            est1, seconds, s1 = trainer(recipe, members, 1)
            t1.append(seconds)
            _, seconds, s2 = trainer(recipe, members, 2)
            t2.append(seconds)
            seconds, sp = plain_loop(est1, recipe, epochs)
            tp.append(seconds)
        tp, t1, t2 = (statistics.median(t) for t in (tp, t1, t2))
        rows.append((recipe.name, metric, epochs, tp, sp, t1, s1, t2, s2))
    print(f"\n{members} members, torch {torch.__version__}, {torch.get_num_threads()} threads by default, "
          f"median of {repeats} runs")
    print(f"{'data set':<16} {'metric':<8} | {'plain loop (epochs)':>20} {'score':>7} | {'trainer 1 proc':>14} "
          f"{'score':>7} {'speed-up':>8} | {'trainer n_jobs=2':>16} {'score':>7} {'speed-up':>8}")
    for name, metric, epochs, tp, sp, t1, s1, t2, s2 in rows:
        print(f"{name:<16} {metric:<8} | {tp:>14.1f} s ({epochs:>2}) {sp:>7.4f} | {t1:>12.1f} s {s1:>7.4f} "
              f"{tp / t1:>7.2f}x | {t2:>14.1f} s {s2:>7.4f} {tp / t2:>7.2f}x")


if __name__ == "__main__":
    main()
