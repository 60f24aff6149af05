"""Verification (1:1) metrics: ROC, AUC, EER, TAR@FAR and k-fold accuracy, each with its rule.

Scores are similarities (higher = more alike) and are never rescaled; labels are 1 (genuine) or
0 (impostor). Tools disagree on these definitions, so every metric whose definition varies takes
its rule as a parameter and records it in the result. All curves come from one descending sort;
tied scores form one step (one operating point), and a threshold ``t`` accepts ``score >= t``
unless a rule says otherwise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from meerbench.metrics.errors import (
    MetricInputError,
    check_choice,
    check_rounds,
    reject_unknown_keys,
)
from meerbench.metrics.stats import (
    bootstrap_samples,
    cluster_index,
    interval_json,
    paired_p_values,
    percentile_interval,
    unique_inverse,
)
from meerbench.metrics.sync import gather_updates

ACCURACY_RULES = ("insightface", "exact")
TAR_RULES = ("floor", "nearest", "interp")
EER_RULES = ("min_gap", "interp")

# insightface's LFW grid: thresholds on the squared L2 distance of normalised embeddings,
# d = 2 - 2 cos. Its decision `d < t_d` is `cos > 1 - t_d / 2` on cosine similarities.
INSIGHTFACE_DISTANCE_GRID = np.arange(0.0, 4.0, 0.01)


def validate_scores(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool, or a MetricInputError saying what is wrong."""
    s, y = np.asarray(scores), np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise MetricInputError(
            f"scores and labels must be 1-D arrays, got shapes {s.shape} and {y.shape}"
        )
    if s.size == 0:
        raise MetricInputError("no scores given: scores and labels are empty")
    if s.size != y.size:
        raise MetricInputError(f"length mismatch: {s.size} scores but {y.size} labels")
    if s.dtype.kind not in "biuf":
        raise MetricInputError(f"scores must be numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise MetricInputError(
            f"{bad.size} score(s) are NaN or infinite, at index {_first(bad)}"
        )
    if y.dtype.kind not in "biuf":
        raise MetricInputError(f"labels must be 1 (genuine) or 0 (impostor), got dtype {y.dtype}")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise MetricInputError(
            f"labels must be 1 (genuine) or 0 (impostor): {bad.size} other value(s), "
            f"first {y[bad[0]].item()!r} at index {bad[0]}"
        )
    y = y.astype(bool)
    n_genuine = int(np.count_nonzero(y))
    if n_genuine == 0:
        raise MetricInputError(f"no genuine pairs (label 1) among {y.size} pairs")
    if n_genuine == y.size:
        raise MetricInputError(f"no impostor pairs (label 0) among {y.size} pairs")
    return s, y


@dataclass(frozen=True, eq=False)
class Roc:
    """Tie-aware ROC from (0, 0) at threshold +inf to (1, 1); point i accepts >= thresholds[i].

    ``true_accepts``/``false_accepts`` are the cumulative (possibly weighted) counts behind
    ``tar``/``far``; rules that must match sklearn exactly work on these counts.
    """

    thresholds: np.ndarray
    far: np.ndarray
    tar: np.ndarray
    true_accepts: np.ndarray
    false_accepts: np.ndarray

    @property
    def n_genuine(self) -> float:
        return float(self.true_accepts[-1])

    @property
    def n_impostor(self) -> float:
        return float(self.false_accepts[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"far": self.far.tolist(), "tar": self.tar.tolist(),
                "thresholds": [_json_float(t) for t in self.thresholds]}


class SortedScores:
    """Scores sorted once (descending) with their tie groups; ROC curves for any pair weights.

    A bootstrap resample is a vector of multiplicities per pair, so its ROC is a weighted
    cumulative sum over the same order: no resample is ever sorted again.
    """

    def __init__(self, scores: ArrayLike, labels: ArrayLike) -> None:
        self.scores, self.labels = validate_scores(scores, labels)
        self.n = self.scores.size
        ordered = np.sort(self.scores)[::-1]  # values only: a sort is ~3x an argsort + gather
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self._thresholds = np.r_[np.inf, ordered[self._starts]]

    @functools.cached_property
    def _order(self) -> np.ndarray:
        """Pair indices by descending score (ties in any order: tie groups are summed whole);
        what resamples need, built on their first use."""
        return np.argsort(-self.scores)

    @functools.cached_property
    def _genuine(self) -> np.ndarray:
        return self.labels[self._order].astype(np.float64)

    def accept_counts(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative (genuine, impostor) accepts at every ROC point, one row per weights row.

        Row r is the resample holding pair i ``weights[r, i]`` times (None: all pairs once). A
        tie group that a resample misses repeats the previous point, which changes no rule's
        value except ``nearest`` (sklearn's point dropping sees it); :meth:`roc` drops them.
        """
        if weights is None:  # counts above each threshold, by binary search: no pair order
            accepted = np.r_[self._starts[1:], self.n].astype(np.float64)
            genuine_scores = np.sort(self.scores[self.labels])
            genuine = (genuine_scores.size - np.searchsorted(
                genuine_scores, self._thresholds[1:], "left")).astype(np.float64)
            return np.r_[0.0, genuine][None], np.r_[0.0, accepted - genuine][None]
        w = np.asarray(weights, dtype=np.float64)[:, self._order]
        total = np.add.reduceat(w, self._starts, axis=1)
        genuine = np.add.reduceat(w * self._genuine, self._starts, axis=1)
        origin = np.zeros((total.shape[0], 1))
        return (np.hstack([origin, np.cumsum(genuine, axis=1)]),
                np.hstack([origin, np.cumsum(total - genuine, axis=1)]))

    def roc(self, weights: np.ndarray | None = None) -> Roc:
        """The ROC of all pairs, or of the resample where pair i appears ``weights[i]`` times."""
        w = None if weights is None else np.asarray(weights)[None]
        tp, fp = (counts[0] for counts in self.accept_counts(w))
        keep = np.r_[True, np.diff(tp) + np.diff(fp) > 0]
        tp, fp = tp[keep], fp[keep]
        return Roc(thresholds=self._thresholds[keep], far=fp / fp[-1], tar=tp / tp[-1],
                   true_accepts=tp, false_accepts=fp)

    def resampled(self, weights: np.ndarray, far_targets: Sequence[float], tar_rule: str,
                  eer_rule: str) -> np.ndarray:
        """[AUC, EER, TAR at each target] per row of resample weights (b, n), NaN for a
        resample without genuine or without impostor pairs."""
        check_choice("TAR@FAR rule", tar_rule, TAR_RULES)
        check_choice("EER rule", eer_rule, EER_RULES)
        weights = np.asarray(weights, dtype=np.float64)
        genuine = weights @ self.labels
        valid = (genuine > 0) & (genuine < weights.sum(axis=1))
        out = np.full((weights.shape[0], 2 + len(far_targets)), np.nan)
        w = weights[valid]
        tp, fp = self.accept_counts(w)
        far, tar = fp / fp[:, -1:], tp / tp[:, -1:]
        out[valid, 0] = _auc_rows(tp, fp)
        out[valid, 1] = _eer_rows(far, tar, eer_rule)[0]
        for j, target in enumerate(far_targets, start=2):
            if tar_rule == "nearest":  # exact curves: sklearn's point dropping sees repeats
                out[valid, j] = [_nearest(self.roc(row), target)[0] for row in w]
            else:
                out[valid, j] = _tar_rows(far, tar, target, tar_rule)[0]
        return out


class GroupedScores:
    """Sorted scores with per-cluster sufficient statistics: ROC metrics of any resample of
    clusters (identities) without a pass over the pairs.

    Every pair belongs to one of ``k`` clusters and a resample gives cluster c a multiplicity
    ``counts[c]``, so pair i weighs ``counts[cluster[i]]``, exactly as in
    :meth:`SortedScores.resampled` with ``weights = counts[:, cluster]``, whose values this
    class reproduces bit for bit (all counts are integers; see docs/metrics.md). Built once in
    O(n log n + min(genuine, impostor) x k) time; a resample then costs O(k^2) for the AUC
    (the quadratic form ``counts K counts`` of the k x k matrix K of Mann-Whitney counts between
    clusters) plus O(log n) binary-search probes of O(k + block) each for EER and TAR@FAR (a
    weighted prefix count is a checkpoint row of per-cluster counts dotted with ``counts`` plus
    the pairs since that checkpoint). The ``nearest`` TAR rule needs whole curves and is not
    offered here.
    """

    _CHECKPOINTS = 2**22  # most per-cluster checkpoint counts kept per class (int32: 16 MB)

    def __init__(self, ranked: SortedScores, cluster: np.ndarray, k: int) -> None:
        self.k = k
        order = ranked._order
        genuine = ranked.labels[order]
        sorted_cluster = np.asarray(cluster, dtype=np.int64)[order]
        ends = np.r_[ranked._starts, ranked.n]  # point p accepts the first ends[p] sorted pairs
        before = np.r_[0, np.cumsum(genuine)]
        self._gen_at = before[ends]  # genuine pairs accepted at each point
        self._imp_at = ends - self._gen_at
        self._gen = _PrefixCounts(sorted_cluster[genuine], k, self._CHECKPOINTS)
        self._imp = _PrefixCounts(sorted_cluster[~genuine], k, self._CHECKPOINTS)
        self._auc = self._mann_whitney(ranked, order, genuine)

    def _mann_whitney(self, ranked: SortedScores, order: np.ndarray,
                      genuine: np.ndarray) -> np.ndarray:
        """K[g, h]: over genuine pairs of cluster g and impostor pairs of cluster h, 2 per pair
        with the genuine score above, 1 per tie; the weighted AUC numerator is counts K counts.
        Rows are the smaller class, in chunks: O(min(genuine, impostor) x k) time.
        """
        ordered = ranked.scores[order]
        gen_scores, imp_scores = ordered[genuine], ordered[~genuine]
        rows_are_genuine = gen_scores.size <= imp_scores.size
        rows, other = (self._gen, self._imp) if rows_are_genuine else (self._imp, self._gen)
        row_scores, other_scores = ((gen_scores, imp_scores) if rows_are_genuine
                                    else (imp_scores, gen_scores))
        k = self.k
        out = np.zeros((k, k))
        chunk = max(1, 2**20 // k)
        for lo in range(0, row_scores.size, chunk):
            keys = -row_scores[lo:lo + chunk]  # other-class pairs ranked above each row
            above = (other.prefix_rows(np.searchsorted(-other_scores, keys, "left"))
                     + other.prefix_rows(np.searchsorted(-other_scores, keys, "right")))
            # A genuine row counts impostors below it (2 strictly, 1 tied): 2 x total - above.
            counted = 2 * other.total_per_cluster - above if rows_are_genuine else above
            index = rows.cluster[lo:lo + chunk, None] * k + np.arange(k)
            out += np.bincount(index.ravel(), counted.ravel(), minlength=k * k).reshape(k, k)
        return out if rows_are_genuine else out.T

    def resampled(self, counts: np.ndarray, far_targets: Sequence[float], tar_rule: str,
                  eer_rule: str) -> np.ndarray:
        """[AUC, EER, TAR at each target] per row of cluster counts (b, k), NaN for a resample
        without genuine or without impostor pairs; equal to :meth:`SortedScores.resampled`."""
        check_choice("TAR@FAR rule", tar_rule, ("floor", "interp"))
        check_choice("EER rule", eer_rule, EER_RULES)
        counts = np.asarray(counts, dtype=np.int64)
        tp_total = counts @ self._gen.total_per_cluster
        fp_total = counts @ self._imp.total_per_cluster
        valid = (tp_total > 0) & (fp_total > 0)
        out = np.full((counts.shape[0], 2 + len(far_targets)), np.nan)
        c, tp_total, fp_total = counts[valid], tp_total[valid], fp_total[valid]
        if not c.size:
            return out
        cf = c.astype(np.float64)
        area = np.einsum("rg,rg->r", cf @ self._auc, cf)
        out[valid, 0] = area / (2.0 * tp_total.astype(np.float64) * fp_total)

        def rates(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(far, tar) of every row at its point p, as the per-pair curves compute them."""
            return (self._imp.weighted(c, self._imp_at[p]) / fp_total,
                    self._gen.weighted(c, self._gen_at[p]) / tp_total)

        last = self._gen_at.size - 1
        if eer_rule == "min_gap":
            def gap(p: np.ndarray) -> np.ndarray:
                far, tar = rates(p)
                return far - (1.0 - tar)

            p1 = _first_true(lambda p: gap(p) >= 0, last, c.shape[0])
            d0, d1 = gap(p1 - 1), gap(p1)
            lower = np.abs(d0) <= np.abs(d1)  # argmin takes the first of equal gaps
            i = np.where(lower, _first_true(lambda p: gap(p) >= d0, last, c.shape[0]), p1)
            far, tar = rates(i)
            out[valid, 1] = (far + 1.0 - tar) / 2
        else:
            i = _first_true(lambda p: np.add(*rates(p)) > 1.0, last, c.shape[0]) - 1
            (f0, t0), (f1, t1) = rates(i), rates(i + 1)
            step = (1.0 - (f0 + t0)) / ((f1 + t1) - (f0 + t0))
            out[valid, 1] = f0 + step * (f1 - f0)
        for j, target in enumerate(far_targets, start=2):
            i = _first_true(lambda p, t=target: rates(p)[0] > t, last, c.shape[0]) - 1
            f0, t0 = rates(i)
            if tar_rule == "floor":
                out[valid, j] = t0
            else:
                f1, t1 = rates(i + 1)
                out[valid, j] = t0 + (target - f0) / (f1 - f0) * (t1 - t0)
        return out


class _PrefixCounts:
    """Cluster of each pair of one class in score order, with per-cluster counts every
    ``block`` pairs, so a weighted count of the first q pairs costs O(k + block)."""

    def __init__(self, cluster: np.ndarray, k: int, budget: int) -> None:
        self.cluster = cluster
        n = cluster.size
        self.block = max(256, -(-k * n // budget))
        blocks = -(-n // self.block)
        per_block = np.bincount(np.arange(n) // self.block * k + cluster,
                                minlength=blocks * k).reshape(blocks, k)
        self.checkpoints = np.vstack([np.zeros((1, k), np.int32),
                                      np.cumsum(per_block, axis=0, dtype=np.int32)])
        self.total_per_cluster = self.checkpoints[-1].astype(np.int64)

    def weighted(self, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Per row r, the sum of ``counts[r, cluster]`` over the first ``q[r]`` pairs (int64)."""
        b = q // self.block
        base = np.einsum("rg,rg->r", counts, self.checkpoints[b])
        offsets = b[:, None] * self.block + np.arange(self.block)
        inside = offsets < q[:, None]
        members = self.cluster[np.minimum(offsets, self.cluster.size - 1)]
        tail = np.take_along_axis(counts, members, axis=1)
        return base + np.sum(tail * inside, axis=1)

    def prefix_rows(self, q: np.ndarray) -> np.ndarray:
        """Per-cluster counts of the first q pairs for each q of a non-decreasing sequence:
        (len(q), k) int64, from one checkpoint and the pairs up to the last q."""
        k = self.checkpoints.shape[1]
        start, stop = int(q[0]), int(q[-1])
        b = start // self.block
        base = (self.checkpoints[b].astype(np.int64)
                + np.bincount(self.cluster[b * self.block:start], minlength=k))
        segment = np.searchsorted(q, np.arange(start, stop), side="right")
        steps = np.bincount(segment * k + self.cluster[start:stop],
                            minlength=q.size * k).reshape(q.size, k)
        return base + np.cumsum(steps, axis=0)


def _first_true(predicate: Any, last: int, rows: int) -> np.ndarray:
    """Per row, the first point p in 0..last where the monotone ``predicate`` (on an array of
    points, one per row) holds; it must hold at ``last``."""
    lo, hi = np.zeros(rows, np.int64), np.full(rows, last, np.int64)
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        true = predicate(mid)
        hi = np.where(open_ & true, mid, hi)
        lo = np.where(open_ & ~true, mid + 1, lo)
    return lo


def roc(scores: ArrayLike, labels: ArrayLike) -> Roc:
    """Tie-aware ROC (one O(n log n) sort); see :class:`Roc`."""
    return SortedScores(scores, labels).roc()


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the tie-aware ROC (trapezoid) = Mann-Whitney U / (n_gen n_imp), ties count 1/2."""
    return roc_auc(roc(scores, labels))


def roc_auc(curve: Roc) -> float:
    """AUC of a ROC, from its counts (exact for integer counts)."""
    return float(_auc_rows(curve.true_accepts[None], curve.false_accepts[None])[0])


def _auc_rows(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    area = np.sum(np.diff(fp, axis=1) * (tp[:, 1:] + tp[:, :-1]), axis=1)
    return area / (2.0 * tp[:, -1] * fp[:, -1])


# ----------------------------------------------------------------------------- TAR@FAR


@dataclass(frozen=True)
class TarAtFar:
    """TAR at one FAR target under ``rule``, with the operating point actually used.

    ``threshold`` accepts score >= threshold; None in JSON means +inf (accept nothing). For the
    ``interp`` rule it is interpolated and only indicative: no single threshold attains an
    interpolated point. ``reliable`` is False when target x n_negatives < 1 (no false accept is
    allowed, so the TAR says nothing about this FAR); ``warning`` is set below 10.
    """

    target: float
    rule: str
    tar: float
    far: float
    threshold: float
    n_negatives: int
    reliable: bool
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": _json_float(self.threshold)}


def check_far_targets(targets: Sequence[float]) -> tuple[float, ...]:
    """Targets as floats, each strictly inside (0, 1)."""
    try:
        checked = tuple(float(t) for t in targets)
    except (TypeError, ValueError):
        raise MetricInputError(f"targets must be a list of numbers, got {targets!r}") from None
    for t in checked:
        if not 0.0 < t < 1.0:
            raise MetricInputError(f"FAR/FPIR targets must be in (0, 1), got {t!r}")
    return checked


def check_distinct(name: str, values: Sequence[Any]) -> None:
    """Settings that are sets (targets, ranks) list each value once: a repeat is a typo."""
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise MetricInputError(f"{name} must list each value once, got {repeated!r} more than "
                               "once")


def check_sampling(bootstrap: Any, seed: Any) -> None:
    """Bootstrap rounds from 0 to ``MAX_BOOTSTRAP`` and a seed >= 0 (what numpy accepts)."""
    check_rounds(bootstrap)
    if bootstrap > MAX_BOOTSTRAP:
        raise MetricInputError(f"bootstrap must be at most {MAX_BOOTSTRAP:,} rounds (each "
                               f"recomputes every metric), got {bootstrap:,}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MetricInputError(f"seed must be a whole number >= 0, got {seed!r}")


def tar_value(curve: Roc, target: float, rule: str) -> tuple[float, float, float]:
    """(tar, far, threshold) at ``target`` under ``rule`` on a ROC.

    - ``floor``: the largest TAR whose FAR <= target (the last ROC point not above the target;
      insightface's ``allowed_fp = floor(far * n_neg)``). bob's ``far_threshold`` keeps the same
      FAR bound but only places thresholds on impostor scores, so its TAR can be lower.
    - ``nearest``: the IJB convention: sklearn's ``roc_curve`` (drop_intermediate=True), flipped
      so ties go to the largest TPR, point with the smallest |FPR - target|; FAR may exceed it.
    - ``interp``: TAR linearly interpolated on the ROC at exactly ``target`` (vertical steps
      count at their top).
    """
    if rule == "nearest":
        return _nearest(curve, target)
    check_choice("TAR@FAR rule", rule, TAR_RULES)
    tar, i, step = (x[0] for x in _tar_rows(curve.far[None], curve.tar[None], target, rule))
    far = curve.far[i] if rule == "floor" else target
    return float(tar), float(far), _between(curve.thresholds, i, step)


def _tar_rows(far: np.ndarray, tar: np.ndarray, target: float,
              rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TAR per row of ROC curves under ``floor`` or ``interp``, and where it lies: point index
    and fraction of the way to the next point."""
    i = np.count_nonzero(far <= target, axis=1) - 1  # last point with FAR <= target
    if rule == "floor":
        return _at(tar, i), i, np.zeros(i.size)
    f0 = _at(far, i)
    step = (target - f0) / (_at(far, i + 1) - f0)
    return _along(tar, i, step), i, step


def _nearest(curve: Roc, target: float) -> tuple[float, float, float]:
    fps, tps, thresholds = curve.false_accepts[1:], curve.true_accepts[1:], curve.thresholds[1:]
    if fps.size > 2:  # sklearn's drop_intermediate: drop points inside equal-step straight runs
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    gap = np.abs(fpr - target)
    i = gap.size - 1 - int(np.argmin(gap[::-1]))  # np.flipud + argmin: last of equal gaps
    return float(tpr[i]), float(fpr[i]), float(np.r_[np.inf, thresholds][i])


def tar_at_far(
    scores: ArrayLike, labels: ArrayLike, targets: Sequence[float], rule: str = "floor"
) -> list[TarAtFar]:
    """TAR at each FAR target under ``rule`` (see :func:`tar_value`)."""
    curve = roc(scores, labels)
    return [_tar_at_far(curve, t, rule) for t in check_far_targets(targets)]


def _tar_at_far(curve: Roc, target: float, rule: str) -> TarAtFar:
    tar, far, threshold = tar_value(curve, target, rule)
    n_neg = int(curve.n_impostor)
    expected = target * n_neg
    warning = None
    if expected < 1:
        warning = (f"FAR {target:g} with {n_neg} impostor pairs allows no false accept "
                   f"(target x impostors = {expected:.3g} < 1): TAR is not measured at this FAR")
    elif expected < 10:
        warning = (f"FAR {target:g} with {n_neg} impostor pairs allows only {math.floor(expected)} "
                   f"false accepts (target x impostors = {expected:.3g} < 10): TAR is coarse")
    return TarAtFar(target=target, rule=rule, tar=tar, far=far, threshold=threshold,
                    n_negatives=n_neg, reliable=expected >= 1, warning=warning)


# ----------------------------------------------------------------------------- EER


@dataclass(frozen=True)
class Eer:
    """Equal error rate under ``rule``; ``threshold`` accepts score >= threshold (None = +inf)."""

    rule: str
    value: float
    threshold: float
    far: float
    frr: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": _json_float(self.threshold)}


def eer(scores: ArrayLike, labels: ArrayLike, rule: str = "min_gap") -> Eer:
    """EER under ``rule`` (see :func:`roc_eer`)."""
    return roc_eer(roc(scores, labels), rule)


def roc_eer(curve: Roc, rule: str = "min_gap") -> Eer:
    """EER of a ROC.

    - ``min_gap`` (bob.measure): the data-driven operating point minimising |FAR - FRR|,
      value (FAR + FRR) / 2; equal gaps go to the higher threshold, as bob's sweep does. The
      threshold is the lowest accepted score (bob reports the midpoint below it: same decisions).
    - ``interp``: where the linearly interpolated ROC crosses FRR = FAR (the root the
      ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` idiom finds), found exactly on its
      segment; the threshold is interpolated along the same segment.
    """
    check_choice("EER rule", rule, EER_RULES)
    value, i, step = (x[0] for x in _eer_rows(curve.far[None], curve.tar[None], rule))
    threshold = _between(curve.thresholds, i, step)
    if rule == "min_gap":
        return Eer(rule, float(value), threshold, float(curve.far[i]), float(1.0 - curve.tar[i]))
    return Eer(rule, float(value), threshold, float(value), float(value))


def _eer_rows(far: np.ndarray, tar: np.ndarray,
              rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EER per row of ROC curves, and where it lies: point index and fraction to the next."""
    if rule == "min_gap":
        i = np.argmin(np.abs(far - (1.0 - tar)), axis=1)  # first = highest threshold
        return (_at(far, i) + 1.0 - _at(tar, i)) / 2, i, np.zeros(i.size)
    h = far + tar  # non-decreasing from 0 to 2 along each curve; the crossing is at h = 1
    i = np.count_nonzero(h <= 1.0, axis=1) - 1
    h0 = _at(h, i)
    step = (1.0 - h0) / (_at(h, i + 1) - h0)
    return _along(far, i, step), i, step


# ----------------------------------------------------------------------------- k-fold accuracy


@dataclass(frozen=True)
class KFoldAccuracy:
    """Accuracy with a threshold chosen on the other folds and applied to each held-out fold.

    ``std`` is the population std (ddof=0) over folds, as insightface reports it. Decisions:
    ``insightface`` accepts score > threshold, ``exact`` accepts score >= threshold.
    """

    rule: str
    mean: float
    std: float
    per_fold: tuple[float, ...]
    thresholds: tuple[float, ...]
    fold_ids: tuple[int, ...]

    def accepts(self, scores: ArrayLike, folds: ArrayLike) -> np.ndarray:
        """Per-pair decisions under each fold's own threshold (for McNemar, bootstrap)."""
        s = np.asarray(scores, dtype=np.float64)
        ids, index = _fold_index(folds, s.size)
        if tuple(ids.tolist()) != self.fold_ids:
            raise MetricInputError(f"fold ids {ids.tolist()} differ from {list(self.fold_ids)}")
        t = np.asarray(self.thresholds)[index]
        return s > t if self.rule == "insightface" else s >= t

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "mean": self.mean, "std": self.std,
                "per_fold": list(self.per_fold),
                "thresholds": [_json_float(t) for t in self.thresholds]}


def kfold_accuracy(
    scores: ArrayLike, labels: ArrayLike, folds: ArrayLike, rule: str = "insightface"
) -> KFoldAccuracy:
    """k-fold verification accuracy (LFW View 2 style); ``folds`` holds the fold id of each pair.

    For each fold, the threshold with the best accuracy on all other folds is applied to it.

    - ``insightface``: candidates are insightface's distance grid ``arange(0, 4, 0.01)`` on
      d = 2 - 2 cos, i.e. cosine thresholds t = 1 - d / 2 with ``score > t`` (= ``d < t_d``); the
      first maximum along the grid wins (the highest t). Meant for cosine similarities.
    - ``exact``: candidates are the midpoints between consecutive distinct training scores, plus
      -inf (accept all) and +inf (accept none), with ``score >= t``; equal training accuracies go
      to the highest threshold, as the insightface grid does.

    Both are vectorised: counts at every candidate come from sorted scores, not from a loop.
    """
    scores, labels = validate_scores(scores, labels)
    ids, index = _fold_index(folds, scores.size)
    if rule == "insightface":
        thresholds = _insightface_thresholds(scores, labels, index, ids.size)
        accept = scores > thresholds[index]
    elif rule == "exact":
        thresholds = _exact_thresholds(scores, labels, index, ids.size)
        accept = scores >= thresholds[index]
    else:
        raise MetricInputError(
            f"unknown accuracy rule {rule!r}; choose one of {', '.join(ACCURACY_RULES)}"
        )
    per_fold = _fold_means(accept == labels, index, ids.size)
    return KFoldAccuracy(rule=rule, mean=float(per_fold.mean()), std=float(per_fold.std()),
                         per_fold=tuple(per_fold.tolist()), thresholds=tuple(thresholds.tolist()),
                         fold_ids=tuple(ids.tolist()))


def _fold_index(folds: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(folds)
    if f.shape != (n,):
        raise MetricInputError(f"folds must give one fold id per pair: expected shape ({n},), "
                               f"got {f.shape}")
    if f.dtype.kind not in "iu":
        raise MetricInputError(f"fold ids must be integers, got dtype {f.dtype}")
    ids, index = unique_inverse(f)
    if ids.size < 2:
        raise MetricInputError(f"k-fold accuracy needs at least 2 folds, got {ids.size}")
    return ids, index


def _fold_means(values: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(index, values, k) / np.bincount(index, minlength=k)


def _insightface_thresholds(scores: np.ndarray, labels: np.ndarray, index: np.ndarray,
                            k: int) -> np.ndarray:
    grid = 1.0 - INSIGHTFACE_DISTANCE_GRID / 2.0  # descending cosine thresholds
    correct = np.empty((k, grid.size))  # per fold: pairs decided right at each grid threshold
    for f in range(k):
        member = index == f
        genuine = np.sort(scores[member & labels])
        impostor = np.sort(scores[member & ~labels])
        accepted = genuine.size - np.searchsorted(genuine, grid, side="right")
        rejected = np.searchsorted(impostor, grid, side="right")
        correct[f] = accepted + rejected
    training = correct.sum(axis=0) - correct  # every fold's counts over the other folds
    return grid[np.argmax(training, axis=1)]


def _exact_thresholds(scores: np.ndarray, labels: np.ndarray, index: np.ndarray,
                      k: int) -> np.ndarray:
    order = np.argsort(scores)
    s, y, fold = scores[order], labels[order], index[order]
    thresholds = np.empty(k)
    for f in range(k):
        train = fold != f
        ts, ty = s[train], y[train]
        starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
        genuine = np.add.reduceat(ty.astype(np.int64), starts)
        impostor = np.diff(np.r_[starts, ts.size]) - genuine
        # Candidate c rejects the c lowest distinct values: c = 0 accepts all, c = m accepts none.
        correct = np.r_[0, np.cumsum(impostor)] + genuine.sum() - np.r_[0, np.cumsum(genuine)]
        c = correct.size - 1 - int(np.argmax(correct[::-1]))
        values = ts[starts]
        if c == 0:
            thresholds[f] = -np.inf
        elif c == values.size:
            thresholds[f] = np.inf
        else:
            mid = values[c - 1] / 2 + values[c] / 2
            # Adjacent floats have no midpoint between them: then threshold at the upper value.
            thresholds[f] = mid if mid > values[c - 1] else values[c]
    return thresholds


# ----------------------------------------------------------------------------- report


#: Most bootstrap rounds a protocol may ask for (1000 is usual; 1e5 already takes long).
MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True)
class VerificationSettings:
    """Metric rules and bootstrap for a verification report (protocol ``metrics.verification``)."""

    accuracy_rule: str = "insightface"
    far_targets: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    tar_rule: str = "floor"
    eer_rule: str = "min_gap"
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "far_targets", check_far_targets(self.far_targets))
        check_distinct("far_targets", self.far_targets)
        check_choice("accuracy_rule", self.accuracy_rule, ACCURACY_RULES)
        check_choice("tar_rule", self.tar_rule, TAR_RULES)
        check_choice("eer_rule", self.eer_rule, EER_RULES)
        check_sampling(self.bootstrap, self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationSettings:
        reject_unknown_keys("verification", data, [f.name for f in fields(cls)])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "far_targets": list(self.far_targets)}


def verification_report(
    scores: ArrayLike,
    labels: ArrayLike,
    folds: ArrayLike | None,
    settings: VerificationSettings | None = None,
    groups: ArrayLike | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """All verification metrics as a JSON-ready dict, with bootstrap 95% intervals.

    ``folds`` (fold id per pair) enables k-fold accuracy (else "accuracy" is None). Intervals
    resample ``groups`` (an identity cluster per pair, e.g. the probe identity) when given, else
    pairs, with ``settings.seed``; they are None when ``settings.bootstrap`` is 0. For accuracy
    the per-fold thresholds stay fixed and only the held-out decisions are re-averaged per
    resample (mean over folds of the weighted fold accuracy). ``progress`` shows a bar over
    the bootstrap rounds.
    """
    settings = settings or VerificationSettings()
    ranked = SortedScores(scores, labels)
    curve = ranked.roc()
    accuracy = None
    if folds is not None:
        accuracy = kfold_accuracy(ranked.scores, ranked.labels, folds, settings.accuracy_rule)
    eer_ = roc_eer(curve, settings.eer_rule)
    tars = [_tar_at_far(curve, t, settings.tar_rule) for t in settings.far_targets]
    intervals: list[list[float] | None] = [None] * (3 + len(tars))
    if settings.bootstrap:
        samples = _bootstrap(ranked, folds, accuracy, settings, groups, progress)
        intervals = [interval_json(row) for row in percentile_interval(samples)]
    n_genuine = int(np.count_nonzero(ranked.labels))
    return {
        "n_pairs": ranked.n,
        "n_genuine": n_genuine,
        "n_impostor": ranked.n - n_genuine,
        "accuracy": None if accuracy is None else {**accuracy.to_dict(), "ci95": intervals[0]},
        "auc": {"value": roc_auc(curve), "ci95": intervals[1]},
        "eer": {**eer_.to_dict(), "ci95": intervals[2]},
        "tar_at_far": [
            {**t.to_dict(), "ci95": ci} for t, ci in zip(tars, intervals[3:], strict=True)
        ],
    }


def _bootstrap(ranked: SortedScores, folds: ArrayLike | None, accuracy: KFoldAccuracy | None,
               settings: VerificationSettings, groups: ArrayLike | None,
               progress: bool) -> np.ndarray:
    """Resampled [accuracy, auc, eer, tar...], blocks of resamples at a time; per cluster
    (:class:`GroupedScores`) where that is cheaper, with the same values."""
    grouped = _grouped(ranked, groups, settings.tar_rule)
    curves: SortedScores | GroupedScores = ranked if grouped is None else grouped[0]
    n_items = ranked.n if grouped is None else grouped[0].k
    if accuracy is not None:
        index = _fold_index(folds, ranked.n)[1]
        right = accuracy.accepts(ranked.scores, folds) == ranked.labels
        if grouped is None:
            member = np.eye(len(accuracy.fold_ids))[index]  # (n, folds) one-hot
            correct = right[:, None] * member
        else:  # per (cluster, fold): pairs and pairs decided right
            cell = grouped[1] * len(accuracy.fold_ids) + index
            member, correct = (np.bincount(cell, w, n_items * len(accuracy.fold_ids))
                               .reshape(n_items, -1) for w in (None, right))

    def statistic(weights: np.ndarray) -> np.ndarray:
        acc = np.full((weights.shape[0], 1), np.nan)
        if accuracy is not None:
            with np.errstate(invalid="ignore"):  # a fold missing from a resample gives NaN
                acc[:, 0] = np.nanmean((weights @ correct) / (weights @ member), axis=1)
        return np.hstack([acc, curves.resampled(weights, settings.far_targets,
                                                settings.tar_rule, settings.eer_rule)])

    return bootstrap_samples(statistic, n_items, groups if grouped is None else None,
                             settings.bootstrap, settings.seed, batched=True, progress=progress)


#: Most clusters for :class:`GroupedScores` (its k x k AUC matrix is 8 k^2 bytes).
MAX_GROUPED_CLUSTERS = 4096
#: Pairs up to which the bootstrap weighs pairs (both ways give the same values).
PER_PAIR_UP_TO = 20_000


def _grouped(ranked: SortedScores, groups: ArrayLike | None,
             tar_rule: str) -> tuple[GroupedScores, np.ndarray] | None:
    """The per-cluster resampler and each pair's cluster, when resampling clusters of a
    large set (:func:`_per_cluster_is_cheaper`); else None."""
    if groups is None or tar_rule == "nearest":
        return None
    cluster, k = cluster_index(groups, ranked.n)
    if not _per_cluster_is_cheaper(k, ranked.n):
        return None
    return GroupedScores(ranked, cluster, k), cluster


def _per_cluster_is_cheaper(k: int, n: int) -> bool:
    """Per cluster from ``PER_PAIR_UP_TO`` pairs (a resample then costs ~k^2 BLAS flops and
    ~10^5 array steps, against ~30 n array steps per pair); below, per pair as always."""
    return k <= MAX_GROUPED_CLUSTERS and n > PER_PAIR_UP_TO


class VerificationState:
    """Accumulates (scores, labels, folds, groups) over ``update`` calls; ``compute`` = one shot.

    Under ``torch.distributed`` every rank's updates are gathered (rank order) before computing.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []

    def update(self, scores: ArrayLike, labels: ArrayLike, folds: ArrayLike | None = None,
               groups: ArrayLike | None = None) -> None:
        s, y = np.asarray(scores), np.asarray(labels)
        if s.shape != y.shape:
            raise MetricInputError(f"length mismatch: {s.size} scores but {y.size} labels")
        parts = (s, y, None if folds is None else np.asarray(folds),
                 None if groups is None else np.asarray(groups))
        if self._parts and [p is None for p in parts] != [p is None for p in self._parts[0]]:
            raise MetricInputError("every update must give folds and groups, or none of them")
        self._parts.append(parts)

    def compute(self, settings: VerificationSettings | None = None) -> dict[str, Any]:
        parts = gather_updates(self._parts)
        if not parts:
            raise MetricInputError("no scores given: update() was never called")
        columns = [
            None if part[0] is None else np.concatenate(part)
            for part in zip(*parts, strict=True)
        ]
        return verification_report(*columns[:3], settings=settings, groups=columns[3])


# ----------------------------------------------------------------------------- helpers


def _at(a: np.ndarray, i: np.ndarray) -> np.ndarray:
    """a[r, i[r]] for every row r."""
    return np.take_along_axis(a, i[:, None], axis=1)[:, 0]


def _along(a: np.ndarray, i: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Per row, the value a fraction ``step`` of the way from point i to point i + 1."""
    lo = _at(a, i)
    return lo + step * (_at(a, i + 1) - lo)


def _between(thresholds: np.ndarray, i: int, step: float) -> float:
    """Threshold a fraction ``step`` of the way from point i to i + 1 (+inf end: the finite one)."""
    if step == 0:
        return float(thresholds[i])
    lo, hi = thresholds[i], thresholds[i + 1]
    return float(hi if math.isinf(lo) else lo + step * (hi - lo))


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _first(indices: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(str(i) for i in indices[:k])
    return shown + (", ..." if indices.size > k else "")


def paired_bootstrap_tar_difference(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    labels: ArrayLike,
    target: float,
    rule: str = "floor",
    groups: ArrayLike | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """TAR@FAR of model A minus model B on the same pairs, with a paired bootstrap.

    Both models see the same resample in every round; the p-value is
    :func:`~meerbench.metrics.stats.paired_p_values`' two-sided one for "no difference".
    """
    (target,) = check_far_targets([target])
    sorted_a = SortedScores(scores_a, labels)
    sorted_b = SortedScores(scores_b, labels)
    grouped_a, grouped_b = (_grouped(ranked, groups, rule) for ranked in (sorted_a, sorted_b))
    curves_a = sorted_a if grouped_a is None else grouped_a[0]
    curves_b = sorted_b if grouped_b is None else grouped_b[0]
    n_items = sorted_a.n if grouped_a is None else grouped_a[0].k

    def difference(weights: np.ndarray) -> np.ndarray:
        tar_a = curves_a.resampled(weights, [target], rule, "min_gap")[:, 2]
        return tar_a - curves_b.resampled(weights, [target], rule, "min_gap")[:, 2]

    samples = bootstrap_samples(difference, n_items, groups if grouped_a is None else None,
                                rounds, seed, batched=True)
    return {"difference": float(difference(np.ones((1, n_items), np.int64))[0]),
            "ci95": interval_json(percentile_interval(samples)),
            "p_value": float(paired_p_values(samples))}
