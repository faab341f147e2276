"""Members as tasks on a (local) Ray cluster: the same bag, bit for bit, as the local backend."""
import pytest
import torch

from bagcompile import BaggedLSTMClassifier
from bagcompile.datasets import load_japanese_vowels
from bagcompile.member_pool import torch_threads

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))  # session files not in the shared /tmp/ray
    yield
    ray.shutdown()


def _fit(**params):
    X, y = load_japanese_vowels("train")
    return BaggedLSTMClassifier(n_members=3, hidden_size=8, max_epochs=3, random_state=11, **params).fit(X, y)


def test_ray_backend_equals_local_backend(ray_cluster, tmp_path):
    with torch_threads(1):  # Ray tasks train on one thread each; match it locally for bit-equality
        local = _fit()
    X, y = load_japanese_vowels("train")
    messages = []
    remote = BaggedLSTMClassifier(n_members=3, hidden_size=8, max_epochs=3, random_state=11, backend="ray").fit(
        X, y, checkpoint_dir=tmp_path, progress=lambda m, d, t: messages.append(m))
    for a, b in zip(local.bag_.members, remote.bag_.members):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert any("Ray tasks" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member_{k}.safetensors" for k in range(3)]
    assert remote.oob_score_ == local.oob_score_


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be"):
        _fit(backend="spark")


def test_cli_train_with_ray_backend(ray_cluster, tmp_path):
    from click.testing import CliRunner

    from bagcompile.cli import cli

    result = CliRunner().invoke(cli, ["train", "japanese_vowels", "--out", str(tmp_path / "run"), "--members", "2",
                                      "--hidden", "8", "--epochs", "1", "--backend", "ray"])
    assert result.exit_code == 0, result.output
    assert "Ray tasks" in result.stderr and (tmp_path / "run" / "members.safetensors").is_file()
