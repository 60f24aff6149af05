"""Operational metric speed (pytest-benchmark; skipped by default, run with
``--benchmark-enable``): the identity bootstrap reading only the pairs on the error side of the
thresholds, against the same statistic over per-pair weights (the definition), both timed
with one clock in one process; intervals must be identical."""

from __future__ import annotations

import time

import numpy as np
import pytest

from meerbench.metrics.identification import FpirThresholds
from meerbench.metrics.operational import OperationalSettings, operational_report
from meerbench.metrics.stats import bootstrap_samples, percentile_interval

ROUNDS, FAST = 20, 400  # rounds of the per-pair reference and of the metric
CONDITIONS = ("UMR-UMP", "UMR-MP", "MR-MP")


def dense_like(impostors: int, identities: int = 1000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """3 conditions x (all genuine pairs of 1,000 identities x 5 + 5 images, ``impostors``)."""
    rng = np.random.default_rng(seed)
    parts = []
    for cond, shift, genuine in (("UMR-UMP", 4.0, 10_000), ("UMR-MP", 3.0, 20_000),
                                 ("MR-MP", 2.5, 10_000)):
        n = genuine + impostors
        labels = np.r_[np.ones(genuine, bool), np.zeros(impostors, bool)]
        groups = rng.integers(0, identities, n)
        family = np.array(["", "surgical", "n95", "kn95", "cloth", "fabric"], dtype=object)[
            (cond != "UMR-UMP") * (1 + groups % 5)]
        parts.append((rng.normal(0, 1, n) + shift * labels, labels, np.full(n, cond, object),
                      groups, family))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def per_pair_intervals(scores, labels, conditions, groups, settings) -> np.ndarray:
    """The definition: FNMR and FMR per condition from per-pair resample weights, every pair
    touched every round (what the operational metric computed before it drew identities)."""
    ref_imp = (conditions == "UMR-UMP") & ~labels
    finder = FpirThresholds(scores[ref_imp])
    blocks = []
    for cond in CONDITIONS:
        for side in (labels, ~labels):
            members = np.flatnonzero((conditions == cond) & side)
            order = np.argsort(scores[members])
            blocks.append((scores[members][order], members[order]))

    def statistic(w: np.ndarray) -> np.ndarray:
        t = finder(settings.fmr_targets, w[ref_imp])[0]
        out = []
        for k, (sorted_scores, members) in enumerate(blocks):
            cum = np.r_[0, np.cumsum(w[members])]
            below = cum[np.searchsorted(sorted_scores, t, side="left")] / cum[-1]
            out.append(below if k % 2 == 0 else 1 - below)  # FNMR, then FMR (score >= t)
        return np.concatenate(out)

    return percentile_interval(bootstrap_samples(statistic, scores.size, groups,
                                                 settings.bootstrap, settings.seed))


def _seconds(fn, *args, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def test_bench_operational_3x1m_impostors(benchmark) -> None:
    """Cost per bootstrap round, identities drawn vs per-pair weights, on the same numbers
    (FNMR and FMR of 3 conditions at 3 FMR targets; families off, as the reference has none):
    (time with R rounds - time without) / R for each, best of two setups."""
    scores, labels, conditions, groups, _ = dense_like(1_000_000)
    args = (scores, labels, conditions)
    benchmark.pedantic(operational_report, args=(*args, OperationalSettings(bootstrap=FAST),
                                                 groups), rounds=1, iterations=1)
    setup = _seconds(operational_report, *args, OperationalSettings(bootstrap=0), groups,
                     repeat=2)
    fast_round = (benchmark.stats["median"] - setup) / FAST
    settings = OperationalSettings(bootstrap=ROUNDS)
    reference = per_pair_intervals(*args, groups, settings)
    slow_round = (_seconds(per_pair_intervals, *args, groups, settings) - _seconds(
        per_pair_intervals, *args, groups, OperationalSettings(bootstrap=1), repeat=2)) / (
        ROUNDS - 1)
    report = operational_report(*args, settings, groups)
    got = [p["conditions"][c][rate]["ci95"] for c in CONDITIONS for rate in ("fnmr", "fmr")
           for p in report["operating_points"]]
    assert np.array(got) == pytest.approx(reference, abs=1e-12)
    assert report["operating_points"][2]["n_false_matches"] == 10  # FMR 1e-5 of 1 M: measured
    benchmark.extra_info.update(pairs=int(scores.size), rounds=FAST, setup_s=setup,
                                per_round_s=fast_round, per_pair_weights_per_round_s=slow_round,
                                speedup_per_round=slow_round / fast_round)
    assert slow_round > fast_round
