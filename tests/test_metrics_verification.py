"""Verification metrics pinned to sklearn, to an insightface-style oracle, to bob's cases and to
brute-force definitions, plus properties and input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score, roc_curve

from meerbench.metrics import verification as v
from meerbench.metrics.errors import MetricInputError

BOB_CASES = json.loads((Path(__file__).parent / "data" / "bob_cases.json").read_text())
TARGETS = (0.3, 0.1, 0.05, 1e-2, 3e-3, 1e-3, 1e-4)


def _continuous(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.where(labels, rng.normal(0.5, 0.2, n), rng.normal(0.1, 0.15, n))
    return scores, labels.astype(int)


def _tied(n: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = _continuous(n, seed)
    return np.round(scores, 1), labels


SETS = {"continuous": _continuous(), "tied": _tied()}


def _thresholds(scores: np.ndarray) -> np.ndarray:
    return np.r_[np.inf, np.unique(scores)[::-1]]


def _rates(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[float, float]:
    accept = scores >= t
    return accept[labels == 0].mean(), accept[labels == 1].mean()


# ----------------------------------------------------------------------------- sklearn


@pytest.mark.parametrize("name", SETS)
def test_roc_matches_sklearn_without_dropping(name: str) -> None:
    scores, labels = SETS[name]
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    curve = v.roc(scores, labels)
    np.testing.assert_array_equal(curve.far, fpr)
    np.testing.assert_array_equal(curve.tar, tpr)
    np.testing.assert_array_equal(curve.thresholds, thr)


@pytest.mark.parametrize("name", SETS)
def test_auc_matches_sklearn(name: str) -> None:
    scores, labels = SETS[name]
    assert v.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("name", SETS)
def test_nearest_rule_is_the_ijb_sklearn_idiom(name: str) -> None:
    scores, labels = SETS[name]
    fpr, tpr, thr = roc_curve(labels, scores)  # drop_intermediate=True, as the IJB scripts
    fpr, tpr, thr = np.flipud(fpr), np.flipud(tpr), np.flipud(thr)
    targets = (*TARGETS, *np.random.default_rng(2).random(50))
    for result in v.tar_at_far(scores, labels, targets, rule="nearest"):
        i = np.argmin(np.abs(fpr - result.target))
        assert (result.tar, result.far, result.threshold) == (tpr[i], fpr[i], thr[i])


def test_nearest_uses_sklearns_dropped_points() -> None:
    # Each step holds one genuine and one impostor: sklearn keeps only the ends of the diagonal,
    # so FAR 0.5 (on the full curve) is not a candidate and the nearest point is FAR 0.25.
    scores = np.repeat([4.0, 3.0, 2.0, 1.0], 2)
    labels = np.tile([1, 0], 4)
    (result,) = v.tar_at_far(scores, labels, [0.5], rule="nearest")
    assert roc_curve(labels, scores)[0].tolist() == [0.0, 0.25, 1.0]
    assert (result.far, result.tar, result.threshold) == (0.25, 0.25, 4.0)


def test_eer_interp_matches_brentq_idiom() -> None:
    scores, labels = SETS["continuous"]
    fpr, tpr, thr = roc_curve(labels, scores)
    expected = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)
    result = v.eer(scores, labels, rule="interp")
    assert result.value == pytest.approx(expected, abs=1e-9)
    assert result.far == result.frr == result.value
    assert min(thr[1:]) <= result.threshold <= max(thr[1:])


# ----------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("name", SETS)
def test_floor_rule_equals_brute_force(name: str) -> None:
    scores, labels = SETS[name]
    points = [(*_rates(scores, labels, t), t) for t in _thresholds(scores)]
    for result in v.tar_at_far(scores, labels, TARGETS, rule="floor"):
        best = max((tar, -t, far) for far, tar, t in points if far <= result.target)
        assert (result.tar, result.threshold, result.far) == (best[0], -best[1], best[2])


@pytest.mark.parametrize("name", SETS)
def test_eer_min_gap_equals_brute_force(name: str) -> None:
    scores, labels = SETS[name]
    best = None
    for t in _thresholds(scores):  # from the highest threshold: strict < keeps the first tie
        far, tar = _rates(scores, labels, t)
        gap = abs(far - (1 - tar))
        if best is None or gap < best[0]:
            best = (gap, (far + 1 - tar) / 2, t)
    result = v.eer(scores, labels, rule="min_gap")
    assert (result.value, result.threshold) == pytest.approx(best[1:], abs=1e-15)
    assert result.value == pytest.approx((result.far + result.frr) / 2)


def test_interp_rule_equals_np_interp_on_strictly_increasing_far() -> None:
    # One impostor per distinct score makes FAR strictly increasing, so np.interp is defined.
    rng = np.random.default_rng(3)
    impostor = np.arange(200.0)
    genuine = rng.choice(impostor, 150)  # tied with impostors: no genuine-only step
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(150), np.zeros(200)]
    curve = v.roc(scores, labels)
    assert np.all(np.diff(curve.far[1:]) > 0)
    for result in v.tar_at_far(scores, labels, np.linspace(0.001, 0.999, 97), rule="interp"):
        expected = np.interp(result.target, curve.far, curve.tar)
        assert result.tar == pytest.approx(expected, abs=1e-12)
        assert result.far == result.target


def test_interp_counts_a_vertical_step_at_its_top() -> None:
    scores = [5.0, 4.0, 3.0, 2.0, 1.0]
    labels = [0, 1, 1, 0, 0]  # ROC: (0,0) (1/3,0) (1/3,1/2) (1/3,1) (2/3,1) (1,1)
    (at_step,) = v.tar_at_far(scores, labels, [1 / 3], rule="interp")
    (first, midway) = v.tar_at_far(scores, labels, [1 / 6, 1 / 2], rule="interp")
    assert at_step.tar == 1.0 and at_step.threshold == 3.0
    assert (first.tar, first.threshold) == (0.0, 5.0)  # the +inf end takes the finite one
    assert (midway.tar, midway.far) == (1.0, 0.5)
    assert midway.threshold == pytest.approx(2.5)


# ----------------------------------------------------------------------------- k-fold accuracy


def _insightface_oracle(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray,
                        n_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """insightface calculate_roc logic, written out plainly: contiguous KFold(10, shuffle=False),
    distance grid arange(0, 4, 0.01), first argmax of training accuracy, same if dist < t."""
    dist = np.sum(np.square(emb1 - emb2), axis=1)
    grid = np.arange(0, 4, 0.01)
    folds = np.array_split(np.arange(dist.size), n_folds)
    accuracy, chosen = np.zeros(n_folds), np.zeros(n_folds)

    def acc(t: float, d: np.ndarray, same: np.ndarray) -> float:
        predict = d < t
        tp = np.sum(predict & same)
        tn = np.sum(~predict & ~same)
        return float(tp + tn) / d.size

    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(dist.size), test)
        train_acc = [acc(t, dist[train], issame[train]) for t in grid]
        best = int(np.argmax(train_acc))
        chosen[f] = grid[best]
        accuracy[f] = acc(grid[best], dist[test], issame[test])
    return accuracy, chosen


@pytest.fixture(scope="module")
def lfw_like() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n, dim = 6000, 32
    identity = rng.normal(size=(n, dim))
    issame = np.tile(np.repeat([True, False], 300), 10)
    e1 = identity + 0.9 * rng.normal(size=(n, dim))
    e2 = np.where(issame[:, None], identity, rng.normal(size=(n, dim))) + 0.9 * rng.normal(
        size=(n, dim))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    return {"e1": e1, "e2": e2, "issame": issame, "scores": np.sum(e1 * e2, axis=1),
            "folds": np.repeat(np.arange(10), 600)}


def test_insightface_rule_reproduces_calculate_roc(lfw_like: dict[str, np.ndarray]) -> None:
    expected, distance = _insightface_oracle(lfw_like["e1"], lfw_like["e2"], lfw_like["issame"])
    result = v.kfold_accuracy(lfw_like["scores"], lfw_like["issame"], lfw_like["folds"])
    assert result.per_fold == tuple(expected)
    assert result.mean == pytest.approx(np.mean(expected), abs=1e-15)
    assert result.std == pytest.approx(np.std(expected), abs=1e-15)
    np.testing.assert_allclose(result.thresholds, 1 - distance / 2, atol=1e-12)
    assert 0.7 < result.mean < 0.99  # a non-trivial set: the rule had choices to make


def _exact_oracle(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> list[float]:
    per_fold = []
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        u = np.unique(scores[train])
        candidates = [-np.inf, *((u[:-1] + u[1:]) / 2), np.inf]
        accuracies = [np.mean((scores[train] >= t) == labels[train]) for t in candidates]
        best = max(range(len(candidates)), key=lambda i: (accuracies[i], i))  # highest on ties
        per_fold.append(np.mean((scores[test] >= candidates[best]) == labels[test]))
    return per_fold


@pytest.mark.parametrize("name", SETS)
def test_exact_rule_equals_loop_over_midpoints(name: str) -> None:
    scores, labels = SETS[name]
    folds = np.arange(scores.size) % 5
    result = v.kfold_accuracy(scores, labels, folds, rule="exact")
    assert result.per_fold == pytest.approx(_exact_oracle(scores, labels.astype(bool), folds),
                                            abs=1e-15)


def test_accepts_reproduces_per_fold_accuracy(lfw_like: dict[str, np.ndarray]) -> None:
    for rule in v.ACCURACY_RULES:
        result = v.kfold_accuracy(lfw_like["scores"], lfw_like["issame"], lfw_like["folds"], rule)
        correct = result.accepts(lfw_like["scores"], lfw_like["folds"]) == lfw_like["issame"]
        assert tuple(correct.reshape(10, 600).mean(axis=1)) == result.per_fold


# ----------------------------------------------------------------------------- hand-built cases


def test_bob_auc_on_non_separable_scores() -> None:
    case = BOB_CASES["nonsep"]
    scores = np.r_[case["positives"], case["negatives"]]
    labels = np.r_[np.ones(len(case["positives"])), np.zeros(len(case["negatives"]))]
    assert v.auc(scores, labels) == pytest.approx(case["expected_auc_approx"], abs=1e-4)


def test_all_equal_scores_form_one_step() -> None:
    scores, labels = [0.5] * 4, [1, 0, 1, 0]
    curve = v.roc(scores, labels)
    assert curve.far.tolist() == [0.0, 1.0] and curve.tar.tolist() == [0.0, 1.0]
    assert v.auc(scores, labels) == 0.5
    gap = v.eer(scores, labels)
    assert (gap.value, gap.threshold) == (0.5, math.inf)  # equal gaps: the higher threshold
    assert v.eer(scores, labels, rule="interp").value == 0.5
    floor, nearest, interp = (v.tar_at_far(scores, labels, [0.25], rule=r)[0] for r in v.TAR_RULES)
    assert (floor.tar, floor.far, floor.to_dict()["threshold"]) == (0.0, 0.0, None)
    assert (nearest.tar, nearest.far) == (0.0, 0.0)
    assert interp.tar == 0.25


def test_ties_between_genuine_and_impostor_count_half() -> None:
    scores, labels = [1.0, 1.0, 0.0, 0.0], [1, 0, 1, 0]
    assert v.auc(scores, labels) == 0.5
    assert v.auc([2.0, 1.0, 1.0], [1, 1, 0]) == 0.75


def test_single_impostor_is_flagged_unreliable() -> None:
    scores, labels = [0.9, 0.8, 0.5, 0.3], [1, 1, 0, 1]
    (result,) = v.tar_at_far(scores, labels, [0.5])
    assert (result.tar, result.far, result.threshold) == (2 / 3, 0.0, 0.8)
    assert result.n_negatives == 1 and not result.reliable
    assert "allows no false accept" in result.warning


def test_perfect_separation() -> None:
    scores, labels = [0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0]
    assert v.auc(scores, labels) == 1.0
    gap = v.eer(scores, labels)
    assert (gap.value, gap.threshold, gap.far, gap.frr) == (0.0, 0.7, 0.0, 0.0)
    assert v.eer(scores, labels, rule="interp").value == 0.0
    assert all(r.tar == 1.0 for r in v.tar_at_far(scores, labels, [0.01, 0.4]))
    result = v.kfold_accuracy(scores, labels, [0, 1, 0, 1, 0], rule="exact")
    assert result.per_fold == (1.0, 1.0)


def test_warning_below_ten_expected_false_accepts() -> None:
    scores, labels = _continuous(2000)
    n_neg = int(np.sum(labels == 0))
    coarse, fine = v.tar_at_far(scores, labels, [3 / n_neg, 0.1])
    assert coarse.reliable and "allows only 3 false accepts" in coarse.warning
    assert fine.reliable and fine.warning is None


# ----------------------------------------------------------------------------- properties

score_sets = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(-5, 5).map(float), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
)).filter(lambda s: 0 < sum(s[1]) < len(s[1]))


@settings(max_examples=150, deadline=None, database=None)
@given(score_sets)
def test_auc_is_mann_whitney(data: tuple[list[float], list[int]]) -> None:
    scores, labels = np.array(data[0]), np.array(data[1])
    pos, neg = scores[labels == 1], scores[labels == 0]
    u = np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])
    result = v.auc(scores, labels)
    assert 0.0 <= result <= 1.0
    assert result == pytest.approx(u / (pos.size * neg.size), abs=1e-12)


@settings(max_examples=150, deadline=None, database=None)
@given(score_sets, st.lists(st.floats(0.001, 0.999), min_size=2, max_size=6))
def test_tar_is_monotone_and_floor_never_exceeds_target(
    data: tuple[list[float], list[int]], targets: list[float]
) -> None:
    targets = sorted(targets)
    for rule in ("floor", "interp"):
        results = v.tar_at_far(data[0], data[1], targets, rule=rule)
        assert all(a.tar <= b.tar for a, b in zip(results, results[1:], strict=False))
    for result in v.tar_at_far(data[0], data[1], targets, rule="floor"):
        assert result.far <= result.target
        assert result.far == _rates(np.array(data[0]), np.array(data[1]), result.threshold)[0]


@settings(max_examples=60, deadline=None, database=None)
@given(score_sets, st.randoms(use_true_random=False))
def test_report_is_invariant_to_pair_order(data: tuple[list[float], list[int]], rnd) -> None:
    scores, labels = np.array(data[0]), np.array(data[1])
    folds = np.arange(scores.size) % 2
    perm = np.array(rnd.sample(range(scores.size), scores.size))
    config = v.VerificationSettings(bootstrap=0, far_targets=(0.1, 0.5), tar_rule="nearest")
    a = v.verification_report(scores, labels, folds, config)
    b = v.verification_report(scores[perm], labels[perm], folds[perm], config)
    assert a == b


@settings(max_examples=60, deadline=None, database=None)
@given(score_sets, st.lists(st.integers(0, 3), min_size=60, max_size=60))
def test_weighted_roc_equals_roc_of_the_resample(
    data: tuple[list[float], list[int]], counts: list[int]
) -> None:
    scores, labels = np.array(data[0]), np.array(data[1])
    weights = np.array(counts[:scores.size])
    resampled = np.repeat(np.arange(scores.size), weights)
    if not 0 < labels[resampled].sum() < resampled.size:
        return
    direct = v.roc(scores[resampled], labels[resampled])
    weighted = v.SortedScores(scores, labels).roc(weights)
    for name in ("thresholds", "far", "tar", "true_accepts", "false_accepts"):
        np.testing.assert_array_equal(getattr(weighted, name), getattr(direct, name))


@pytest.mark.parametrize("tar_rule", v.TAR_RULES)
@pytest.mark.parametrize("eer_rule", v.EER_RULES)
def test_resampled_values_equal_metrics_of_the_resampled_pairs(tar_rule: str,
                                                               eer_rule: str) -> None:
    # Few pairs, many ties: resamples often miss whole tie groups (repeated ROC points).
    rng = np.random.default_rng(11)
    scores, labels = rng.integers(0, 6, 40).astype(float), rng.integers(0, 2, 40)
    weights = np.stack([np.bincount(rng.integers(0, 40, 40), minlength=40) for _ in range(30)])
    targets = (0.05, 0.2, 0.5)
    got = v.SortedScores(scores, labels).resampled(weights, targets, tar_rule, eer_rule)
    for row, w in zip(got, weights, strict=True):
        s, y = np.repeat(scores, w), np.repeat(labels, w)
        if not 0 < y.sum() < y.size:
            assert np.isnan(row).all()
            continue
        expected = [v.auc(s, y), v.eer(s, y, eer_rule).value,
                    *(t.tar for t in v.tar_at_far(s, y, targets, tar_rule))]
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_per_cluster_resampler_equals_per_pair_weights(seed: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Bit for bit, on ties and repeated points, with several checkpoint blocks per class.
    monkeypatch.setattr(v.GroupedScores, "_CHECKPOINTS", 2000)
    rng = np.random.default_rng(seed)
    n, k = 3000, int(rng.integers(2, 60))
    scores, labels = _continuous(n, seed) if seed % 2 else _tied(n, seed)
    labels = rng.random(n) < (0.02, 0.5, 0.97)[seed % 3] if seed > 1 else labels
    cluster = rng.integers(0, k, n)
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(25)])
    counts[0] = 0
    counts[0, cluster[0]] = 1  # one cluster only: often a single class, NaN
    ranked = v.SortedScores(scores, labels)
    grouped = v.GroupedScores(ranked, cluster, k)
    for tar_rule in ("floor", "interp"):
        for eer_rule in v.EER_RULES:
            want = ranked.resampled(counts[:, cluster], TARGETS, tar_rule, eer_rule)
            got = grouped.resampled(counts, TARGETS, tar_rule, eer_rule)
            np.testing.assert_array_equal(got, want)


def _shipped_conditions() -> list[tuple[str, str]]:
    folder = Path(__file__).parents[1] / "reports" / "results"
    return [(str(path), cond) for path in sorted(folder.glob("*.scores.csv.gz"))[:2]
            for cond in ("UMR-UMP", "UMR-MP")]


@pytest.mark.parametrize(("path", "condition"), _shipped_conditions())
def test_report_intervals_per_cluster_equal_per_pair_on_shipped_scores(
    path: str, condition: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped Results' intervals come from per-pair weights; per cluster they are the same.
    from meerbench.metrics.scorefiles import load_scores

    table = load_scores(path).of_condition(condition)
    assert table is not None
    args = (table.scores, table.labels, table.folds, v.VerificationSettings(bootstrap=100))
    per_pair = v.verification_report(*args, groups=table.probe_ids)
    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: True)
    assert v.verification_report(*args, groups=table.probe_ids) == per_pair
    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: False)
    assert v.verification_report(*args, groups=table.probe_ids) == per_pair


def test_large_report_resamples_per_cluster_with_the_same_intervals(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, labels = _tied(v.PER_PAIR_UP_TO + 1000, 5)
    folds, groups = np.arange(scores.size) % 10, np.arange(scores.size) % 97
    settings = v.VerificationSettings(bootstrap=60, seed=2)
    made, init = [], v.GroupedScores.__init__
    monkeypatch.setattr(v.GroupedScores, "__init__",
                        lambda self, *args: made.append(args) or init(self, *args))
    per_cluster = v.verification_report(scores, labels, folds, settings, groups)
    assert made  # the default for this many pairs
    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: False)
    assert v.verification_report(scores, labels, folds, settings, groups) == per_cluster


@pytest.mark.slow
def test_per_cluster_path_reproduces_every_shipped_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 Results x 3 conditions, 1,000 rounds each: every value and interval, bit for bit.
    from meerbench.metrics.scorefiles import load_scores

    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: True)
    results = sorted((Path(__file__).parents[1] / "reports" / "results").glob("*.json"))
    assert len(results) >= 16
    for path in results:
        table = load_scores(path.with_name(f"{path.stem}.scores.csv.gz"))
        for condition, want in json.loads(path.read_text())["metrics"]["verification"].items():
            sub = table.of_condition(condition)
            got = v.verification_report(sub.scores, sub.labels, sub.folds,
                                        v.VerificationSettings(), groups=sub.probe_ids)
            for key in ("accuracy", "auc", "eer", "tar_at_far"):
                assert got[key] == want[key], (path.name, condition, key)


@pytest.mark.parametrize("rule", ("floor", "interp"))
def test_paired_bootstrap_per_cluster_equals_per_pair(rule: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scores, labels = _tied(4000, 3)
    other = scores + np.random.default_rng(3).normal(0, 0.05, scores.size)
    groups = np.arange(4000) % 50
    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: True)
    got = v.paired_bootstrap_tar_difference(other, scores, labels, 0.01, rule, groups, 300)
    monkeypatch.setattr(v, "_per_cluster_is_cheaper", lambda k, n: False)
    assert got == v.paired_bootstrap_tar_difference(other, scores, labels, 0.01, rule, groups,
                                                    300)


# ----------------------------------------------------------------------------- report


def test_report_shape_and_json(lfw_like: dict[str, np.ndarray]) -> None:
    groups = np.arange(6000) // 4
    report = v.verification_report(lfw_like["scores"], lfw_like["issame"], lfw_like["folds"],
                                   v.VerificationSettings(bootstrap=200), groups=groups)
    json.dumps(report, allow_nan=False)
    assert set(report) == {"n_pairs", "n_genuine", "n_impostor", "accuracy", "auc", "eer",
                           "tar_at_far"}
    assert (report["n_pairs"], report["n_genuine"], report["n_impostor"]) == (6000, 3000, 3000)
    assert set(report["accuracy"]) == {"rule", "mean", "std", "per_fold", "thresholds", "ci95"}
    assert set(report["eer"]) == {"rule", "value", "threshold", "far", "frr", "ci95"}
    assert [t["target"] for t in report["tar_at_far"]] == [1e-1, 1e-2, 1e-3, 1e-4]
    assert set(report["tar_at_far"][0]) == {"target", "rule", "tar", "far", "threshold",
                                            "n_negatives", "reliable", "warning", "ci95"}
    for value, ci in [(report["accuracy"]["mean"], report["accuracy"]["ci95"]),
                      (report["auc"]["value"], report["auc"]["ci95"]),
                      (report["eer"]["value"], report["eer"]["ci95"]),
                      (report["tar_at_far"][0]["tar"], report["tar_at_far"][0]["ci95"])]:
        assert ci[0] <= value <= ci[1]
    assert report["tar_at_far"][3]["reliable"] is False  # 1e-4 x 3000 impostors < 1


def test_report_bootstrap_is_seeded_and_cluster_aware(lfw_like: dict[str, np.ndarray]) -> None:
    args = (lfw_like["scores"], lfw_like["issame"], lfw_like["folds"])
    base = v.VerificationSettings(bootstrap=200, seed=3)
    same = v.verification_report(*args, base)
    assert same == v.verification_report(*args, base)
    other = v.verification_report(*args, v.VerificationSettings(bootstrap=200, seed=4))
    assert other["auc"]["ci95"] != same["auc"]["ci95"]
    # 60 clusters whose genuine pairs share an offset (hard and easy identities): the pairs are
    # not independent, and resampling clusters widens the interval.
    clusters = np.arange(6000) % 60
    shifted = args[0] + args[1] * np.random.default_rng(0).normal(0, 0.2, 60)[clusters]
    pairs = v.verification_report(shifted, *args[1:], base)["auc"]["ci95"]
    grouped = v.verification_report(shifted, *args[1:], base, groups=clusters)["auc"]["ci95"]
    assert grouped[1] - grouped[0] > pairs[1] - pairs[0]


def test_report_without_folds_or_bootstrap() -> None:
    scores, labels = _continuous(500)
    report = v.verification_report(scores, labels, None, v.VerificationSettings(bootstrap=0))
    assert report["accuracy"] is None
    assert report["auc"]["ci95"] is None and report["tar_at_far"][0]["ci95"] is None


def test_streaming_state_equals_one_shot() -> None:
    scores, labels = _continuous(900)
    folds, groups = np.arange(900) % 3, np.arange(900) // 3
    state = v.VerificationState()
    for part in np.array_split(np.arange(900), 4):
        state.update(scores[part], labels[part], folds[part], groups[part])
    config = v.VerificationSettings(bootstrap=50)
    assert state.compute(config) == v.verification_report(scores, labels, folds, config, groups)
    with pytest.raises(MetricInputError, match="folds and groups, or none"):
        state.update(scores, labels)
    with pytest.raises(MetricInputError, match="update\\(\\) was never called"):
        v.VerificationState().compute()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("scores", "labels", "message"), [
    ([], [], "no scores given"),
    ([0.1, 0.2], [1], "length mismatch: 2 scores but 1 labels"),
    ([[0.1]], [[1]], "must be 1-D arrays"),
    ([0.1, np.nan, 0.3, np.inf], [1, 0, 1, 0], "2 score\\(s\\) are NaN or infinite, at index 1, 3"),
    (["a", "b"], [1, 0], "scores must be numbers"),
    ([0.1, 0.2, 0.3], [1, 2, 0], "labels must be 1 \\(genuine\\) or 0 \\(impostor\\): 1 other "
                                 "value\\(s\\), first 2 at index 1"),
    ([0.1, 0.2], ["1", "0"], "labels must be 1 \\(genuine\\) or 0 \\(impostor\\), got dtype"),
    ([0.1, 0.2], [1, 1], "no impostor pairs \\(label 0\\) among 2 pairs"),
    ([0.1, 0.2], [0, 0], "no genuine pairs \\(label 1\\) among 2 pairs"),
])
def test_bad_scores_are_named(scores, labels, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        v.validate_scores(scores, labels)


def test_bad_rules_targets_folds_and_settings() -> None:
    scores, labels = [0.9, 0.1, 0.8, 0.2], [1, 0, 1, 0]
    with pytest.raises(MetricInputError, match="targets must be in \\(0, 1\\), got 1.0"):
        v.tar_at_far(scores, labels, [0.1, 1.0])
    with pytest.raises(MetricInputError, match="unknown TAR@FAR rule 'best'; choose one of floor"):
        v.tar_at_far(scores, labels, [0.1], rule="best")
    with pytest.raises(MetricInputError, match="unknown EER rule 'rocch'"):
        v.eer(scores, labels, rule="rocch")
    with pytest.raises(MetricInputError, match="unknown accuracy rule 'youden'"):
        v.kfold_accuracy(scores, labels, [0, 0, 1, 1], rule="youden")
    with pytest.raises(MetricInputError, match="at least 2 folds, got 1"):
        v.kfold_accuracy(scores, labels, [0, 0, 0, 0])
    with pytest.raises(MetricInputError, match="one fold id per pair: expected shape \\(4,\\)"):
        v.kfold_accuracy(scores, labels, [0, 1])
    with pytest.raises(MetricInputError, match="fold ids must be integers"):
        v.kfold_accuracy(scores, labels, [0.0, 1.0, 0.0, 1.0])
    with pytest.raises(MetricInputError, match="unknown verification setting 'far_target'; "
                                               "allowed settings: accuracy_rule, bootstrap"):
        v.VerificationSettings.from_dict({"far_target": [0.1]})
    with pytest.raises(MetricInputError, match="targets must be a list of numbers, got None"):
        v.VerificationSettings.from_dict({"far_targets": None})
    with pytest.raises(MetricInputError, match="unknown tar_rule 'median'"):
        v.VerificationSettings.from_dict({"tar_rule": "median"})
    with pytest.raises(MetricInputError, match="bootstrap must be a whole number >= 0"):
        v.VerificationSettings(bootstrap=-1)


def test_settings_round_trip() -> None:
    config = v.VerificationSettings.from_dict({"far_targets": [0.1, 0.001], "bootstrap": 0,
                                               "accuracy_rule": "exact"})
    assert config.far_targets == (0.1, 0.001)
    assert v.VerificationSettings.from_dict(config.to_dict()) == config
    json.dumps(config.to_dict())


@pytest.mark.parametrize("seed", range(5))
def test_unweighted_counts_equal_all_ones_weights(seed: int) -> None:
    """The unweighted ROC (sorted values and binary search) equals the resample path with every
    pair once (argsort order), tie groups included."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 40, 3000) / 8.0  # many ties
    labels = rng.random(3000) < 0.3
    ranked = v.SortedScores(scores, labels)
    plain = ranked.accept_counts()
    ones = ranked.accept_counts(np.ones((1, scores.size)))
    for a, b in zip(plain, ones, strict=True):
        np.testing.assert_array_equal(a, b)
