"""Identification metrics pinned to bob's cases and to brute force on the full score matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meerbench.metrics import identification as idf
from meerbench.metrics.errors import MetricInputError

BOB_CASES = json.loads((Path(__file__).parent / "data" / "bob_cases.json").read_text())


def _outcomes(case: dict) -> idf.ProbeOutcomes:
    probes = case["probes"]
    return idf.outcomes_from_scores([p["mates"] for p in probes], [p["nonmates"] for p in probes])


def _dyadic(rng: np.random.Generator, n: int, dim: int = 6) -> np.ndarray:
    """Embeddings whose dot products are exact in float32, in any order: many exact ties."""
    return rng.integers(-2, 3, (n, dim)).astype(np.float32) / 4


def _world(seed: int, n_gallery: int = 90, n_probes: int = 70) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"gallery": _dyadic(rng, n_gallery), "gallery_ids": rng.integers(0, 30, n_gallery),
            "probes": _dyadic(rng, n_probes), "probe_ids": rng.integers(0, 40, n_probes)}


def _brute_force(world: dict[str, np.ndarray]) -> idf.ProbeOutcomes:
    sim = world["probes"].astype(np.float64) @ world["gallery"].astype(np.float64).T
    same = world["probe_ids"][:, None] == world["gallery_ids"][None, :]
    return idf.outcomes_from_scores(
        [row[m] if m.any() else None for row, m in zip(sim, same, strict=True)],
        [row[~m] for row, m in zip(sim, same, strict=True)])


def _pessimistic_ap(scores: np.ndarray, is_mate: np.ndarray) -> float:
    """AP over the ranked list with ties broken against the mates (non-mates first)."""
    order = np.lexsort((is_mate, -scores))
    hits = is_mate[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks))


# ----------------------------------------------------------------------------- bob's cases


def test_bob_cmc() -> None:
    case = BOB_CASES["cmc"]
    outcomes = _outcomes(case)
    curve = idf.cmc(outcomes.rank, 19)
    assert curve[0] == case["expected_rank1"]
    assert curve[:5].tolist() == case["expected_cmc_first5"]
    assert curve[-1] == 1.0


@pytest.mark.parametrize("name", ["test0", "test1", "test2"])
def test_bob_open_set_rates(name: str) -> None:
    case = BOB_CASES[name]
    outcomes = _outcomes(case)
    t = case["threshold"]
    rate = idf.detection_identification_rate(outcomes.best_mate, outcomes.rank, t)
    assert rate == pytest.approx(case["expected"]["dir@0.5"])
    assert idf.false_alarm_rate(outcomes.nonmated_max, t) == case["expected"]["fpir@0.5"]


def test_ties_count_against_the_probe() -> None:
    outcomes = idf.outcomes_from_scores([[0.5, 0.2]], [[0.5, 0.5, 0.1]])
    assert outcomes.rank.tolist() == [3]  # both equal non-mates rank ahead of the best mate
    assert outcomes.average_precision[0] == pytest.approx((1 / 3 + 2 / 4) / 2)


# ----------------------------------------------------------------------------- FPIR thresholds


def _bob_far_threshold(nonmated: np.ndarray, target: float) -> float:
    """bob's far_threshold walk, written out: highest first, stop before FPIR would exceed."""
    values = np.sort(nonmated)[::-1]
    threshold, i = np.nextafter(values[0], np.inf), 0
    while i < values.size:
        j = i
        while j + 1 < values.size and values[j + 1] == values[i]:
            j += 1
        if (j + 1) / values.size > target:
            break
        threshold, i = values[i], j + 1
    return threshold


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.integers(0, 8).map(float), min_size=1, max_size=40),
       st.floats(0.001, 0.999))
def test_fpir_thresholds_follow_bobs_far_threshold(values: list[float], target: float) -> None:
    nonmated = np.array(values)
    (threshold,), (fpir,) = idf.FpirThresholds(nonmated)([target])
    assert threshold == _bob_far_threshold(nonmated, target)
    assert fpir == idf.false_alarm_rate(nonmated, threshold) <= target


def test_dir_at_fpir_records_its_operating_point() -> None:
    outcomes = idf.ProbeOutcomes(best_mate=np.array([0.9, 0.7, 0.6, 0.95]),
                                 rank=np.array([1, 1, 1, 2]), average_precision=np.ones(4),
                                 nonmated_max=np.array([0.8, 0.65, 0.5, 0.4, 0.3]))
    loose, strict = idf.dir_at_fpir(outcomes, [0.4, 0.1])
    assert (loose.threshold, loose.fpir, loose.dir) == (0.65, 0.4, 0.5)
    assert (strict.threshold, strict.fpir, strict.dir) == (np.nextafter(0.8, 1), 0.0, 0.25)
    assert loose.reliable and not strict.reliable  # 0.1 x 5 non-mated < 1


# ----------------------------------------------------------------------------- chunked passes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_equals_brute_force_with_ties(seed: int) -> None:
    world = _world(seed)
    expected = _brute_force(world)
    config = idf.IdentificationSettings(bootstrap=0, probe_block=16, gallery_block=25,
                                        ranks=(1, 3), max_rank=5, fpir_targets=(0.3, 0.1))
    report = idf.identification_report(world["probes"], world["probe_ids"], world["gallery"],
                                       world["gallery_ids"], config)
    assert report["cmc"] == idf.cmc(expected.rank, 5).tolist()
    assert report["rank"] == {"1": report["cmc"][0], "3": report["cmc"][2]}
    assert report["map"] == pytest.approx(expected.average_precision.mean(), abs=1e-12)
    assert report["dir_at_fpir"] == [d.to_dict() for d in idf.dir_at_fpir(expected, [0.3, 0.1])]
    assert report["n_probes_mated"] + report["n_probes_nonmated"] == 70
    assert report["n_probes_nonmated"] == expected.nonmated_max.size > 0


def test_average_precision_is_pessimistic_ap() -> None:
    world = _world(4)
    sim = world["probes"].astype(np.float64) @ world["gallery"].astype(np.float64).T
    same = world["probe_ids"][:, None] == world["gallery_ids"][None, :]
    mated = same.any(axis=1)
    expected = [_pessimistic_ap(row, m) for row, m in zip(sim[mated], same[mated], strict=True)]
    np.testing.assert_allclose(_brute_force(world).average_precision, expected, atol=1e-12)


@settings(max_examples=25, deadline=None, database=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 50), st.integers(1, 12))
def test_results_do_not_depend_on_block_sizes(seed: int, probe_block: int, gallery_block: int,
                                              k: int) -> None:
    world = _world(seed, n_gallery=40, n_probes=24)
    reference = idf.topk_similarity(world["probes"], world["gallery"], k)
    blocked = idf.topk_similarity(world["probes"], world["gallery"], k,
                                  probe_block=probe_block, gallery_block=gallery_block)
    np.testing.assert_array_equal(blocked[0], reference[0])
    np.testing.assert_array_equal(blocked[1], reference[1])
    config = idf.IdentificationSettings(bootstrap=0, probe_block=probe_block,
                                        gallery_block=gallery_block)
    args = (world["probes"], world["probe_ids"], world["gallery"], world["gallery_ids"])
    assert idf.identification_report(*args, config) == idf.identification_report(
        *args, idf.IdentificationSettings(bootstrap=0))


def test_topk_orders_ties_by_gallery_index() -> None:
    world = _world(5, n_gallery=200, n_probes=30)
    sim = world["probes"] @ world["gallery"].T
    expected = np.lexsort((np.broadcast_to(np.arange(200), sim.shape), -sim), axis=1)[:, :15]
    scores, indices = idf.topk_similarity(world["probes"], world["gallery"], 15, gallery_block=7)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(sim, expected, axis=1))
    assert scores.dtype == np.float32 and indices.dtype == np.int64


def test_topk_on_real_valued_embeddings_and_k_capped() -> None:
    rng = np.random.default_rng(6)
    gallery = rng.normal(size=(500, 64)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = gallery[:40] + 0.1 * rng.normal(size=(40, 64)).astype(np.float32)
    scores, indices = idf.topk_similarity(probes, gallery, 5, probe_block=9, gallery_block=64)
    assert (indices[:, 0] == np.arange(40)).all()
    np.testing.assert_allclose(scores, np.take_along_axis(probes @ gallery.T, indices, 1),
                               rtol=1e-5)
    half, _ = idf.topk_similarity(probes, gallery, 5, dtype="bfloat16")
    np.testing.assert_allclose(half, scores, atol=0.05)
    assert idf.topk_similarity(probes, gallery[:3], 10)[0].shape == (40, 3)


def test_report_bootstrap_over_identities() -> None:
    rng = np.random.default_rng(8)
    gallery = rng.normal(size=(100, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probe_ids = np.r_[np.repeat(np.arange(60), 3), np.arange(100, 160)]
    probes = np.r_[gallery[probe_ids[:180]], rng.normal(size=(60, 16)).astype(np.float32) * 0.25]
    probes[:180] += rng.normal(size=(180, 16)).astype(np.float32) * 0.3
    config = idf.IdentificationSettings(bootstrap=200, fpir_targets=(0.1, 0.01))
    report = idf.identification_report(probes, probe_ids, gallery, np.arange(100), config)
    json.dumps(report, allow_nan=False)
    assert report == idf.identification_report(probes, probe_ids, gallery, np.arange(100), config)
    lo, hi = report["ci95"]["rank1"]
    assert lo <= report["rank"]["1"] <= hi and lo < hi
    assert len(report["ci95"]["dir_at_fpir"]) == 2
    assert set(report) == {"n_probes_mated", "n_probes_nonmated", "n_gallery",
                           "n_gallery_identities", "rank", "cmc", "map", "dir_at_fpir",
                           "tie_rule", "dtype", "ci95"}
    assert (report["n_probes_mated"], report["n_probes_nonmated"]) == (180, 60)
    assert len(report["cmc"]) == 20 and report["tie_rule"] == "pessimistic"


def test_closed_set_report_has_no_dir() -> None:
    world = _world(9)
    mated = np.isin(world["probe_ids"], world["gallery_ids"])
    report = idf.identification_report(world["probes"][mated], world["probe_ids"][mated],
                                       world["gallery"], world["gallery_ids"],
                                       idf.IdentificationSettings(bootstrap=20))
    assert report["dir_at_fpir"] == [] and report["ci95"]["dir_at_fpir"] == []
    assert report["ci95"]["rank1"] is not None


# ----------------------------------------------------------------------------- errors


def test_identification_input_errors() -> None:
    g, p = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)[:2]
    with pytest.raises(MetricInputError, match="probe and gallery embeddings differ in dimension"):
        idf.topk_similarity(p[:, :2], g, 1)
    with pytest.raises(MetricInputError, match="gallery embeddings must be a non-empty 2-D"):
        idf.topk_similarity(p, g[0], 1)
    bad = p.copy()
    bad[1, 0] = np.nan
    with pytest.raises(MetricInputError, match="1 probe embedding\\(s\\) contain NaN or inf, "
                                               "first at row 1"):
        idf.topk_similarity(bad, g, 1)
    with pytest.raises(MetricInputError, match="k must be >= 1"):
        idf.topk_similarity(p, g, 0)
    with pytest.raises(MetricInputError, match="unknown dtype 'float64'"):
        idf.topk_similarity(p, g, 1, dtype="float64")
    with pytest.raises(MetricInputError, match="block sizes must be >= 1"):
        idf.topk_similarity(p, g, 1, probe_block=0)
    with pytest.raises(MetricInputError, match="no probe identity appears in the gallery"):
        idf.identification_report(p, [7, 8], g, [1, 2, 3])
    with pytest.raises(MetricInputError, match="need one identity per embedding"):
        idf.identification_report(p, [1], g, [1, 2, 3])
    with pytest.raises(MetricInputError, match="unknown identification setting 'rank'; "
                                               "allowed settings: bootstrap, device"):
        idf.IdentificationSettings.from_dict({"rank": [1]})
    with pytest.raises(MetricInputError, match="targets must be in \\(0, 1\\)"):
        idf.IdentificationSettings(fpir_targets=(0.0,))
    with pytest.raises(MetricInputError, match="ranks and max_rank must be >= 1"):
        idf.IdentificationSettings(ranks=(0, 5))
    with pytest.raises(MetricInputError, match="neither mate nor non-mate scores"):
        idf.outcomes_from_scores([None], [[]])


def test_settings_round_trip() -> None:
    config = idf.IdentificationSettings.from_dict({"ranks": [1, 2], "fpir_targets": [0.05],
                                                   "dtype": "bfloat16"})
    assert config.ranks == (1, 2) and config.fpir_targets == (0.05,)
    assert idf.IdentificationSettings.from_dict(config.to_dict()) == config


def _real_world(seed: int) -> dict[str, np.ndarray]:
    """Real-valued embeddings, with a few gallery rows duplicated to force exact ties."""
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(120, 32)).astype(np.float32)
    gallery[100:110] = gallery[:10]  # duplicates of mates under other identities
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery_ids = np.r_[np.arange(100) // 2, 60 + np.arange(20)]
    probe_ids = rng.integers(0, 55, 80)
    probes = gallery[np.minimum(probe_ids, 49) * 2] + 0.3 * rng.normal(size=(80, 32)).astype(
        np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    probes[:5] = gallery[:5]  # probes identical to a gallery item: mate ties a duplicate
    return {"probes": probes, "probe_ids": probe_ids, "gallery": gallery,
            "gallery_ids": gallery_ids}


def _blockwise_brute_force(world: dict[str, np.ndarray], config: idf.IdentificationSettings
                           ) -> idf.ProbeOutcomes:
    """Brute force on the very block values the pass sees (whatever the dtype rounds to): the
    pass puts mated probes first, so the blocks are cut from the probes in that order."""
    mated = np.isin(world["probe_ids"], world["gallery_ids"])
    order = np.r_[np.flatnonzero(mated), np.flatnonzero(~mated)]
    sim = np.empty((len(world["probes"]), len(world["gallery"])), dtype=np.float32)
    for p0, g0, block in idf._blocks(world["probes"][order], world["gallery"],
                                     config.probe_block, config.gallery_block, config.dtype,
                                     "cpu"):
        sim[p0:p0 + block.shape[0], g0:g0 + block.shape[1]] = block.numpy()
    same = world["probe_ids"][order][:, None] == world["gallery_ids"][None, :]
    return idf.outcomes_from_scores(
        [row[m] if m.any() else None for row, m in zip(sim, same, strict=True)],
        [row[~m] for row, m in zip(sim, same, strict=True)])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_one_pass_equals_brute_force_on_the_block_values(dtype: str) -> None:
    world = _real_world(5)
    config = idf.IdentificationSettings(bootstrap=0, probe_block=17, gallery_block=33,
                                        dtype=dtype, max_rank=5)
    expected = _blockwise_brute_force(world, config)
    report = idf.identification_report(world["probes"], world["probe_ids"], world["gallery"],
                                       world["gallery_ids"], config)
    assert report["cmc"] == idf.cmc(expected.rank, 5).tolist()
    assert report["map"] == pytest.approx(expected.average_precision.mean(), abs=1e-12)
    assert report["dir_at_fpir"] == [d.to_dict() for d in idf.dir_at_fpir(expected,
                                                                           [0.1, 0.01])]


def test_a_mate_outside_its_error_band_is_recounted_exactly(monkeypatch) -> None:
    world = _real_world(6)
    args = (world["probes"], world["probe_ids"], world["gallery"], world["gallery_ids"],
            idf.IdentificationSettings(bootstrap=0, probe_block=17, gallery_block=33))
    expected = idf.identification_report(*args)
    recounted: list[int] = []
    recount = idf._recount

    def spy(probes: np.ndarray, *rest: object) -> tuple[np.ndarray, np.ndarray]:
        recounted.append(len(probes))
        return recount(probes, *rest)

    # A zero error bound: the float64 estimate is (almost) never the float32 block value.
    monkeypatch.setattr(idf, "_ACCUMULATE_U", 0.0)
    monkeypatch.setattr(idf, "_recount", spy)
    assert idf.identification_report(*args) == expected
    assert recounted and recounted[0] > 0


def test_a_single_probe_recount_takes_its_scores_from_its_own_blocks(monkeypatch) -> None:
    world = _real_world(7)
    args = (world["probes"], world["probe_ids"], world["gallery"], world["gallery_ids"],
            idf.IdentificationSettings(bootstrap=0, probe_block=17, gallery_block=33))
    expected = idf.identification_report(*args)
    bands = idf._mate_bands
    recounted: list[int] = []
    recount = idf._recount

    def one_band_off(*a: object) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = bands(*a)
        lo[0], hi[0] = np.where(np.isfinite(lo[0]), 5.0, lo[0]), np.where(np.isfinite(hi[0]), 6.0,
                                                                           hi[0])
        return lo, hi

    def spy(probes: np.ndarray, *rest: object) -> tuple[np.ndarray, np.ndarray]:
        recounted.append(len(probes))
        # This CPU rounds a one-row block like a 17-row one, so the case where they differ
        # cannot be staged here; what holds either way: every mate counts itself.
        exact, counts = recount(probes, *rest)
        assert counts[np.isfinite(exact)].min() >= 1
        return exact, counts

    monkeypatch.setattr(idf, "_mate_bands", one_band_off)
    monkeypatch.setattr(idf, "_recount", spy)
    assert idf.identification_report(*args) == expected
    assert recounted == [1]
