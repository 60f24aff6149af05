"""The float64 reference of PSNR and SSIM (BasicSR ``calculate_psnr`` / ``_ssim``, vectorised):
what meerbench computed before its exact-integer PSNR and float32 SSIM, pinned to the BasicSR
oracles at 1e-12 by ``tests/test_metrics_restoration.py``. Test and benchmark use only."""

from __future__ import annotations

import numpy as np
import scipy.ndimage

_GAUSS = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_GAUSS /= _GAUSS.sum()
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def psnr64(a: np.ndarray, b: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """Per-image PSNR in float64 (over ``m``'s pixels when given; inf for identical images)."""
    sq = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if m is None:
        mse = sq.mean(axis=(1, 2, 3))
    else:
        with np.errstate(invalid="ignore"):
            mse = np.einsum("nhwc,nhw->n", sq, (m != 0).astype(np.float64)) / (
                (m != 0).sum(axis=(1, 2)) * 3.0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def ssim64(a: np.ndarray, b: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """Per-image SSIM in float64, Gaussian 11x11, sigma 1.5, valid map; with ``m`` the mean of
    the channel-averaged map over ``m`` cropped by 5 px."""
    x = a.transpose(0, 3, 1, 2).astype(np.float64)
    y = b.transpose(0, 3, 1, 2).astype(np.float64)
    f = scipy.ndimage.correlate1d(np.stack([x, y, x * x + y * y, x * y]), _GAUSS, axis=-1)
    f = scipy.ndimage.correlate1d(f[..., 5:-5], _GAUSS, axis=-2)[..., 5:-5, :]
    mu_xy = f[0] * f[1]
    mu_sq = f[0] ** 2 + f[1] ** 2
    smap = ((2 * mu_xy + _C1) * (2 * (f[3] - mu_xy) + _C2)) / (
        (mu_sq + _C1) * (f[2] - mu_sq + _C2))
    if m is None:
        return smap.mean(axis=(1, 2, 3))
    crop = (m != 0)[:, 5:-5, 5:-5]
    with np.errstate(invalid="ignore"):
        return np.einsum("nhw,nhw->n", smap.mean(axis=1), crop) / crop.sum(axis=(1, 2))
