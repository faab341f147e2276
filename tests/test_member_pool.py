"""Members trained in worker processes give the same bag, bit for bit, as one after another."""
import numpy as np
import pytest
import torch

from bagcompile import BaggedLSTMClassifier
from bagcompile.datasets import load_japanese_vowels
from bagcompile import member_pool
from bagcompile.member_pool import torch_threads


def _fit(n_jobs, checkpoint_dir=None, progress=None):
    X, y = load_japanese_vowels("train")
    return BaggedLSTMClassifier(n_members=3, hidden_size=8, max_epochs=3, random_state=5, n_jobs=n_jobs).fit(
        X, y, checkpoint_dir=checkpoint_dir, progress=progress)


@pytest.mark.parametrize("parent_trains", [True, False])
def test_two_worker_processes_equal_one_process(tmp_path, monkeypatch, parent_trains):
    monkeypatch.setattr(member_pool, "PARENT_TRAINS", parent_trains)
    messages = []
    with torch_threads(1):  # the workers run one thread each; match it in the parent for bit-equality
        sequential = _fit(1)
    parallel = _fit(2, checkpoint_dir=tmp_path, progress=lambda m, d, t: messages.append(m))
    for a, b in zip(sequential.bag_.members, parallel.bag_.members):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member_{k}.safetensors" for k in range(3)]
    assert "training 3 members in 2 processes" in messages
    # Members trained in this process report their epochs; members from a worker do not.
    here = {m.split()[1] for m in messages if m.split()[2:3] == ["epoch"]}
    done = {m.split()[1] for m in messages if m.endswith(")") and "done" in m}
    assert done == {"1/3", "2/3", "3/3"}
    assert ("3/3" in here) if parent_trains else not here  # the parent takes the last queued first
    X_test, _ = load_japanese_vowels("test")
    np.testing.assert_array_equal(sequential.predict(X_test), parallel.predict(X_test))
    # A re-run finds every member checkpointed and starts no worker.
    again = []
    _fit(2, checkpoint_dir=tmp_path, progress=lambda m, d, t: again.append(m))
    assert sum("kept from checkpoint" in m for m in again) == 3 and not any("processes" in m for m in again)
