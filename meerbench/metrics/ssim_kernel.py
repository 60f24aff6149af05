"""SSIM's float64 kernel, compiled by numba: filtering, map and means fused per image row.

Kept apart from ``restoration`` so that importing the metrics does not import numba (0.25 s);
a process's first call loads the compiled kernel from numba's on-disk cache (with the import,
1.03-1.14 s against 0.48-0.55 s for later calls on 3,000 masked pairs), or, the very first time,
compiles it into that cache (1.92 s). Where no
cache folder is writable (the package's ``__pycache__``, the user's cache folder or
``NUMBA_CACHE_DIR``) it compiles in every process, with a warning that says so.
Measured on 112x112 pairs (2-core AMD EPYC, one thread): 0.27 s per 1,000 pairs, where
OpenCV's float64 ``sepFilter2D`` of the same four planes alone took 0.40-0.45 s (its float64
path is not vectorised). Two things the speed depends on, each measured: the channel count is a
compile-time constant (with a run-time stride the row filter ran 6.6x slower), and each filter
is one loop per tap over a whole row (accumulating the taps per element ran 3x slower).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numba
import numpy as np

_CHANNELS = 3  #: RGB, interleaved; a constant to the compiler
_JIT = {"nogil": True, "boundscheck": False, "error_model": "numpy",
        "fastmath": {"contract"}}  # contract: a*b+c may round once (FMA), never reassociated


def _compiled(fn: Callable[..., None]) -> Callable[..., None]:
    try:
        return numba.njit(cache=True, **_JIT)(fn)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        warnings.warn(f"SSIM's compiled kernel cannot be cached ({exc}); it is compiled in "
                      "every process (~0.9 s more than loading a cached one). Set "
                      "NUMBA_CACHE_DIR to a writable folder.", RuntimeWarning, stacklevel=2)
        return numba.njit(cache=False, **_JIT)(fn)


@_compiled
def _row_filter(src: np.ndarray, dst: np.ndarray, g: np.ndarray) -> None:
    """``dst`` = the valid part of ``src`` (one interleaved RGB row) filtered by the symmetric
    11-tap ``g`` along the row."""
    c = _CHANNELS
    for t in range(dst.shape[0]):
        dst[t] = (g[5] * src[t + 5 * c]
                  + g[0] * (src[t] + src[t + 10 * c]) + g[1] * (src[t + c] + src[t + 9 * c])
                  + g[2] * (src[t + 2 * c] + src[t + 8 * c])
                  + g[3] * (src[t + 3 * c] + src[t + 7 * c])
                  + g[4] * (src[t + 4 * c] + src[t + 6 * c]))


@_compiled
def ssim_means(a: np.ndarray, b: np.ndarray, m: np.ndarray, g: np.ndarray, c1: float,
               c2: float, out: np.ndarray) -> None:
    """Per image, ``out[0]``: the mean of the valid SSIM map of ``a`` against ``b``, and, when
    ``m`` has rows, ``out[1]``: its mean over the pixels of ``m`` (NaN where ``m`` is empty).

    ``a``, ``b``: (N, H, W * 3) interleaved RGB rows, both uint8 or both float64; ``m``:
    (N, H - 10, W - 10) booleans, the mask cropped to the valid map, or (0, ...) for none; all
    C-contiguous and writable, as ``out`` (2, N): each other layout is another compilation.
    Each map row takes the Gaussian means of x, y, x^2 + y^2 and xy down 11 image rows, then
    along the row, so an image is read from the L1/L2 caches and no plane is stored.
    """
    c = _CHANNELS
    n, h, width = a.shape
    w_valid = width - 10 * c
    column = np.empty((4, width))
    mean = np.empty((4, w_valid))
    ssim_row = np.empty(w_valid)
    masked = m.shape[0] > 0
    for i in range(n):
        total = 0.0
        region_total = 0.0
        region_pixels = 0
        for r in range(h - 10):
            mx, my, sq, xy = column[0], column[1], column[2], column[3]
            mx[:] = 0.0
            my[:] = 0.0
            sq[:] = 0.0
            xy[:] = 0.0
            for k in range(11):
                gk = g[k]
                row_a, row_b = a[i, r + k], b[i, r + k]
                for t in range(width):
                    x = np.float64(row_a[t])
                    y = np.float64(row_b[t])
                    mx[t] += gk * x
                    my[t] += gk * y
                    sq[t] += gk * (x * x + y * y)
                    xy[t] += gk * (x * y)
            for p in range(4):
                _row_filter(column[p], mean[p], g)
            mx, my, sq, xy = mean[0], mean[1], mean[2], mean[3]
            for t in range(w_valid):
                mu_xy = mx[t] * my[t]
                mu_sq = mx[t] * mx[t] + my[t] * my[t]
                ssim_row[t] = (((2.0 * mu_xy + c1) * (2.0 * (xy[t] - mu_xy) + c2))
                               / ((mu_sq + c1) * (sq[t] - mu_sq + c2)))
            row_total = 0.0
            for t in range(w_valid):
                row_total += ssim_row[t]
            total += row_total
            if masked:
                for j in range(w_valid // c):
                    if m[i, r, j]:
                        region_pixels += 1
                        for ch in range(c):
                            region_total += ssim_row[j * c + ch]
        out[0, i] = total / ((h - 10) * w_valid)
        if masked:
            out[1, i] = region_total / (c * region_pixels) if region_pixels else np.nan
