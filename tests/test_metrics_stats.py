"""Bootstrap intervals, McNemar (against scipy) and the paired bootstrap on TAR@FAR."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from meerbench.metrics import stats, verification
from meerbench.metrics.errors import MetricInputError


def test_bootstrap_ci_of_a_mean_matches_normal_theory() -> None:
    x = np.random.default_rng(0).normal(10.0, 2.0, 2000)
    lo, hi = stats.bootstrap_ci(lambda w: np.average(x, weights=w), x.size, rounds=2000, seed=1)
    half = 1.96 * x.std() / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_bootstrap_ci_of_several_values_is_one_row_each() -> None:
    x = np.arange(100.0)
    out = stats.bootstrap_ci(lambda w: np.array([np.average(x, weights=w), w.sum()]), 100,
                             rounds=50)
    assert out.shape == (2, 2)
    assert out[1].tolist() == [100.0, 100.0]  # every resample has n items


def test_bootstrap_is_seeded() -> None:
    a = list(stats.bootstrap_weights(30, rounds=3, seed=5))
    b = list(stats.bootstrap_weights(30, rounds=3, seed=5))
    c = list(stats.bootstrap_weights(30, rounds=3, seed=6))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


def test_batched_bootstrap_draws_the_same_resamples() -> None:
    x = np.random.default_rng(1).normal(size=300)
    groups = np.arange(300) // 7
    one = stats.bootstrap_samples(lambda w: w @ x, 300, groups, rounds=40, seed=2)
    block = stats.bootstrap_samples(lambda w: w @ x, 300, groups, rounds=40, seed=2,
                                    batched=True)
    np.testing.assert_allclose(block, one, rtol=1e-12)


def test_cluster_resampling_draws_whole_groups() -> None:
    groups = np.repeat(["ann", "bob", "cy", "dee", "eve"], [1, 2, 3, 4, 5])
    for weights in stats.bootstrap_weights(groups.size, groups, rounds=50, seed=0):
        for name in np.unique(groups):
            assert np.unique(weights[groups == name]).size == 1
        per_cluster = [weights[groups == name][0] for name in np.unique(groups)]
        assert sum(per_cluster) == 5  # five clusters drawn with replacement


def test_percentile_interval_skips_undefined_resamples() -> None:
    samples = np.array([[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan], [3.0, np.nan]])
    out = stats.percentile_interval(samples, alpha=0.5)
    assert out[0].tolist() == [1.5, 2.5]
    assert np.isnan(out[1]).all()
    assert stats.interval_json(out[1]) is None
    assert stats.interval_json(out[0]) == [1.5, 2.5]


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (7, 5), (12, 12), (20, 4), (60, 35)])
def test_mcnemar_matches_scipy(b: int, c: int) -> None:
    both, neither = 40, 10
    a = np.r_[np.ones(b), np.zeros(c), np.ones(both), np.zeros(neither)].astype(bool)
    other = np.r_[np.zeros(b), np.ones(c), np.ones(both), np.zeros(neither)].astype(bool)
    result = stats.mcnemar(a, other)
    assert (result["b"], result["c"]) == (b, c)
    if b + c < 25:
        assert result["exact"] is True
        expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    else:
        assert result["exact"] is False
        chi2 = max(abs(b - c) - 1, 0) ** 2 / (b + c)
        assert result["statistic"] == pytest.approx(chi2)
        expected = scipy_stats.chi2.sf(chi2, 1)
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)


def _pairs(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], n // 2)
    base = np.where(labels == 1, rng.normal(0.6, 0.2, n), rng.normal(0.0, 0.2, n))
    return base, labels, rng.normal(0, 0.2, n)


def test_paired_bootstrap_of_identical_models_is_null() -> None:
    scores, labels, _ = _pairs()
    result = verification.paired_bootstrap_tar_difference(scores, scores, labels, 0.01,
                                                          rounds=100)
    assert result == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}


def test_paired_bootstrap_detects_a_better_model() -> None:
    scores, labels, noise = _pairs()
    worse = scores + noise * (labels == 1)
    result = verification.paired_bootstrap_tar_difference(scores, worse, labels, 0.01, rounds=300,
                                                   groups=np.arange(labels.size) // 3)
    assert result["difference"] > 0
    assert 0 < result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert result["p_value"] == pytest.approx(2 / 301)


def test_stats_input_errors() -> None:
    with pytest.raises(MetricInputError, match="one cluster per item: expected shape \\(4,\\)"):
        next(stats.bootstrap_weights(4, groups=[1, 2]))
    with pytest.raises(MetricInputError, match="bootstrap rounds must be >= 1"):
        next(stats.bootstrap_weights(4, rounds=0))
    with pytest.raises(MetricInputError, match="cannot bootstrap an empty set"):
        next(stats.bootstrap_weights(0))
    with pytest.raises(MetricInputError, match="alpha must be in \\(0, 1\\)"):
        stats.percentile_interval([1.0, 2.0], alpha=1.5)
    with pytest.raises(MetricInputError, match="paired decisions differ in length: 2 vs 3"):
        stats.mcnemar([True, False], [True, False, True])
    with pytest.raises(MetricInputError, match="correct_a must be a 1-D array of booleans"):
        stats.mcnemar([0.5, 1.0], [True, False])
    with pytest.raises(MetricInputError, match="length mismatch: 2 scores but 4 labels"):
        verification.paired_bootstrap_tar_difference([1, 2, 3, 4], [1, 2], [1, 0, 1, 0], 0.1)


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).integers(-5, 50, 300),  # small range: counted
    np.random.default_rng(1).integers(0, 10**12, 300),  # wide range: sorted
    np.random.default_rng(2).integers(0, 4, 300).astype(np.uint8),
    np.array(["id10", "id9", "é", "", "id9 ", "Z"] * 20, dtype=object),  # strings: hashed
    np.array([3.5, -1.0, 3.5]),
])
def test_unique_inverse_is_np_unique(values: np.ndarray) -> None:
    distinct, inverse = stats.unique_inverse(values)
    want_distinct, want_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(distinct, want_distinct)
    np.testing.assert_array_equal(inverse, want_inverse)
    assert distinct.dtype == want_distinct.dtype


def test_progress_bar_draws_the_same_resamples(capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(3).normal(size=50)
    quiet = stats.bootstrap_samples(lambda w: w @ x, 50, rounds=30, seed=1)
    shown = stats.bootstrap_samples(lambda w: w @ x, 50, rounds=30, seed=1, progress=True)
    np.testing.assert_array_equal(quiet, shown)
    assert "30/30" in capsys.readouterr().err
