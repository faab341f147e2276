"""Many files scored in a Dask cluster, one session per worker, equal to scoring them one by one."""
from pathlib import Path

import numpy as np
import pytest

from bagcompile.datasets import load_japanese_vowels
from bagcompile_runtime import EnsembleSession, pad_sequences
from bagcompile_runtime.batch import score_npz, session_for

distributed = pytest.importorskip("dask.distributed")
MODEL = str(Path(__file__).resolve().parents[1] / "exported" / "japanese_vowels.onnx")


def write_files(tmp_path, n_files=6):
    X, _ = load_japanese_vowels("test")
    paths = []
    for k in range(n_files):
        x, lengths = pad_sequences(X[k * 50:(k + 1) * 50], 12)
        path = tmp_path / f"part_{k}.npz"
        np.savez(path, x=x, lengths=lengths)
        paths.append(str(path))
    return paths


def test_session_is_created_once_per_process():
    assert session_for(MODEL) is session_for(MODEL)


def test_dask_scores_every_file_with_one_session_per_worker(tmp_path):
    files = write_files(tmp_path)
    outputs = [f.replace(".npz", ".pred.npz") for f in files]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  local_directory=str(tmp_path / "dask")) as cluster, \
            distributed.Client(cluster) as client:
        summaries = client.gather(client.map(score_npz, [MODEL] * len(files), files, outputs))
    assert [s["rows"] for s in summaries] == [50] * 6
    assert 1 <= len({s["pid"] for s in summaries}) <= 2
    session = EnsembleSession(MODEL, providers="cpu")
    for source, result in zip(files, outputs):
        with np.load(source) as data, np.load(result) as scored:
            expected = session.run(data["x"], data["lengths"])
            np.testing.assert_array_equal(scored["label"], expected["label"])
            np.testing.assert_allclose(scored["probabilities"], expected["probabilities"], atol=1e-6)
