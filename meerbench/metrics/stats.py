"""Uncertainty and paired comparison: bootstrap intervals, McNemar, paired bootstrap on TAR@FAR.

A bootstrap resample is a vector of multiplicities (how often each item was drawn), so a statistic
written over weights reuses any sort done once instead of re-sorting every resample. With
``groups`` (e.g. the probe identity of each pair) whole clusters are drawn, because pairs sharing
an identity are not independent and resampling them singly makes intervals too narrow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from meerbench.metrics.errors import MetricInputError

_BLOCK = 2**16  # weights per batched block: small enough to stay in cache
Statistic = Callable[[np.ndarray], "float | np.ndarray"]


def bootstrap_weights(
    n: int, groups: ArrayLike | None = None, rounds: int = 1000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield ``rounds`` seeded resamples of ``n`` items as per-item multiplicities (int64)."""
    if n < 1:
        raise MetricInputError("cannot bootstrap an empty set")
    if rounds < 1:
        raise MetricInputError(f"bootstrap rounds must be >= 1, got {rounds}")
    rng = np.random.default_rng(seed)
    if groups is None:
        cluster, n_clusters = None, n
    else:
        cluster, n_clusters = cluster_index(groups, n)
    for _ in range(rounds):
        counts = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)
        yield counts if cluster is None else counts[cluster]


def cluster_index(groups: ArrayLike, n: int) -> tuple[np.ndarray, int]:
    """Each item's cluster as 0..k-1 in sorted order of the group labels, and k.

    The resample of clusters is drawn in this order, so a statistic over cluster counts sees
    the same resamples as one over per-item weights (:func:`bootstrap_weights`)."""
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise MetricInputError(
            f"groups must give one cluster per item: expected shape ({n},), got {labels.shape}"
        )
    distinct, cluster = unique_inverse(labels)
    return cluster, distinct.size


def unique_inverse(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a 1-D array: the distinct values, sorted,
    and each value's index among them; O(n) by counting for integers of a small range and by
    hashing for strings (in an object array)."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "iu" and values.size:
        low, high = int(values.min()), int(values.max())
        if high - low <= 4 * values.size:
            offset = values - low
            present = np.bincount(offset, minlength=high - low + 1) > 0
            distinct = (np.flatnonzero(present) + low).astype(values.dtype)
            return distinct, (np.cumsum(present) - 1)[offset]
    if values.dtype == object and values.size and all(isinstance(v, str) for v in values[:1]):
        import pandas as pd  # hashing, O(n): np.unique sorts n Python objects

        codes, distinct = pd.factorize(values, sort=True)
        if (codes >= 0).all() and all(isinstance(v, str) for v in distinct):
            return np.asarray(distinct, dtype=object), codes.astype(np.int64)
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1)


def bootstrap_samples(
    statistic: Statistic,
    n: int,
    groups: ArrayLike | None = None,
    rounds: int = 1000,
    seed: int = 0,
    *,
    batched: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """``statistic`` on every resample: shape (rounds,) or (rounds, k).

    With ``batched``, ``statistic`` takes a block of resamples, a (b, n) weights matrix of about
    65k entries (at least one row), and returns (b,) or (b, k), so it can vectorise over
    resamples. Both ways draw the same resamples for the same seed. ``progress`` shows a bar
    over the rounds (on stderr).
    """
    from tqdm.auto import tqdm

    weights = bootstrap_weights(n, groups, rounds, seed)
    block = max(1, _BLOCK // n) if batched else 1
    parts = []
    with tqdm(total=rounds, disable=not progress, unit="round", desc="bootstrap") as bar:
        while chunk := list(itertools.islice(weights, block)):
            if batched:
                parts.append(np.asarray(statistic(np.stack(chunk)), dtype=np.float64))
            else:
                parts.append(np.asarray([statistic(chunk[0])], dtype=np.float64))
            bar.update(len(chunk))
    return np.concatenate(parts)


def percentile_interval(samples: ArrayLike, alpha: float = 0.05) -> np.ndarray:
    """Percentile interval per column, ignoring NaN resamples: shape (2,) or (k, 2).

    A column with no finite resample (the statistic was undefined every time) gives NaN bounds.
    """
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")
    values = np.asarray(samples, dtype=np.float64)
    columns = values.reshape(values.shape[0], -1).T
    out = np.full((columns.shape[0], 2), np.nan)
    for i, column in enumerate(columns):
        finite = column[~np.isnan(column)]
        if finite.size:
            out[i] = np.percentile(finite, [50.0 * alpha, 100.0 - 50.0 * alpha])
    return out[0] if values.ndim == 1 else out


def paired_p_values(samples: ArrayLike) -> np.ndarray:
    """Two-sided p-value for "no difference" per column of bootstrap differences (rounds, ...):
    2 x the smaller share of finite resamples on either side of 0, counted as
    (1 + count) / (1 + resamples) so it is never 0, capped at 1. Shape: ``samples.shape[1:]``."""
    values = np.asarray(samples, dtype=np.float64)
    finite = (~np.isnan(values)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        below = (1 + (values <= 0).sum(axis=0)) / (1 + finite)
        above = (1 + (values >= 0).sum(axis=0)) / (1 + finite)
    return np.minimum(1.0, 2.0 * np.minimum(below, above))


def bootstrap_ci(
    statistic: Statistic,
    n: int,
    groups: ArrayLike | None = None,
    rounds: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> np.ndarray:
    """Percentile bootstrap interval of ``statistic(weights)``: [lo, hi], or (k, 2) for k values.

    ``statistic`` receives the multiplicity of each of the ``n`` items in one resample.
    """
    return percentile_interval(bootstrap_samples(statistic, n, groups, rounds, seed), alpha)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> dict[str, Any]:
    """McNemar test on paired decisions of two models over the same pairs.

    ``b`` counts pairs only model A gets right, ``c`` those only B gets right. Exact two-sided
    binomial test when b + c < 25 (statistic = min(b, c)), otherwise chi-square with continuity
    correction, (max(|b - c| - 1, 0))^2 / (b + c), one degree of freedom.
    """
    a = _binary(correct_a, "correct_a")
    b_ = _binary(correct_b, "correct_b")
    if a.shape != b_.shape:
        raise MetricInputError(f"paired decisions differ in length: {a.size} vs {b_.size}")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    n = b + c
    if n < 25:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
        return {"b": b, "c": c, "statistic": float(k), "p_value": min(1.0, 2.0 * tail),
                "exact": True}
    chi2 = max(abs(b - c) - 1, 0) ** 2 / n
    return {"b": b, "c": c, "statistic": chi2, "p_value": math.erfc(math.sqrt(chi2 / 2.0)),
            "exact": False}


def interval_json(interval: ArrayLike) -> list[float] | None:
    """[lo, hi] as JSON floats, or None when the interval is undefined (NaN)."""
    lo, hi = (float(v) for v in np.asarray(interval, dtype=np.float64))
    return None if math.isnan(lo) or math.isnan(hi) else [lo, hi]


def _binary(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
        raise MetricInputError(f"{name} must be a 1-D array of booleans (or 0/1)")
    return array.astype(bool)
