import numpy as np
import pytest

from bagcompile.datasets import (
    ETTH1_SPLITS, JAPANESE_VOWELS_FEATURES, dataset_names, etth1_forecast_split, load_csv_series,
    load_etth1, load_japanese_vowels, make_forecast_windows,
)

JV_TEST_COUNTS = [31, 35, 88, 44, 29, 24, 40, 50, 29]


def test_dataset_names():
    assert dataset_names() == ["japanese_vowels", "etth1"]


@pytest.mark.parametrize("split,n,max_len,counts", [
    ("train", 270, 26, [30] * 9), ("test", 370, 29, JV_TEST_COUNTS)])
def test_japanese_vowels(split, n, max_len, counts):
    seqs, labels = load_japanese_vowels(split)
    assert len(seqs) == n and labels.shape == (n,) and labels.dtype == np.int64
    lengths = [len(s) for s in seqs]
    assert min(lengths) == 7 and max(lengths) == max_len
    assert all(s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 12 for s in seqs)
    assert np.bincount(labels, minlength=10)[1:].tolist() == counts
    assert (np.diff(labels) >= 0).all()  # block order
    assert not any((s == 1.0).all(axis=1).any() for s in seqs)  # no separator rows kept
    assert JAPANESE_VOWELS_FEATURES == [f"lpc_{i}" for i in range(1, 13)]
    # first frame of the first training block, straight from the file
    if split == "train":
        assert seqs[0][0, 0] == pytest.approx(1.860936) and seqs[0][0, 11] == pytest.approx(0.088728)


def test_japanese_vowels_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_japanese_vowels("validation")


def test_etth1_load():
    values, names, dates = load_etth1()
    assert values.shape == (17420, 7) and values.dtype == np.float32
    assert names == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert values[0, 6] == pytest.approx(30.531, abs=1e-4)
    assert values[0, 0] == pytest.approx(5.827, abs=1e-4)
    assert dates.shape == (17420,)
    assert str(dates[0]) == "2016-07-01T00:00:00" and str(dates[-1]) == "2018-06-26T19:00:00"
    assert (np.diff(dates) == np.timedelta64(1, "h")).all()
    assert ETTH1_SPLITS == {"train": (0, 8640), "validation": (8640, 11520), "test": (11520, 14400)}


def test_etth1_train_windows():
    values = load_etth1()[0]
    X, y, spans = etth1_forecast_split("train")
    assert X.shape == (8640 - 96 - 24 + 1, 96, 7) and y.shape == (8521, 24) and spans.shape == (8521, 2)
    assert X.dtype == y.dtype == np.float32 and spans.dtype == np.int64
    assert spans.min() == 0 and spans[:, 1].max() == 8640  # nothing touches row >= 8640
    for i in (0, 1, 500, 8520):
        t = spans[i, 0]
        assert spans[i, 1] == t + 120
        np.testing.assert_array_equal(X[i], values[t:t + 96])
        np.testing.assert_array_equal(y[i], values[t + 96:t + 120, 6])
    assert y[0, 0] == values[96, 6] and y[0, 23] == values[119, 6] and y[-1, -1] == values[8639, 6]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_etth1_eval_windows(split):
    start, stop = ETTH1_SPLITS[split]
    values = load_etth1()[0]
    X, y, spans = etth1_forecast_split(split)
    assert len(X) == 2880 - 24 + 1 == 2857
    targets_first = spans[:, 0] + 96
    assert targets_first.min() == start and spans[:, 1].max() == stop  # targets in [start, stop)
    assert spans[:, 0].min() == start - 96  # inputs reach back into the previous part
    np.testing.assert_array_equal(y[0], values[start:start + 24, 6])
    np.testing.assert_array_equal(X[0], values[start - 96:start])


def test_etth1_stride():
    X, y, spans = etth1_forecast_split("train", input_length=48, horizon=12, stride=24)
    assert X.shape[1:] == (48, 7) and y.shape[1] == 12
    assert (np.diff(spans[:, 0]) == 24).all() and spans[-1, 1] <= 8640
    assert len(X) == (8640 - 60) // 24 + 1


def test_persistence_baseline():
    values = load_etth1()[0]
    X, y, _ = etth1_forecast_split("test")
    std = values[:8640, 6].std()
    pred = np.repeat(X[:, -1, 6:7], 24, axis=1)
    mse = float(np.mean((pred - y) ** 2) / std ** 2)
    assert round(mse, 4) == 0.0343


def test_make_forecast_windows_small():
    v = np.arange(40, dtype=np.float32).reshape(20, 2)
    X, y, spans = make_forecast_windows(v, 3, 2, 1, start=5, stop=15)
    assert spans.tolist() == [[t, t + 5] for t in range(5, 11)]
    np.testing.assert_array_equal(y[0], v[8:10, 1])
    X, y, spans = make_forecast_windows(v, 3, 2, 1, start=5, stop=15, lookback_from=2)
    assert spans[0].tolist() == [2, 7] and (spans[:, 0] + 3 >= 5).all() and spans[-1, 1] == 15
    with pytest.raises(ValueError, match="too short"):
        make_forecast_windows(v, 8, 3, 0, start=5, stop=15)


def _write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_csv_series(tmp_path):
    p = _write(tmp_path, "time,a,b\n2020-01-01 00:00,1,2.5\n2020-01-01 01:00,3,4\n")
    values, names = load_csv_series(p)
    assert names == ["a", "b"] and values.dtype == np.float32
    np.testing.assert_array_equal(values, [[1, 2.5], [3, 4]])
    values, names = load_csv_series(p, columns=["b"])
    assert names == ["b"] and values[:, 0].tolist() == [2.5, 4]
    values, names = load_csv_series(_write(tmp_path, "x,y\n1,2\n3,4\n", "n.csv"))
    assert names == ["x", "y"] and values.shape == (2, 2)  # numeric first column is kept


def test_load_csv_series_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_csv_series(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="empty"):
        load_csv_series(_write(tmp_path, "", "e.csv"))
    p = _write(tmp_path, "time,a,b\nt0,1,2\nt1,3,4\n")
    with pytest.raises(ValueError, match=r"column 'c' not in CSV; available: a, b"):
        load_csv_series(p, columns=["a", "c"])
    p = _write(tmp_path, "time,a,b\nt0,1,2\nt1,oops,4\n", "bad.csv")
    with pytest.raises(ValueError, match=r"non-numeric value 'oops' at data row 2 .*column 'a'"):
        load_csv_series(p)
