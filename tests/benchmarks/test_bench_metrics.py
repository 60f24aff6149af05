"""Metric speed (pytest-benchmark; skipped by default, run with ``--benchmark-only``).

Numbers land in ``benchmark.extra_info``; ratios to a baseline are timed with one clock
(``time.perf_counter``, best of a few runs) whatever ``--benchmark-timer`` says. The 10M-pair
case is marked slow.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from meerbench.metrics import identification as idf
from meerbench.metrics import verification as v


def _lfw_like(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat([1, 0], 300), n // 600)
    scores = np.clip(np.where(labels == 1, rng.normal(0.55, 0.15, n), rng.normal(0.05, 0.1, n)),
                     -1, 1)
    return scores, labels, np.repeat(np.arange(10), n // 10)


def _best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _naive_insightface(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> list[float]:
    """Baseline: one pass over the data per fold and per grid threshold, as calculate_roc does."""
    grid = 1.0 - np.arange(0, 4, 0.01) / 2
    out = []
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        acc = [np.mean((scores[train] > t) == labels[train]) for t in grid]
        t = grid[int(np.argmax(acc))]
        out.append(float(np.mean((scores[test] > t) == labels[test])))
    return out


def test_bench_report_6000_pairs(benchmark) -> None:
    scores, labels, folds = _lfw_like()
    config = v.VerificationSettings(bootstrap=0)
    report = benchmark(v.verification_report, scores, labels, folds, config)
    benchmark.extra_info["median_s"] = benchmark.stats["median"]
    assert report["n_pairs"] == 6000
    assert benchmark.stats["median"] < 0.05


def test_bench_report_6000_pairs_bootstrap_1000(benchmark) -> None:
    scores, labels, folds = _lfw_like()
    config = v.VerificationSettings(bootstrap=1000)
    groups = np.arange(6000) // 3
    report = benchmark.pedantic(v.verification_report, args=(scores, labels, folds, config),
                                kwargs={"groups": groups}, rounds=3, iterations=1)
    benchmark.extra_info["median_s"] = benchmark.stats["median"]
    assert report["auc"]["ci95"] is not None
    assert benchmark.stats["median"] < 1.0


def test_bench_insightface_rule_vs_naive_grid(benchmark) -> None:
    scores, labels, folds = _lfw_like()
    naive_s = _best_of(lambda: _naive_insightface(scores, labels, folds), repeat=1)
    fast_s = _best_of(lambda: v.kfold_accuracy(scores, labels, folds, "insightface"), repeat=20)
    result = benchmark(v.kfold_accuracy, scores, labels, folds, "insightface")
    assert list(result.per_fold) == _naive_insightface(scores, labels, folds)
    benchmark.extra_info["naive_s"] = naive_s
    benchmark.extra_info["speedup"] = naive_s / fast_s


@pytest.mark.slow
def test_bench_10m_pairs_roc_tar_eer(benchmark) -> None:
    rng = np.random.default_rng(1)
    n = 10_000_000
    labels = rng.random(n) < 0.01
    scores = np.where(labels, rng.normal(0.5, 0.15, n), rng.normal(0.0, 0.1, n))

    def run() -> tuple:
        curve = v.SortedScores(scores, labels).roc()
        tars = [v.tar_value(curve, t, "floor") for t in (1e-3, 1e-4, 1e-5, 1e-6)]
        return tars, v.roc_eer(curve, "min_gap"), v.roc_auc(curve)

    tars, gap, _ = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["seconds"] = benchmark.stats["median"]
    assert 0 < gap.value < 0.1 and tars[0][0] > tars[-1][0]


@pytest.fixture(scope="module")
def gallery_world() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(20_000, 512)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probe_ids = rng.integers(0, 6000, 2000)  # identities >= 5000 are not in the gallery
    gallery_ids = np.arange(20_000) // 4
    probes = gallery[(probe_ids % 5000) * 4] + 0.05 * rng.normal(size=(2000, 512)).astype(
        np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return {"probes": probes, "probe_ids": probe_ids, "gallery": gallery,
            "gallery_ids": gallery_ids}


def test_bench_topk_2000_x_20000_x_512(benchmark, gallery_world: dict[str, np.ndarray]) -> None:
    import torch

    probes = torch.from_numpy(gallery_world["probes"])
    gallery = torch.from_numpy(gallery_world["gallery"])
    args = (gallery_world["probes"], gallery_world["gallery"], 20)
    matmul_s = _best_of(lambda: probes @ gallery.T)
    topk_s = _best_of(lambda: idf.topk_similarity(*args))
    scores, _ = benchmark.pedantic(idf.topk_similarity, args=args, rounds=3, iterations=1)
    benchmark.extra_info["plain_matmul_s"] = matmul_s
    benchmark.extra_info["topk_s"] = topk_s
    benchmark.extra_info["topk_over_matmul"] = topk_s / matmul_s
    benchmark.extra_info["probes_per_s"] = 2000 / topk_s
    assert scores.shape == (2000, 20)


def test_bench_identification_report(benchmark, gallery_world: dict[str, np.ndarray]) -> None:
    config = idf.IdentificationSettings(bootstrap=1000)
    args = (gallery_world["probes"], gallery_world["probe_ids"], gallery_world["gallery"],
            gallery_world["gallery_ids"], config)
    report = benchmark.pedantic(idf.identification_report, args=args, rounds=1, iterations=1)
    benchmark.extra_info["seconds"] = benchmark.stats["median"]
    assert report["n_probes_mated"] > 0
