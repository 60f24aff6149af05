"""Operational metrics, NIST FRVT masked-face style: one threshold, fixed on unmasked impostors.

The rule (recorded in every report as :data:`RULE`): at each FMR target the threshold ``t`` is
bob.measure's ``far_threshold`` on the reference condition's (UMR-UMP) impostor scores, the
lowest impostor score whose acceptance keeps FMR(t) <= target (the next float above the highest
impostor when even that one breaks it); a comparison is a match when ``score >= t``. At that same
``t`` every condition reports FNMR = share of genuine scores < t and FMR = share of impostor
scores >= t (bob's ``farfrr``), and the mask penalty FNMR(condition) / FNMR(reference). The
same numbers per occluder family of the probe show which masks cost most.

A threshold resting on fewer than :data:`MIN_FALSE_MATCHES` reference false matches is not a
measured operating point at that FMR: its numbers are flagged (``reliable`` False).

Intervals: percentile identity bootstrap (:mod:`meerbench.metrics.stats`): one resample of probe
identities weights the pairs of every condition at once, and the threshold is set again on each
resample's reference impostors, so the intervals include the threshold's own uncertainty. The
resamples are those of ``bootstrap_weights`` with ``groups`` (the same seeds give the same
intervals as per-pair weights would), drawn as multiplicities of identities. Cost: one sort of
all scores, then per round O(identities) plus a cumulative sum over the pairs on the error side
of the thresholds (genuine pairs below, impostors at or above them): at FMR 1e-3 that is a few
thousand of millions of impostors, so a round costs about the genuine pairs, not all pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from meerbench.metrics.errors import MetricInputError, reject_unknown_keys
from meerbench.metrics.identification import FpirThresholds
from meerbench.metrics.stats import (
    bootstrap_samples,
    cluster_index,
    interval_json,
    paired_p_values,
    percentile_interval,
)
from meerbench.metrics.verification import check_distinct, check_far_targets, check_sampling

REFERENCE = "UMR-UMP"
MIN_FALSE_MATCHES = 10
RULE = ("threshold: bob far_threshold on UMR-UMP impostors (lowest impostor score with "
        "FMR <= target); match: score >= threshold; FNMR: genuine < threshold")
RATES = ("fnmr", "fmr", "mask_penalty")


@dataclass(frozen=True)
class OperationalSettings:
    """FMR targets and bootstrap of an operational report (protocol ``metrics.operational``)."""

    fmr_targets: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmr_targets", check_far_targets(self.fmr_targets))
        check_distinct("fmr_targets", self.fmr_targets)
        check_sampling(self.bootstrap, self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperationalSettings:
        reject_unknown_keys("operational", data, [f.name for f in fields(cls)])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fmr_targets": list(self.fmr_targets)}


def fmr_thresholds(impostor: ArrayLike, targets: Sequence[float],
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(threshold, achieved FMR) per target: bob.measure's ``far_threshold`` on ``impostor``
    scores (each counted ``weights[i]`` times)."""
    scores = np.asarray(impostor, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise MetricInputError("the threshold needs a 1-D, non-empty array of impostor scores")
    return FpirThresholds(scores)(check_far_targets(targets), weights)


def error_rates(genuine: ArrayLike, impostor: ArrayLike,
                threshold: float) -> tuple[float, float]:
    """(FNMR, FMR) at ``threshold``: genuine scores < threshold, impostor scores >= threshold
    (bob.measure's ``farfrr``, returned in the other order); NaN for an empty side."""
    g, i = (np.asarray(a, dtype=np.float64) for a in (genuine, impostor))
    with np.errstate(invalid="ignore"):
        return float(np.mean(g < threshold)), float(np.mean(i >= threshold))


class _Subset:
    """Pairs of one condition (or condition and family) for weighted error counts per cluster
    resample: genuine scores ascending and impostor scores descending, each with its cluster,
    and the number of genuine and impostor pairs of every cluster present.

    A count at threshold ``t`` is a cumulative sum over the scores on the error side of ``t``
    only (genuine below, impostors at or above it): at low FMR a few impostors, not millions.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray, cluster: np.ndarray,
                 in_subset: np.ndarray, n_clusters: int) -> None:
        """Every pair's score (descending), label and cluster, and whether it is in the subset,
        in that order."""
        genuine, impostor = in_subset & labels, in_subset & ~labels
        self.genuine_scores = scores[genuine][::-1]
        self.genuine_cluster = cluster[genuine][::-1]
        self.impostor_scores, self.impostor_cluster = scores[impostor], cluster[impostor]
        self.n_genuine, self.n_impostor = self.genuine_scores.size, self.impostor_scores.size
        self._negated = -self.impostor_scores  # ascending, for binary search
        self._genuine, self._impostor = (_present(c, n_clusters) for c in (
            self.genuine_cluster, self.impostor_cluster))

    def impostor_total(self, weights: np.ndarray) -> int:
        clusters, counts = self._impostor
        return int(weights[clusters] @ counts)

    def rates(self, thresholds: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(FNMR, FMR) at each threshold for cluster multiplicities ``weights``; NaN where the
        resample holds no such pair."""
        below = np.searchsorted(self.genuine_scores, thresholds, side="left")
        above = np.searchsorted(self._negated, -thresholds, side="right")
        g = np.r_[0, np.cumsum(weights[self.genuine_cluster[:below.max()]])][below]
        i = np.r_[0, np.cumsum(weights[self.impostor_cluster[:above.max()]])][above]
        clusters, counts = self._genuine
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / (weights[clusters] @ counts), i / self.impostor_total(weights)


class _Thresholds:
    """bob's far_threshold on the reference impostors of a cluster resample, reading only the
    highest impostor scores: a prefix of them that holds more than the largest target's share
    of the resample's impostors, plus one stand-in below them all for the rest, gives the same
    threshold as all of them (the walk stops inside the prefix, at the latest at its last
    score, whether or not that score's ties lie beyond it)."""

    def __init__(self, ref: _Subset, targets: Sequence[float]) -> None:
        self.ref, self.targets = ref, targets
        self._finders: dict[int, FpirThresholds] = {}
        self._start = int(np.ceil(2 * max(targets) * ref.n_impostor)) + 1

    def __call__(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(threshold, achieved FMR) per target; None without reference impostors."""
        ref, total = self.ref, self.ref.impostor_total(weights)
        if total == 0:
            return None
        length = min(self._start, ref.n_impostor)
        while True:
            head = weights[ref.impostor_cluster[:length]]
            if length == ref.n_impostor or head.sum() > max(self.targets) * total:
                break
            length = min(4 * length, ref.n_impostor)
        if length not in self._finders:
            self._finders[length] = FpirThresholds(np.r_[ref.impostor_scores[:length], -np.inf])
        return self._finders[length](self.targets, np.r_[head, total - head.sum()])


class OperationalRates:
    """FNMR, FMR and mask penalty of every condition (and family) at the thresholds set on the
    reference impostors of one cluster resample: the statistic of :func:`operational_report`
    and of :func:`paired_bootstrap_fnmr_difference`.

    ``keys``: (condition, family) per subset, conditions first ("" family), then each
    condition's families in name order; calling it with cluster multiplicities gives an array
    (targets, keys, :data:`RATES`).
    """

    def __init__(self, scores: ArrayLike, labels: ArrayLike, conditions: ArrayLike,
                 targets: Sequence[float], groups: ArrayLike | None = None,
                 families: ArrayLike | None = None) -> None:
        s, y, (cond, cond_names), (fam, fam_names) = _inputs(scores, labels, conditions,
                                                              families)
        reference = cond == (cond_names.index(REFERENCE) if REFERENCE in cond_names else -1)
        if not (y[reference].any() and (~y[reference]).any()):
            raise MetricInputError(f"the {REFERENCE} condition needs genuine and impostor "
                                   "pairs: it sets the threshold and the FNMR the mask penalty "
                                   "is relative to")
        cluster, n_clusters = (np.arange(s.size), s.size) if groups is None else cluster_index(
            groups, s.size)
        cluster = cluster.astype(np.int32 if n_clusters < 2**31 else np.int64)
        ranked = np.argsort(-s)  # one sort, every subset keeps its order (ties in any order)
        s, y, cluster, cond_ranked, fam_ranked = (a[ranked] for a in (s, y, cluster, cond, fam))

        def subset(in_subset: np.ndarray) -> _Subset:
            return _Subset(s, y, cluster, in_subset, n_clusters)

        self.subsets = {(c, ""): subset(cond_ranked == i) for i, c in enumerate(cond_names)}
        for i, c in enumerate(cond_names):  # then each condition's families, in name order
            present = np.flatnonzero(np.bincount(fam[cond == i], minlength=len(fam_names))) if (
                c != REFERENCE) else []
            for name, f in sorted((fam_names[f], f) for f in present if fam_names[f]):
                self.subsets[(c, name)] = subset((cond_ranked == i) & (fam_ranked == f))
        self.keys = list(self.subsets)
        self.n_clusters, self.targets = n_clusters, tuple(targets)
        self.reference = self.subsets[(REFERENCE, "")]
        self.thresholds = _Thresholds(self.reference, self.targets)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """(targets, keys, RATES) for cluster multiplicities ``weights``."""
        out = np.full((len(self.targets), len(self.keys), len(RATES)), np.nan)
        found = self.thresholds(weights)
        if found is None:
            return out
        for j, key in enumerate(self.keys):
            out[:, j, 0], out[:, j, 1] = self.subsets[key].rates(found[0], weights)
        reference_fnmr = out[:, self.keys.index((REFERENCE, "")), 0][:, None]
        with np.errstate(invalid="ignore", divide="ignore"):  # no reference error: undefined
            out[:, :, 2] = np.where(reference_fnmr > 0, out[:, :, 0] / reference_fnmr, np.nan)
        return out

    def ones(self) -> np.ndarray:
        """The multiplicities of the full sample (every cluster once)."""
        return np.ones(self.n_clusters, np.int64)


def operational_report(
    scores: ArrayLike,
    labels: ArrayLike,
    conditions: ArrayLike,
    settings: OperationalSettings | None = None,
    groups: ArrayLike | None = None,
    families: ArrayLike | None = None,
) -> dict[str, Any]:
    """The operational report as a JSON-ready dict (see the module docstring for the rule).

    ``conditions`` names each pair's condition and must include :data:`REFERENCE` with genuine
    and impostor pairs; ``families`` (optional) the occluder family of each pair's probe, ""
    for none: every other condition is also reported per family. ``groups`` (a cluster per
    pair, e.g. the probe identity) are resampled for the intervals, else pairs.
    """
    settings = settings or OperationalSettings()
    targets = settings.fmr_targets
    statistic = OperationalRates(scores, labels, conditions, targets, groups, families)
    keys, subsets, ref = statistic.keys, statistic.subsets, statistic.reference
    point = statistic(statistic.ones())
    thresholds, achieved = statistic.thresholds(statistic.ones())
    intervals = np.full(point.shape + (2,), np.nan)
    if settings.bootstrap:  # clusters drawn as bootstrap_weights draws them for ``groups``
        samples = bootstrap_samples(lambda w: statistic(w).ravel(), statistic.n_clusters, None,
                                    settings.bootstrap, settings.seed)
        intervals = percentile_interval(samples).reshape(intervals.shape)

    def entry(t: int, j: int) -> dict[str, Any]:
        sub = subsets[keys[j]]
        rates = {name: {"value": _value(point[t, j, r]), "ci95": interval_json(intervals[t, j, r])}
                 for r, name in enumerate(RATES)}
        if keys[j] == (REFERENCE, ""):
            del rates["mask_penalty"]
        return {"n_genuine": int(sub.n_genuine), "n_impostor": int(sub.n_impostor), **rates}

    points = []
    for t, target in enumerate(targets):
        false_matches = int(np.count_nonzero(ref.impostor_scores >= thresholds[t]))
        by_condition = {c: entry(t, j) for j, (c, f) in enumerate(keys) if not f}
        by_family: dict[str, dict[str, Any]] = {}
        for j, (c, f) in enumerate(keys):
            if f:
                by_family.setdefault(c, {})[f] = entry(t, j)
        points.append({
            "target": target, "threshold": float(thresholds[t]), "fmr": float(achieved[t]),
            "n_impostor": int(ref.n_impostor), "n_false_matches": false_matches,
            "reliable": false_matches >= MIN_FALSE_MATCHES,
            "warning": _warning(target, false_matches, int(ref.n_impostor)),
            "conditions": by_condition, "by_family": by_family})
    return {"rule": RULE, "reference": REFERENCE, "min_false_matches": MIN_FALSE_MATCHES,
            "bootstrap": settings.bootstrap, "seed": settings.seed, "operating_points": points}


def paired_bootstrap_fnmr_difference(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    labels: ArrayLike,
    conditions: ArrayLike,
    targets: Sequence[float],
    groups: ArrayLike | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """FNMR of model A minus model B on the same pairs, each model at its own threshold (set on
    its own :data:`REFERENCE` impostors at each FMR target), with a paired bootstrap: both
    models see the same resample of ``groups`` (else pairs) in every round, and each resample
    sets both thresholds again.

    One entry per (target, condition): ``target``, ``condition``, ``difference`` (A - B, a
    share), ``ci95`` (percentile, or None) and ``p_value`` (:func:`paired_p_values`).
    """
    a, b = (OperationalRates(s, labels, conditions, targets, groups) for s in (scores_a, scores_b))

    def difference(weights: np.ndarray) -> np.ndarray:
        return a(weights)[:, :, 0] - b(weights)[:, :, 0]

    point = difference(a.ones())
    samples = bootstrap_samples(lambda w: difference(w).ravel(), a.n_clusters, None, rounds, seed)
    intervals = percentile_interval(samples).reshape(point.shape + (2,))
    p_values = paired_p_values(samples).reshape(point.shape)
    return [{"target": target, "condition": condition, "difference": _value(point[t, j]),
             "ci95": interval_json(intervals[t, j]), "p_value": float(p_values[t, j])}
            for t, target in enumerate(a.targets) for j, (condition, _) in enumerate(a.keys)]


def _inputs(scores: ArrayLike, labels: ArrayLike, conditions: ArrayLike,
            families: ArrayLike | None) -> tuple[np.ndarray, np.ndarray,
                                                 tuple[np.ndarray, list[str]],
                                                 tuple[np.ndarray, list[str]]]:
    """Scores, labels, and conditions and families as (codes, names in order of appearance)."""
    import pandas as pd

    from meerbench.metrics.verification import validate_scores

    s, y = validate_scores(scores, labels)
    named = []
    for name, values in (("conditions", conditions), ("families", families)):
        array = np.full(s.size, "", dtype=object) if values is None else np.asarray(values)
        if array.shape != s.shape:
            raise MetricInputError(f"{name} must give one value per pair: expected shape "
                                   f"{s.shape}, got {array.shape}")
        codes, names = pd.factorize(array, use_na_sentinel=False)  # hashing, no sort
        named.append((codes.astype(np.int16 if len(names) < 2**15 else np.int64),
                      [str(n) for n in names]))
    return s, y, named[0], named[1]


def _present(cluster: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """The clusters holding pairs of ``cluster`` and how many each."""
    counts = np.bincount(cluster, minlength=n_clusters)
    present = np.flatnonzero(counts)
    return present, counts[present]


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _warning(target: float, false_matches: int, n_impostor: int) -> str | None:
    if false_matches >= MIN_FALSE_MATCHES:
        return None
    return (f"FMR {target:g} on {n_impostor} {REFERENCE} impostor pairs: the threshold rests on "
            f"{false_matches} false match(es), fewer than {MIN_FALSE_MATCHES}: not measured")
