"""Restoration metric speed (pytest-benchmark; run with ``--benchmark-only``).

Frechet distance at 2048 dims: ``eig`` (two symmetric eigensolves) against pytorch-fid's scipy
``sqrtm`` formula, timed alternately in one process; PSNR + SSIM on 3,000 112x112 pairs.
Numbers land in ``benchmark.extra_info``.
"""

from __future__ import annotations

import time

import numpy as np

from meerbench.metrics.restoration import frechet_distance, psnr, ssim


def _stats_2048(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature statistics of 2,560 samples (> 2,048 dims: full-rank covariance)."""
    rng = np.random.default_rng(seed)
    mix = np.eye(2048) + rng.standard_normal((2048, 2048)) / 180
    f = rng.standard_normal((2560, 2048)) @ mix + 0.1 * seed
    return f.mean(axis=0), np.cov(f, rowvar=False)


def test_frechet_2048_eig_vs_sqrtm(benchmark):
    args = (*_stats_2048(1), *_stats_2048(2))
    sqrtm: list[tuple[float, float]] = []

    def time_sqrtm() -> None:  # untimed setup before each eig round: the two interleave
        start = time.perf_counter()
        value = frechet_distance(*args, method="sqrtm")
        sqrtm.append((time.perf_counter() - start, value))

    eig = benchmark.pedantic(lambda: frechet_distance(*args), setup=time_sqrtm, rounds=3,
                             iterations=1)
    eig_s, sqrtm_s = benchmark.stats.stats.min, min(t for t, _ in sqrtm)
    rel = abs(eig - sqrtm[0][1]) / sqrtm[0][1]
    benchmark.extra_info.update(eig_s=eig_s, sqrtm_s=sqrtm_s, speedup=sqrtm_s / eig_s,
                                rel_diff=rel, fid=eig)
    print(f"\nFrechet 2048-d: eig {eig_s:.2f} s, sqrtm {sqrtm_s:.2f} s, "
          f"speedup {sqrtm_s / eig_s:.1f}x, relative difference {rel:.1e}")
    assert rel < 1e-6
    assert sqrtm_s / eig_s >= 3


def test_psnr_ssim_3000_pairs(benchmark):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (3000, 112, 112, 3), dtype=np.uint8)
    restored = np.clip(target + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)

    out = benchmark.pedantic(lambda: (psnr(restored, target), ssim(restored, target)),
                             rounds=3, iterations=1)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(seconds=seconds, pairs_per_s=3000 / seconds,
                                psnr=out[0].mean, ssim=out[1].mean)
    print(f"\nPSNR+SSIM 3,000 pairs 112x112: {seconds:.2f} s ({3000 / seconds:.0f} pairs/s)")
    assert 25 < out[0].mean < 35 and 0.9 < out[1].mean < 1  # time: see extra_info, no gate
