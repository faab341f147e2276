"""Does fusing the members into one batched computation make bag training faster? (No, here.)

    python benchmarks/member_fusion.py [--members 10] [--epochs 2]

Issue 4 asks whether members can share work instead of training one after another. torch has
no vmap rule for nn.LSTM, so the fused form here is the only one open: all members' LSTMs written
as one batched matmul per time step (weights stacked (members, in, 4 * hidden)), each member
still on its own bootstrap mini-batches, one optimizer step for all. It is timed against what the
trainer does (torch's native nn.LSTM per member, one member after another), per epoch, on the
real training data of both bundled sets, on 1 and 2 threads. Same arithmetic, same batches;
only the kernel layout differs. Median of ``--epochs`` epochs after one warm-up epoch.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from bagcompile.estimators import as_padded
from bagcompile.members import LSTMMember, MemberSpec
from bagcompile.recipes import etth1, japanese_vowels

from inference import median_ms  # one warm-up, then the median

HIDDEN, BATCH = 32, 32


class FusedLSTMs(nn.Module):
    """``members`` one-layer LSTMs + linear heads as stacked tensors: one bmm per step for all."""

    def __init__(self, members: int, features: int, hidden: int, outputs: int):
        super().__init__()
        k = hidden ** -0.5
        def param(*shape):
            return nn.Parameter(torch.empty(*shape).uniform_(-k, k))
        self.w_ih, self.w_hh = param(members, features, 4 * hidden), param(members, hidden, 4 * hidden)
        self.bias, self.head_w, self.head_b = param(members, 1, 4 * hidden), param(members, hidden, outputs), param(members, 1, outputs)
        self.hidden = hidden

    def forward(self, x, lengths):  # x (M, B, T, F), lengths (M, B)
        m, b, t, f = x.shape
        gates_x = (x.reshape(m, b * t, f) @ self.w_ih).reshape(m, b, t, -1) + self.bias[:, :, None]
        h = x.new_zeros(m, b, self.hidden)
        c = torch.zeros_like(h)
        last = torch.zeros_like(h)
        for step in range(t):
            i, f_, g, o = (gates_x[:, :, step] + h @ self.w_hh).chunk(4, -1)
            c = torch.sigmoid(f_) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            last = torch.where((lengths == step + 1)[..., None], h, last)  # each row's last valid step
        return last @ self.head_w + self.head_b


def real_data(recipe):
    """Member-space inputs, lengths and head targets of a recipe's training part."""
    x, lengths = as_padded(recipe.train[0])
    y = np.asarray(recipe.train[1])
    if recipe.task == "classification":
        targets = torch.from_numpy(np.unique(y, return_inverse=True)[1].astype(np.int64))
        outputs, loss = int(targets.max()) + 1, nn.CrossEntropyLoss()
    else:
        t = recipe.params["residual_feature"]
        x = x[:, :, [t]]  # the ETTh1 members read OT only
        targets = torch.from_numpy(((y - x[:, -1, :]) / recipe.target_scale).astype(np.float32))
        x = (x - x[:, -1:, :]) / recipe.target_scale  # level-free, as the trainer prepares it
        outputs, loss = targets.shape[1], nn.MSELoss()
    return torch.from_numpy(x), torch.from_numpy(lengths), targets, outputs, loss


def epoch_orders(members, n, rng):
    return [torch.from_numpy(rng.choice(n, n)) for _ in range(members)]  # bootstrap draws


def sequential_epoch(models, opts, data, orders):
    x, lengths, targets, _, loss_fn = data
    for model, opt, order in zip(models, opts, orders):
        for s in range(0, len(order), BATCH):
            idx = order[s:s + BATCH]
            t_max = int(lengths[idx].max())
            opt.zero_grad()
            loss_fn(model(x[idx, :t_max], lengths[idx]), targets[idx]).backward()
            opt.step()


def fused_epoch(model, opt, data, orders):
    x, lengths, targets, outputs, loss_fn = data
    idx_all = torch.stack(orders)
    for s in range(0, idx_all.shape[1], BATCH):
        idx = idx_all[:, s:s + BATCH]
        t_max = int(lengths[idx].max())
        opt.zero_grad()
        out = model(x[idx, :t_max], lengths[idx])
        y = targets[idx]
        (loss_fn(out.reshape(-1, outputs), y.reshape(-1) if y.dim() == 2 else y.reshape(-1, outputs))
         * len(orders)).backward()  # the sum of the members' mean losses: each gets its own gradient
        opt.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.members} members, hidden {HIDDEN}, batch {BATCH}, torch {torch.__version__}; seconds per epoch (median)")
    print(f"{'data set':<16} {'threads':>7} | {'nn.LSTM per member':>18} | {'fused bmm LSTM':>14} {'fused/native':>12}")
    for recipe in (japanese_vowels(), etth1()):
        data = real_data(recipe)
        x, _, _, outputs, _ = data
        rng = np.random.default_rng(0)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            models = [LSTMMember(MemberSpec(x.shape[2], HIDDEN, 1, False, 0.0, outputs)) for _ in range(args.members)]
            opts = [torch.optim.Adam(m.parameters(), 3e-3) for m in models]
            fused = FusedLSTMs(args.members, x.shape[2], HIDDEN, outputs)
            fused_opt = torch.optim.Adam(fused.parameters(), 3e-3)
            native = median_ms(lambda: sequential_epoch(models, opts, data, epoch_orders(args.members, len(x), rng)), args.epochs) / 1e3
            joint = median_ms(lambda: fused_epoch(fused, fused_opt, data, epoch_orders(args.members, len(x), rng)), args.epochs) / 1e3
            print(f"{recipe.name:<16} {threads:>7} | {native:>16.2f} s | {joint:>12.2f} s {joint / native:>11.2f}x")


if __name__ == "__main__":
    main()
