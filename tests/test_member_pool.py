"""Members trained in worker processes give the same bag, bit for bit, as one after another."""
import numpy as np
import torch

from bagcompile import BaggedLSTMClassifier
from bagcompile.datasets import load_japanese_vowels
from bagcompile.member_pool import torch_threads


def _fit(n_jobs, checkpoint_dir=None, progress=None):
    X, y = load_japanese_vowels("train")
    return BaggedLSTMClassifier(n_members=3, hidden_size=8, max_epochs=3, random_state=5, n_jobs=n_jobs).fit(
        X, y, checkpoint_dir=checkpoint_dir, progress=progress)


def test_two_worker_processes_equal_one_process(tmp_path):
    messages = []
    with torch_threads(1):  # the workers run one thread each; match it in the parent for bit-equality
        sequential = _fit(1)
    parallel = _fit(2, checkpoint_dir=tmp_path, progress=lambda m, d, t: messages.append(m))
    for a, b in zip(sequential.bag_.members, parallel.bag_.members):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member_{k}.safetensors" for k in range(3)]
    assert any("worker processes" in m for m in messages)
    X_test, _ = load_japanese_vowels("test")
    np.testing.assert_array_equal(sequential.predict(X_test), parallel.predict(X_test))
    # A re-run finds every member checkpointed and starts no worker.
    again = []
    _fit(2, checkpoint_dir=tmp_path, progress=lambda m, d, t: again.append(m))
    assert sum("kept from checkpoint" in m for m in again) == 3 and not any("worker" in m for m in again)
