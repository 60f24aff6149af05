"""Operational metrics pinned to a case worked out by hand and to bob.measure's far_threshold and
farfrr on random scores (expected values computed once with bob.measure 6.1.1, stored as data in
tests/data/operational_bob.json), and their identity bootstrap to a brute-force one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.operational import (
    OperationalSettings,
    error_rates,
    fmr_thresholds,
    operational_report,
    paired_bootstrap_fnmr_difference,
)
from meerbench.metrics.stats import bootstrap_weights, paired_p_values

BOB = json.loads((Path(__file__).parent / "data" / "operational_bob.json").read_text())
NO_BOOTSTRAP = OperationalSettings(fmr_targets=(0.1, 0.2, 0.3), bootstrap=0)


def pairs(blocks: dict[str, tuple[list[float], list[float]]], families: dict[str, list[str]]
          | None = None) -> tuple[np.ndarray, ...]:
    """(scores, labels, conditions, families) from {condition: (genuine, impostor)}."""
    scores, labels, conds, fams = [], [], [], []
    for cond, (genuine, impostor) in blocks.items():
        scores += genuine + impostor
        labels += [1] * len(genuine) + [0] * len(impostor)
        conds += [cond] * (len(genuine) + len(impostor))
        fams += (families or {}).get(cond, [""] * (len(genuine) + len(impostor)))
    return (np.array(scores), np.array(labels), np.array(conds, dtype=object),
            np.array(fams, dtype=object))


# ----------------------------------------------------------------------------- by hand

HAND = {
    "UMR-UMP": ([0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.3, 0.5, 0.6, 0.6, 0.75, 0.2, 0.3, 0.35]),
    "UMR-MP": ([0.8, 0.6, 0.5, 0.3], [0.7, 0.76, 0.1, 0.2]),
}
HAND_FAMILIES = {"UMR-MP": ["a", "a", "b", "b", "a", "b", "a", "b"]}


def test_a_case_worked_out_by_hand() -> None:
    # Impostors, highest first: 0.75, 0.6, 0.6, 0.5, ... (10). FMR 0.1 allows one false match:
    # t = 0.75. FMR 0.2 allows two, but the tied 0.6s would make three: t stays 0.75 (FMR 0.1).
    # FMR 0.3: t = 0.6 (three false matches).
    scores, labels, conds, families = pairs(HAND, HAND_FAMILIES)
    report = operational_report(scores, labels, conds, NO_BOOTSTRAP, families=families)
    points = report["operating_points"]
    assert [(p["target"], p["threshold"], p["fmr"], p["n_false_matches"]) for p in points] == [
        (0.1, 0.75, 0.1, 1), (0.2, 0.75, 0.1, 1), (0.3, 0.6, 0.3, 3)]
    assert not any(p["reliable"] for p in points)  # fewer than 10 false matches each
    expected = {  # (FNMR, FMR, mask penalty) per condition at t = 0.75 and t = 0.6
        0.75: {"UMR-UMP": (2 / 4, 1 / 10, None), "UMR-MP": (3 / 4, 1 / 4, 1.5),
               "UMR-MP/a": (1 / 2, 0 / 2, 1.0), "UMR-MP/b": (2 / 2, 1 / 2, 2.0)},
        0.6: {"UMR-UMP": (1 / 4, 3 / 10, None), "UMR-MP": (2 / 4, 2 / 4, 2.0),
              "UMR-MP/a": (0 / 2, 1 / 2, 0.0), "UMR-MP/b": (2 / 2, 1 / 2, 4.0)},
    }
    for point in points:
        got = {c: (e["fnmr"]["value"], e["fmr"]["value"],
                   e.get("mask_penalty", {"value": None})["value"])
               for c, e in point["conditions"].items()}
        got |= {f"UMR-MP/{f}": (e["fnmr"]["value"], e["fmr"]["value"],
                                e["mask_penalty"]["value"])
                for f, e in point["by_family"]["UMR-MP"].items()}
        assert got == expected[point["threshold"]]  # exact: the same divisions
        assert point["conditions"]["UMR-MP"]["n_genuine"] == 4
        assert point["by_family"]["UMR-MP"]["a"]["n_impostor"] == 2


def test_no_false_match_allowed_puts_the_threshold_above_every_impostor() -> None:
    (threshold,), (fmr,) = fmr_thresholds([0.2, 0.5, 0.4], [0.3])
    assert (threshold, fmr) == (np.nextafter(0.5, 1), 0.0)  # 1/3 > 0.3 already
    assert error_rates([0.5, 0.6], [0.2, 0.5, 0.4], threshold) == (0.5, 0.0)


def test_a_perfect_reference_leaves_the_mask_penalty_undefined() -> None:
    data = pairs({"UMR-UMP": ([0.9, 0.95], [0.1, 0.2]), "MR-MP": ([0.9, 0.1], [0.1, 0.2])})
    point = operational_report(*data[:3], NO_BOOTSTRAP)["operating_points"][0]
    assert point["conditions"]["UMR-UMP"]["fnmr"]["value"] == 0.0
    assert point["conditions"]["MR-MP"]["fnmr"]["value"] == 0.5
    assert point["conditions"]["MR-MP"]["mask_penalty"] == {"value": None, "ci95": None}


def test_ten_false_matches_make_a_threshold_reliable() -> None:
    impostor = np.linspace(0.0, 1.0, 1000)  # distinct: FMR 0.01 -> exactly 10 false matches
    data = pairs({"UMR-UMP": ([0.99, 0.5], impostor.tolist())})
    settings = OperationalSettings(fmr_targets=(0.01, 0.009), bootstrap=0)
    ten, nine = operational_report(*data[:3], settings)["operating_points"]
    assert (ten["n_false_matches"], ten["reliable"], ten["warning"]) == (10, True, None)
    assert (nine["n_false_matches"], nine["reliable"]) == (9, False)
    assert "9 false match(es), fewer than 10" in nine["warning"]


# ----------------------------------------------------------------------------- bob.measure


@pytest.mark.parametrize("case", BOB["cases"], ids=lambda c: c["name"])
def test_thresholds_and_rates_match_bob_measure(case: dict) -> None:
    blocks = {c: (d["genuine"], d["impostor"]) for c, d in case["scores"].items()}
    targets = tuple(e["target"] for e in case["expected"])
    report = operational_report(*pairs(blocks)[:3],
                                OperationalSettings(fmr_targets=targets, bootstrap=0))
    for point, want in zip(report["operating_points"], case["expected"], strict=True):
        assert point["threshold"] == want["threshold"]  # bob's far_threshold, exactly
        for cond, rates in want["rates"].items():
            entry = point["conditions"][cond]
            assert entry["fnmr"]["value"] == pytest.approx(rates["frr"], abs=1e-15)
            assert entry["fmr"]["value"] == pytest.approx(rates["far"], abs=1e-15)
        assert point["fmr"] == pytest.approx(want["rates"]["UMR-UMP"]["far"], abs=1e-15)
    assert any(p["threshold"] == np.nextafter(max(blocks["UMR-UMP"][1]), np.inf)
               for p in report["operating_points"])  # the case covers 'no false match'


# ----------------------------------------------------------------------------- bootstrap


def test_identity_bootstrap_equals_brute_force_resampling() -> None:
    rng = np.random.default_rng(3)
    blocks = {c: (np.round(rng.normal(m, 1, 30), 1).tolist(), np.round(rng.normal(0, 1, 60), 1)
                  .tolist()) for c, m in (("UMR-UMP", 2.0), ("UMR-MP", 1.0))}
    scores, labels, conds, _ = pairs(blocks)
    groups = rng.integers(0, 12, scores.size)  # probe identity of each pair
    families = np.where(conds == "UMR-MP", rng.choice(["a", "b"], scores.size), "")
    settings = OperationalSettings(fmr_targets=(0.1, 0.05), bootstrap=40, seed=7)
    report = operational_report(scores, labels, conds, settings, groups, families)

    brute = []
    for w in bootstrap_weights(scores.size, groups, settings.bootstrap, settings.seed):
        take = np.repeat(np.arange(scores.size), w)
        if not ((conds[take] == "UMR-UMP") & (labels[take] == 0)).any():
            continue
        again = operational_report(scores[take], labels[take], conds[take],
                                   OperationalSettings(settings.fmr_targets, 0),
                                   families=families[take])
        brute.append([e["fnmr"]["value"] for p in again["operating_points"]
                      for e in (p["conditions"]["UMR-MP"], p["by_family"]["UMR-MP"]["b"])])
    low, high = np.nanpercentile(np.array(brute, dtype=float), [2.5, 97.5], axis=0)
    got = [e["fnmr"]["ci95"] for p in report["operating_points"]
           for e in (p["conditions"]["UMR-MP"], p["by_family"]["UMR-MP"]["b"])]
    assert np.array(got) == pytest.approx(np.column_stack([low, high]), abs=1e-12)


def test_paired_fnmr_test_equals_brute_force_paired_resampling() -> None:
    """Both models on each identity resample, each at its own threshold set again there."""
    rng = np.random.default_rng(5)
    blocks = {c: (np.round(rng.normal(m, 1, 30), 1).tolist(), np.round(rng.normal(0, 1, 60), 1)
                  .tolist()) for c, m in (("UMR-UMP", 2.0), ("UMR-MP", 1.0))}
    scores_a, labels, conds, _ = pairs(blocks)
    scores_b = scores_a + np.where(labels == 1, rng.normal(0.4, 0.3, scores_a.size), 0)
    groups = rng.integers(0, 12, scores_a.size)
    targets, rounds, seed = (0.1, 0.05), 40, 7
    found = paired_bootstrap_fnmr_difference(scores_a, scores_b, labels, conds, targets, groups,
                                             rounds, seed)

    def fnmr(s: np.ndarray, take: np.ndarray) -> np.ndarray:
        again = operational_report(s[take], labels[take], conds[take],
                                   OperationalSettings(targets, 0))
        return np.array([[p["conditions"][c]["fnmr"]["value"] for c in ("UMR-UMP", "UMR-MP")]
                         for p in again["operating_points"]], dtype=float)

    everything = np.arange(scores_a.size)
    point = fnmr(scores_a, everything) - fnmr(scores_b, everything)
    brute = np.array([fnmr(scores_a, take) - fnmr(scores_b, take)
                      for w in bootstrap_weights(scores_a.size, groups, rounds, seed)
                      for take in [np.repeat(everything, w)]])
    low, high = np.percentile(brute, [2.5, 97.5], axis=0)
    assert [(e["target"], e["condition"]) for e in found] == [
        (t, c) for t in targets for c in ("UMR-UMP", "UMR-MP")]
    got = np.array([[e["difference"], *e["ci95"], e["p_value"]] for e in found])
    expected = np.column_stack([point.ravel(), low.ravel(), high.ravel(),
                                paired_p_values(brute.reshape(rounds, -1))])
    assert got == pytest.approx(expected, abs=1e-12)
    assert (got[:, 0] > 0).all()  # B's genuine scores are higher: fewer misses
    same = paired_bootstrap_fnmr_difference(scores_a, scores_a, labels, conds, targets, groups,
                                            rounds, seed)
    assert all(e["difference"] == 0 and e["ci95"] == [0, 0] and e["p_value"] == 1 for e in same)


def test_paired_p_values_count_both_sides_and_never_reach_zero() -> None:
    samples = np.array([[1.0, -1.0, 0.0], [2.0, np.nan, 0.0], [3.0, -2.0, 0.0]])
    # column 0: none <= 0 -> 2 * 1/4; column 1: both < 0, 2 finite -> 2 * 1/3; column 2: ties
    assert paired_p_values(samples) == pytest.approx([0.5, 2 / 3, 1.0])


def test_reading_only_the_highest_impostors_changes_no_resample(monkeypatch) -> None:
    """Many tied impostors and few identities: resamples whose first prefix of the highest
    impostors is too light must grow it, to the same threshold as all impostors give."""
    from meerbench.metrics import operational

    lengths = set()
    finder = operational.FpirThresholds
    monkeypatch.setattr(operational, "FpirThresholds",
                        lambda values: lengths.add(values.size) or finder(values))
    rng = np.random.default_rng(5)
    blocks = {c: (np.round(rng.normal(m, 1, 100), 1).tolist(),
                  np.round(rng.normal(0, 1, 3000), 2).tolist())
              for c, m in (("UMR-UMP", 2.5), ("MR-MP", 1.5))}
    scores, labels, conds, _ = pairs(blocks)
    groups = rng.integers(0, 8, scores.size)
    settings = OperationalSettings(fmr_targets=(0.002, 0.0005), bootstrap=60, seed=2)
    report = operational_report(scores, labels, conds, settings, groups)
    assert len(lengths) > 1  # the first prefix, and at least one resample grew it

    brute = []
    for w in bootstrap_weights(scores.size, groups, settings.bootstrap, settings.seed):
        take = np.repeat(np.arange(scores.size), w)
        again = operational_report(scores[take], labels[take], conds[take],
                                   OperationalSettings(settings.fmr_targets, 0))
        brute.append([e[k]["value"] for p in again["operating_points"]
                      for e in p["conditions"].values() for k in ("fnmr", "fmr")])
    low, high = np.percentile(np.array(brute, dtype=float), [2.5, 97.5], axis=0)
    got = [e[k]["ci95"] for p in report["operating_points"]
           for e in p["conditions"].values() for k in ("fnmr", "fmr")]
    assert np.array(got) == pytest.approx(np.column_stack([low, high]), abs=1e-12)


def test_intervals_are_seeded() -> None:
    data = pairs(HAND, HAND_FAMILIES)
    groups = np.arange(data[0].size) % 5
    settings = OperationalSettings(fmr_targets=(0.3,), bootstrap=50, seed=1)
    one, two = (operational_report(*data[:3], settings, groups, data[3]) for _ in range(2))
    assert one == two
    assert one["operating_points"][0]["conditions"]["UMR-MP"]["fnmr"]["ci95"] is not None


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_named() -> None:
    only_masked = pairs({"UMR-MP": ([0.9], [0.1])})
    with pytest.raises(MetricInputError, match="UMR-UMP condition needs genuine and impostor"):
        operational_report(*only_masked[:3], NO_BOOTSTRAP)
    scores, labels, conds, _ = pairs(HAND)
    with pytest.raises(MetricInputError, match="conditions must give one value per pair"):
        operational_report(scores, labels, conds[:-1], NO_BOOTSTRAP)
    with pytest.raises(MetricInputError, match="unknown"):
        OperationalSettings.from_dict({"far_targets": [0.1]})
    with pytest.raises(MetricInputError, match="must list each value once"):
        OperationalSettings(fmr_targets=(0.1, 0.1))
    with pytest.raises(MetricInputError, match="in \\(0, 1\\)"):
        OperationalSettings(fmr_targets=(0.0,))
