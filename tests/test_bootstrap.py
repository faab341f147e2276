"""Bootstrap draws on the real data: purged time blocks for ETTh1 windows, whole sequences for
Japanese Vowels. Pure NumPy, no training (fast)."""
import numpy as np
import pytest

from bagcompile.bootstrap import BootstrapDraw, block_bootstrap, purged_out_of_bag, sequence_bootstrap
from bagcompile.datasets import ETTH1_COLUMNS, ETTH1_SPLITS, etth1_forecast_split, load_etth1, load_japanese_vowels

INPUT_LENGTH, HORIZON = 96, 24
WINDOW = INPUT_LENGTH + HORIZON
SEEDS = [0, 1, 2, 3, 7]


@pytest.fixture(scope="module")
def train_spans():
    _, _, spans = etth1_forecast_split("train", INPUT_LENGTH, HORIZON, stride=1)
    return spans


@pytest.fixture(scope="module")
def jv_labels():
    return load_japanese_vowels("train")[1]


def _covered_rows(spans, indices, n_rows):
    """Rows inside at least one of the windows ``indices`` (straightforward loop, no prefix sums)."""
    covered = np.zeros(n_rows, dtype=bool)
    for first, stop in spans[np.unique(indices)]:
        covered[first:stop] = True
    return covered


# --- the data the draws work on ---------------------------------------------------------------

def test_train_windows_stay_in_train_rows(train_spans):
    start, stop = ETTH1_SPLITS["train"]
    assert train_spans.shape == (stop - start - WINDOW + 1, 2)  # stride 1: every window, no more
    assert train_spans.dtype == np.int64
    assert (train_spans[:, 1] - train_spans[:, 0] == WINDOW).all()
    assert train_spans[:, 0].min() == start
    # stop is exclusive: no training window touches row 8640 (first validation row) or later
    assert train_spans[:, 1].max() == stop == 8640
    assert (np.diff(train_spans[:, 0]) == 1).all()


@pytest.mark.parametrize("split", ["validation", "test"])
def test_validation_and_test_targets_lie_in_their_part(split):
    start, stop = ETTH1_SPLITS[split]
    X, y, spans = etth1_forecast_split(split, INPUT_LENGTH, HORIZON, stride=1)
    target_first = spans[:, 1] - HORIZON
    assert target_first.min() == start and spans[:, 1].max() == stop
    assert (target_first >= start).all() and (spans[:, 1] <= stop).all()
    # inputs may look back into the previous part, by at most input_length rows
    assert spans[:, 0].min() == start - INPUT_LENGTH
    values = load_etth1()[0]
    ot = ETTH1_COLUMNS.index("OT")
    for i in (0, len(y) // 2, len(y) - 1):
        rows = np.arange(target_first[i], spans[i, 1])
        np.testing.assert_array_equal(y[i], values[rows, ot])
        np.testing.assert_array_equal(X[i], values[spans[i, 0]:target_first[i]])


# --- block bootstrap on the real ETTh1 training windows ---------------------------------------

@pytest.mark.parametrize("block_length", [4 * WINDOW, 200])
@pytest.mark.parametrize("seed", SEEDS)
def test_block_bootstrap_out_of_bag_is_purged(train_spans, seed, block_length):
    n = len(train_spans)
    draw = block_bootstrap(train_spans, block_length, np.random.default_rng(seed))
    assert isinstance(draw, BootstrapDraw)
    assert draw.in_bag.dtype == np.int64 and draw.out_of_bag.dtype == np.int64
    assert draw.in_bag.min() >= 0 and draw.in_bag.max() < n
    assert len(draw.out_of_bag) > 0

    covered = _covered_rows(train_spans, draw.in_bag, ETTH1_SPLITS["train"][1])
    assert not covered[ETTH1_SPLITS["train"][1]:].any()
    touches = np.array([covered[a:b].any() for a, b in train_spans])
    # every out-of-bag window shares no time step with any in-bag window ...
    assert not touches[draw.out_of_bag].any()
    # ... and every window that does not touch the bag is out-of-bag (the purge is not too eager)
    np.testing.assert_array_equal(draw.out_of_bag, np.flatnonzero(~touches))
    assert np.intersect1d(draw.out_of_bag, draw.in_bag).size == 0


@pytest.mark.parametrize("block_length", [4 * WINDOW, 200])
@pytest.mark.parametrize("seed", SEEDS)
def test_block_bootstrap_draws_whole_blocks(train_spans, seed, block_length):
    n = len(train_spans)
    draw = block_bootstrap(train_spans, block_length, np.random.default_rng(seed))
    block_of = (train_spans[:, 0] - train_spans[:, 0].min()) // block_length
    n_blocks = int(block_of.max()) + 1
    counts = np.bincount(draw.in_bag, minlength=n)
    multiplicity = []
    for b in range(n_blocks):
        in_block = counts[block_of == b]
        assert (in_block == in_block[0]).all(), f"block {b} was drawn in part"
        multiplicity.append(int(in_block[0]))
    assert sum(multiplicity) == n_blocks  # as many blocks drawn as there are, with replacement
    assert 0 < sum(m == 0 for m in multiplicity) < n_blocks  # some blocks left out, not all
    # whole blocks of (mostly) equal size: the bag is about as large as the training set
    assert abs(len(draw.in_bag) - n) <= 2 * block_length
    assert np.array_equal(draw.in_bag, np.sort(draw.in_bag))


def test_block_bootstrap_max_samples(train_spans):
    block_length = 4 * WINDOW
    n_blocks = len(np.unique((train_spans[:, 0] - train_spans[:, 0].min()) // block_length))
    half = block_bootstrap(train_spans, block_length, np.random.default_rng(0), max_samples=0.5)
    counts = np.bincount(half.in_bag, minlength=len(train_spans))
    assert len(half.in_bag) == pytest.approx(0.5 * len(train_spans), abs=2 * block_length)
    block_of = (train_spans[:, 0] - train_spans[:, 0].min()) // block_length
    drawn = sum(int(counts[block_of == b][0]) for b in range(n_blocks))
    assert drawn == round(0.5 * n_blocks)
    five = block_bootstrap(train_spans, block_length, np.random.default_rng(0), max_samples=5)
    assert sum(int(np.bincount(five.in_bag, minlength=len(train_spans))[block_of == b][0])
               for b in range(n_blocks)) == 5


def test_block_bootstrap_bad_block_length(train_spans):
    with pytest.raises(ValueError, match="block_length"):
        block_bootstrap(train_spans, 0, np.random.default_rng(0))


def test_purged_out_of_bag_small_example():
    # windows [0,3) [2,5) [4,7) [6,9) [8,11); window 0 in the bag covers rows 0..2
    spans = np.array([[0, 3], [2, 5], [4, 7], [6, 9], [8, 11]])
    np.testing.assert_array_equal(purged_out_of_bag(spans, np.array([0])), [2, 3, 4])
    np.testing.assert_array_equal(purged_out_of_bag(spans, np.array([2])), [0, 4])
    np.testing.assert_array_equal(purged_out_of_bag(spans, np.array([0, 4])), [2])


# --- sequence bootstrap on the Japanese Vowels labels -----------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stratified", [False, True])
def test_sequence_bootstrap_out_of_bag_is_the_complement(jv_labels, seed, stratified):
    n = len(jv_labels)
    draw = sequence_bootstrap(n, np.random.default_rng(seed),
                              stratify=jv_labels if stratified else None)
    assert draw.in_bag.dtype == np.int64 and draw.out_of_bag.dtype == np.int64
    assert len(draw.in_bag) == pytest.approx(n, abs=9)  # stratified: rounding per class
    assert len(np.unique(draw.in_bag)) < len(draw.in_bag)  # with replacement
    np.testing.assert_array_equal(draw.out_of_bag, np.setdiff1d(np.arange(n), draw.in_bag))
    np.testing.assert_array_equal(np.union1d(draw.in_bag, draw.out_of_bag), np.arange(n))
    assert 0.25 * n < len(draw.out_of_bag) < 0.5 * n  # about 1/e of the sequences


@pytest.mark.parametrize("seed", SEEDS)
def test_stratified_draw_keeps_every_class(jv_labels, seed):
    # a skewed subset: 30 sequences of speaker 1, one of each other speaker; a tenth drawn
    keep = np.concatenate([np.flatnonzero(jv_labels == 1),
                           [np.flatnonzero(jv_labels == c)[0] for c in range(2, 10)]])
    labels = jv_labels[keep]
    draw = sequence_bootstrap(len(labels), np.random.default_rng(seed), max_samples=0.1, stratify=labels)
    assert set(labels[draw.in_bag]) == set(range(1, 10))
    # the balanced full set keeps its proportions exactly (30 per class)
    full = sequence_bootstrap(len(jv_labels), np.random.default_rng(seed), stratify=jv_labels)
    assert (np.bincount(jv_labels[full.in_bag], minlength=10)[1:] == 30).all()


def test_unstratified_small_draw_can_lose_classes(jv_labels):
    # what stratification is for: a plain 5 % draw misses some speaker for at least one seed
    missing = [len(set(jv_labels[sequence_bootstrap(len(jv_labels), np.random.default_rng(s), 0.05).in_bag]))
               < 9 for s in range(10)]
    assert any(missing)


@pytest.mark.parametrize("max_samples,expected", [(0.5, 135), (0.1, 27), (1.0, 270), (1, 270),
                                                  (100, 100), (400, 400), (np.int64(50), 50)])
def test_sequence_bootstrap_max_samples(jv_labels, max_samples, expected):
    draw = sequence_bootstrap(len(jv_labels), np.random.default_rng(0), max_samples)
    assert len(draw.in_bag) == expected
    assert draw.in_bag.max() < len(jv_labels)


@pytest.mark.parametrize("max_samples", [0, 0.0, -0.5, -3, 1.5, float("nan"), float("inf")])
def test_invalid_max_samples(max_samples, train_spans):
    with pytest.raises(ValueError, match="max_samples"):
        sequence_bootstrap(270, np.random.default_rng(0), max_samples)
    with pytest.raises(ValueError, match="max_samples"):
        block_bootstrap(train_spans, 480, np.random.default_rng(0), max_samples)


# --- reproducibility ----------------------------------------------------------------------------

def _same(a: BootstrapDraw, b: BootstrapDraw) -> bool:
    return np.array_equal(a.in_bag, b.in_bag) and np.array_equal(a.out_of_bag, b.out_of_bag)


def test_same_seed_same_draws(train_spans, jv_labels):
    for seed in SEEDS:
        assert _same(block_bootstrap(train_spans, 480, np.random.default_rng(seed)),
                     block_bootstrap(train_spans, 480, np.random.default_rng(seed)))
        for strata in (None, jv_labels):
            assert _same(sequence_bootstrap(270, np.random.default_rng(seed), stratify=strata),
                         sequence_bootstrap(270, np.random.default_rng(seed), stratify=strata))


def test_different_seeds_different_draws(train_spans, jv_labels):
    blocks = [block_bootstrap(train_spans, 480, np.random.default_rng(s)) for s in SEEDS]
    sequences = [sequence_bootstrap(270, np.random.default_rng(s), stratify=jv_labels) for s in SEEDS]
    for draws in (blocks, sequences):
        for i in range(len(draws)):
            for j in range(i + 1, len(draws)):
                assert not _same(draws[i], draws[j]), (SEEDS[i], SEEDS[j])
