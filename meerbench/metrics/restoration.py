"""Restoration metrics (masked -> unmasked faces): PSNR, SSIM, FID, LPIPS, identity similarity.

Images are (N, H, W, 3) RGB arrays, uint8 or float in [0, 255]; masks are (N, H, W), nonzero
inside the mask region. PSNR and SSIM follow BasicSR (``calculate_psnr`` / ``_ssim``), per
image, then averaged: PSNR's squared error is summed exactly in integers for uint8 images
(float64 for float images), so it equals BasicSR's float64 value bit for bit; SSIM filters in
float64 in a numba-compiled kernel (``ssim_kernel``) that fuses filtering, map and means
(within 1e-13 of BasicSR; float32 is not within 1e-6, see ``_ssim_results``). FID uses
pytorch-fid's Inception and LPIPS the ``lpips`` package, only from weight files already on disk:
absent weights give ``{"value": None, "available": False}`` with the file to place and where,
never a number from random weights.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from meerbench.errors import ModelError
from meerbench.io import sha256_file
from meerbench.metrics.errors import MetricInputError, check_choice

if TYPE_CHECKING:
    import torch

PSNR_CONVENTIONS = {
    "definition": "10*log10(255^2/MSE), MSE over all pixels and RGB channels (BasicSR)",
    "data_range": 255, "channels": "RGB", "crop_border": 0,
    "dtype": "float64; for uint8 images the squared errors are summed exactly in integers",
    "averaging": "per image, then mean over finite values",
    "identical_images": "PSNR inf, counted in n_identical, left out of the mean",
    "mask": "MSE over the mask region only; images with an empty mask skipped and counted",
}
SSIM_CONVENTIONS = {
    "window": "gaussian 11x11", "sigma": 1.5, "data_range": 255, "k1": 0.01, "k2": 0.03,
    "padding": "valid: map cropped by 5 px (BasicSR _ssim)", "channels": "RGB, per channel",
    "dtype": "float64", "averaging": "map mean per channel, channel mean per image, image mean",
    "mask": "mean of the channel-averaged map over the mask cropped by 5 px",
}
FID_CONVENTIONS = {
    "extractor": "pytorch-fid InceptionV3 pool3", "statistics": "float64, covariance ddof=1",
    "input": "uint8/255 -> [0, 1] -> 2x-1",
    "resize": "299x299 torch bilinear, align_corners=False, no antialias (pytorch-fid)",
    "sqrt": "eig: sum sqrt(eigvalsh(L^T S2 L)), S1 = L L^T, checked against scipy sqrtm",
}
LPIPS_CONVENTIONS = {
    "version": "lpips v0.1", "input": "uint8 -> x/127.5-1; floats must already be in [-1, 1]",
    "averaging": "per image, then mean",
    "mask": "mean over the mask of lpips's spatial map (spatial=True forward)",
}

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
LPIPS_TRUNKS = {  # lpips builds torchvision's ImageNet trunk; torch hub caches it under these names
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
FID_MIN_IMAGES = 2048

#: PSNR and SSIM threads: on the 2-core machines measured, two threads ran 1.5-1.8x one
_THREADS = min(2, os.cpu_count() or 1)
_GAUSS = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_GAUSS /= _GAUSS.sum()
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
_SSIM_CHUNK = 64  #: images per call of the SSIM kernel


class WeightsUnavailable(ModelError):
    """A weights file is not in the torch hub checkpoints folder (meerbench never downloads)."""

    def __init__(self, what: str, url: str) -> None:
        self.weights_file = url.rsplit("/", 1)[-1]
        self.place_at = str(checkpoint_dir())
        self.url = url
        super().__init__(
            f"{what} weights {self.weights_file} not found in {self.place_at}: download {url} "
            "and place the file there (meerbench never downloads weights at run time)."
        )

    def result(self) -> dict[str, Any]:
        """The JSON-ready 'not available' entry a report shows instead of a number."""
        return {"value": None, "available": False, "reason": str(self),
                "weights_file": self.weights_file, "place_at": self.place_at, "url": self.url}


def checkpoint_dir() -> Path:
    """Torch hub's checkpoints folder (``$TORCH_HOME/hub/checkpoints`` by default)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_path(what: str, url: str) -> Path:
    path = checkpoint_dir() / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise WeightsUnavailable(what, url)
    return path


def metric_settings() -> dict[str, Any]:
    """Everything besides the images that :func:`restoration_report`'s numbers depend on, for
    cache keys: the conventions and the sha256 of the FID and LPIPS weights found on disk (None
    where absent: the report then says 'not available', until the file is placed)."""
    found = {}
    for what, url in (("fid", FID_WEIGHTS_URL), *((f"lpips-{net}", u)
                                                  for net, u in LPIPS_TRUNKS.items())):
        path = checkpoint_dir() / url.rsplit("/", 1)[-1]
        found[what] = sha256_file(path) if path.is_file() else None
    return {"conventions": {"psnr": PSNR_CONVENTIONS, "ssim": SSIM_CONVENTIONS,
                            "fid": FID_CONVENTIONS, "lpips": LPIPS_CONVENTIONS},
            "weights_sha256": found}


# --------------------------------------------------------------------------- inputs


def _rgb(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise MetricInputError(
            f"{name} must be (N >= 1, H, W, 3) RGB images, got shape {arr.shape}")
    return arr


def _check_range(arr: np.ndarray, name: str, lo: float, hi: float) -> None:
    found_lo, found_hi = float(arr.min()), float(arr.max())
    if not (found_lo >= lo and found_hi <= hi):  # also catches NaN
        raise MetricInputError(f"{name} must lie in [{lo:g}, {hi:g}], found min={found_lo:g}, "
                         f"max={found_hi:g}")


def _images(x: Any, name: str) -> np.ndarray:
    arr = _rgb(x, name)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise MetricInputError(f"{name} must be uint8 or float in [0, 255], got {arr.dtype}")
        _check_range(arr, name, 0, 255)
    return arr


def _pair(restored: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _images(restored, "restored"), _images(target, "target")
    if a.shape != b.shape:
        raise MetricInputError(f"restored {a.shape} and target {b.shape} differ in shape")
    return a, b


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape[:3]:
        raise MetricInputError(f"mask must have shape {shape[:3]} (N, H, W), got {m.shape}")
    return m != 0


def _per_image(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


# --------------------------------------------------------------------------- PSNR / SSIM


@dataclass(frozen=True)
class PerImageResult:
    """Mean of a per-image metric (PSNR in dB, SSIM) over its finite values; ``per_image`` holds
    inf for identical images (PSNR) and nan for images whose mask is empty."""

    mean: float | None
    per_image: np.ndarray = field(repr=False, compare=False)
    n_empty_mask: int
    masked: bool
    conventions: dict[str, Any] = field(repr=False)
    n_identical: int | None = None  # PSNR only: images equal to their target

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": self.mean, "n_images": len(self.per_image),
                               "n_averaged": int(np.isfinite(self.per_image).sum())}
        if self.n_identical is not None:
            out["n_identical"] = self.n_identical
        return {**out, "n_empty_mask": self.n_empty_mask, "masked": self.masked,
                "per_image": _per_image(self.per_image), "conventions": self.conventions}


def psnr(restored: Any, target: Any, mask: Any = None) -> PerImageResult:
    """Per-image PSNR on [0, 255] in float64, averaged over finite values (BasicSR, RGB)."""
    return _whole_or_region(_psnr_results, restored, target, mask)


def _whole_or_region(
    results: Callable[[np.ndarray, np.ndarray, np.ndarray | None],
                      tuple[PerImageResult, PerImageResult | None]],
    restored: Any, target: Any, mask: Any,
) -> PerImageResult:
    """The whole-image result without a mask, else the mask-region one."""
    a, b = _pair(restored, target)
    whole, region = results(a, b, None if mask is None else _mask(mask, a.shape))
    return whole if region is None else region


def _psnr_results(a: np.ndarray, b: np.ndarray,
                  m: np.ndarray | None) -> tuple[PerImageResult, PerImageResult | None]:
    """Whole-image PSNR and, given a mask, mask-region PSNR from one squared error.

    For uint8 images the squared errors are summed in integers, exactly, so the MSE (one float64
    division) is BasicSR's float64 value bit for bit, without float64 copies of the images.
    """
    def result(total: np.ndarray, count: Any, masked: bool) -> PerImageResult:
        with np.errstate(divide="ignore", invalid="ignore"):
            mse = total / count
            values = 10.0 * np.log10(255.0**2 / mse)
        n_empty = int((np.asarray(count) == 0).sum()) if masked else 0
        return PerImageResult(_mean(values), values, n_empty, masked, PSNR_CONVENTIONS,
                              n_identical=int((mse == 0).sum()))

    with ThreadPoolExecutor(_THREADS) as pool:  # numpy releases the GIL
        totals = list(pool.map(lambda s: _squared_error_sums(a[s], b[s], None if m is None
                                                            else m[s]),
                               _chunks(len(a), a.shape[1] * a.shape[2])))
    whole = result(np.concatenate([t[0] for t in totals]), float(np.prod(a.shape[1:])), False)
    if m is None:
        return whole, None
    count = m.sum(axis=(1, 2)) * 3.0
    return whole, result(np.concatenate([t[1] for t in totals]), count, True)


def _chunks(n: int, pixels: int) -> list[slice]:
    """Slices of ~256k pixels per image channel: working sets that stay in the CPU caches."""
    step = max(1, 2**18 // pixels)
    return [slice(i, i + step) for i in range(0, n, step)]


_SUM = {True: np.int64, False: np.float64}  #: sums of integer squared errors stay exact


def _squared_error_sums(a: np.ndarray, b: np.ndarray, m: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the sum of (a - b)^2 over all pixels and channels, and over the pixels of
    ``m`` (empty without it); integers (exact) for two uint8 arrays, else float64."""
    exact = a.dtype == np.uint8 and b.dtype == np.uint8
    d = np.subtract(a, b, dtype=np.int32 if exact else np.float64)
    np.multiply(d, d, out=d)
    per_pixel = d[..., 0] + d[..., 1]  # channels added as planes: a reduction over an axis of
    per_pixel += d[..., 2]             # 3 is several times slower
    per_pixel = per_pixel.reshape(len(d), -1)
    region = (np.zeros(0) if m is None else
              np.einsum("ip,ip->i", per_pixel, m.reshape(len(d), -1).astype(_SUM[exact])))
    return per_pixel.sum(axis=1), region


def ssim(restored: Any, target: Any, mask: Any = None) -> PerImageResult:
    """SSIM with BasicSR's conventions (Gaussian 11x11, sigma 1.5, valid filtering, float64)."""
    return _whole_or_region(_ssim_results, restored, target, mask)


def _ssim_results(a: np.ndarray, b: np.ndarray,
                  m: np.ndarray | None) -> tuple[PerImageResult, PerImageResult | None]:
    """Whole-image SSIM and, given a mask, mask-region SSIM from one pass of the compiled
    kernel, on two threads (it releases the GIL), each over one half of the images.

    float64, as BasicSR: float32 filtering loses up to ~2e-5 where E[x^2] - E[x]^2 cancels in
    flat regions (measured on SynthFace restorations and flat test images), more than 1e-6.
    """
    from meerbench.metrics.ssim_kernel import ssim_means

    n, h, w, c = a.shape
    if h < 11 or w < 11:
        raise MetricInputError(f"SSIM needs images of at least 11x11 pixels (its window), got "
                               f"{h}x{w}")
    # one compiled variant for all inputs: uint8 pairs as they are, any other as float64
    dtype = np.uint8 if a.dtype == b.dtype == np.uint8 else np.float64
    crop = np.ascontiguousarray(m[:, 5:-5, 5:-5]) if m is not None else None
    no_mask = np.zeros((0, h - 10, w - 10), bool)
    v = np.empty((2, n))

    def rows(x: np.ndarray) -> np.ndarray:
        """Images as (n, H, W * 3) rows, C-contiguous and writable (a copy only when not)."""
        return np.require(x, dtype, ("C", "W")).reshape(len(x), h, w * c)

    def half(part: slice) -> None:  # in chunks: float64 copies of float inputs stay small
        # (64 images of 112 px: 19 MB per array and thread)
        for start in range(part.start, part.stop, _SSIM_CHUNK):
            chunk = slice(start, min(start + _SSIM_CHUNK, part.stop))
            out = np.full((2, chunk.stop - chunk.start), np.nan)  # row 1 stays NaN unmasked
            ssim_means(rows(a[chunk]), rows(b[chunk]), no_mask if crop is None else crop[chunk],
                       _GAUSS, _C1, _C2, out)
            v[:, chunk] = out

    threads = min(_THREADS, n)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(half, [slice(n * t // threads, n * (t + 1) // threads)
                             for t in range(threads)]))
    np.clip(v, -1.0, 1.0, out=v)  # identical images: 1 + round-off
    whole = PerImageResult(_mean(v[0]), v[0], 0, False, SSIM_CONVENTIONS)
    if m is None:
        return whole, None
    n_empty = int((crop.sum(axis=(1, 2)) == 0).sum())
    return whole, PerImageResult(_mean(v[1]), v[1], n_empty, True, SSIM_CONVENTIONS)


# --------------------------------------------------------------------------- FID


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any,
                     method: Literal["eig", "sqrtm"] = "eig") -> float:
    """||mu1-mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), in float64.

    ``eig``: tr sqrt(S1 S2) = sum of sqrt(eigenvalues) of the symmetric PSD matrix L^T S2 L
    (S1 = L L^T by Cholesky; sqrt(S1) S2 sqrt(S1) via eigh when S1 is singular), which is
    similar to S1 S2: one symmetric eigenvalue solve instead of a general eigen- or Schur
    decomposition; round-off negative eigenvalues are clipped at 0. ``sqrtm``: pytorch-fid's
    scipy ``sqrtm`` formula, with its 1e-6 diagonal fallback and its imaginary-part check.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise MetricInputError(
            f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    check_choice("Frechet method", method, ("eig", "sqrtm"))
    diff = mu1 - mu2
    if method == "eig":
        try:  # S1 = L L^T: L^T S2 L is similar to S1 S2
            root = np.linalg.cholesky(s1)
            sym = root.T @ s2 @ root
        except np.linalg.LinAlgError:  # singular S1 (fewer images than dims): PSD square root
            w, v = np.linalg.eigh(s1)
            root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
            sym = root @ s2 @ root
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(sym), 0, None)).sum()
    else:
        import scipy.linalg  # the sqrtm rule only: 0.15 s of every run's start otherwise

        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise MetricInputError(f"sqrtm: imaginary component {np.abs(covmean.imag).max():g}")
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean and covariance (float64, ddof=1) of n feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features: Any) -> FeatureStats:
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise MetricInputError(f"need (N >= 2, D) features, got shape {f.shape}")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def fid(restored: FeatureStats, target: FeatureStats) -> dict[str, Any]:
    """FID by ``eig``, cross-checked against ``sqrtm`` (relative difference recorded)."""
    value = frechet_distance(restored.mu, restored.sigma, target.mu, target.sigma, "eig")
    check = rel = error = None
    try:
        check = frechet_distance(restored.mu, restored.sigma, target.mu, target.sigma, "sqrtm")
        rel = abs(value - check) / max(abs(check), 1e-300)
    except MetricInputError as exc:  # sqrtm fails on some rank-deficient covariances; eig does not
        error = str(exc)
    n = min(restored.n, target.n)
    return {"value": value, "method": "eig", "value_sqrtm": check, "rel_diff_sqrtm": rel,
            "sqrtm_error": error, "n_restored": restored.n, "n_target": target.n,
            "dims": len(restored.mu),
            "warning": None if n >= FID_MIN_IMAGES else (
                f"only {n} images (< {FID_MIN_IMAGES}): FID is biased upwards (2048-d covariances "
                "are rank-deficient) and not comparable to FID on more images")}


class FeatureExtractor(Protocol):
    """Maps (N, H, W, 3) images in [0, 255] to (N, D) float64 features."""

    reportable: bool  # False for any extractor whose numbers must not be published
    info: dict[str, Any]  # JSON-ready identity: name, dims, weights hash, resize rule

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


class InceptionFeatures:
    """pytorch-fid's InceptionV3 (2048-d pool3 by default) from the local weights file only.

    The unmodified pytorch-fid loader reads ``checkpoint_dir()/pt_inception-...pth``; it is never
    called when the file is absent, so nothing downloads. Reportable only when the file's sha256
    is the official one (sha256 ``FID_WEIGHTS_SHA256``, whose prefix names the file).
    """

    def __init__(self, dims: int = 2048, *, batch_size: int = 50, device: str = "cpu") -> None:
        path = _weights_path("FID Inception", FID_WEIGHTS_URL)
        from pytorch_fid.inception import InceptionV3

        block = InceptionV3.BLOCK_INDEX_BY_DIM[dims]
        self.model = InceptionV3([block]).to(device).eval()
        self.batch_size, self.device = batch_size, device
        digest = sha256_file(path)
        self.reportable = digest == FID_WEIGHTS_SHA256
        self.info = {"name": "pytorch-fid-inception-v3", "dims": dims,
                     "weights_file": FID_WEIGHTS_FILE, "weights_sha256": digest,
                     "official_weights": self.reportable, "resize": FID_CONVENTIONS["resize"]}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.asarray(images[i:i + self.batch_size], np.float32) / 255)
                f = self.model(x.permute(0, 3, 1, 2).to(self.device))[0]
                out.append(f.mean(dim=(2, 3)).double().cpu().numpy())  # 1x1 for pool3
        return np.concatenate(out)


def fid_images(restored: Any, target: Any, *, feature_extractor: FeatureExtractor | None = None,
               cache_reference: bool = False) -> dict[str, Any]:
    """FID between restored and ground-truth images (JSON-ready dict).

    With ``cache_reference`` the ground truth's feature statistics are a store artefact keyed by
    the sha256 of the target pixels and the extractor's identity: a rerun on the same ground
    truth (every model of one protocol) skips its feature extraction, other pixels never hit.
    """
    if feature_extractor is None:
        try:
            feature_extractor = InceptionFeatures()
        except WeightsUnavailable as exc:
            return exc.result()
    rstats = FeatureStats.from_features(feature_extractor(_images(restored, "restored")))
    targets = _images(target, "target")
    cache = None
    if cache_reference:
        tstats, cache = _reference_stats(targets, feature_extractor)
    else:
        tstats = FeatureStats.from_features(feature_extractor(targets))
    out = {**fid(rstats, tstats), "available": True, "reportable": feature_extractor.reportable,
           "extractor": feature_extractor.info, "reference_cache": cache}
    if not feature_extractor.reportable:
        out["warning"] = "; ".join(filter(None, [
            "extractor is not the official FID Inception: never report this value",
            out["warning"]]))
    return out


def _reference_stats(targets: np.ndarray, extractor: FeatureExtractor
                     ) -> tuple[FeatureStats, dict[str, Any]]:
    from meerbench.store import Artefact

    pixels = hashlib.sha256(f"{targets.dtype}{targets.shape}".encode())
    pixels.update(np.ascontiguousarray(targets).tobytes())
    artefact = Artefact("fid-reference", {"extractor": extractor.info,
                                          "target_sha256": pixels.hexdigest()})
    hit = artefact.open() is not None
    if not hit:
        def fill(folder: Path) -> None:
            stats = FeatureStats.from_features(extractor(targets))
            np.savez(folder / "stats.npz", mu=stats.mu, sigma=stats.sigma, n=stats.n)

        artefact.build(fill)
    with np.load(io.BytesIO(artefact.read_bytes("stats.npz")), allow_pickle=False) as z:
        stats = FeatureStats(z["mu"], z["sigma"], int(z["n"]))
    return stats, {"path": str(artefact.dir), "hit": hit}


# --------------------------------------------------------------------------- LPIPS


@lru_cache(maxsize=2)
def _pretrained_lpips(net: str, trunk: Path) -> tuple[torch.nn.Module, bool]:
    """lpips v0.1 on the trunk file in ``checkpoint_dir()``; True if that file is the official
    one (sha256 prefix in its name, torch hub's convention)."""
    import lpips

    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained`
        warnings.filterwarnings("ignore", "(The parameter 'pretrained'|Arguments other)")
        model = lpips.LPIPS(net=net, version="0.1", verbose=False)
    return model, sha256_file(trunk).startswith(trunk.stem.rsplit("-", 1)[1])


def _lpips_input(x: Any, name: str) -> np.ndarray:
    """uint8 -> x/127.5-1; anything else must already lie in [-1, 1] (checked at both ends)."""
    arr = _rgb(x, name)
    arr = arr / np.float32(127.5) - 1 if arr.dtype == np.uint8 else arr.astype(np.float32)
    _check_range(arr, f"LPIPS input {name}", -1, 1)
    return arr


def lpips_distance(restored: Any, target: Any, net: Literal["alex", "vgg"] = "alex",
                   mask: Any = None, *, model: torch.nn.Module | None = None,
                   batch_size: int = 32) -> dict[str, Any]:
    """Mean per-image LPIPS v0.1 (JSON-ready dict); with ``mask``, inside the mask region.

    Without ``model`` the pretrained ``net`` trunk must already be in ``checkpoint_dir()``,
    else the result is 'not available'. A given ``model`` (an ``lpips.LPIPS``) carries its own
    net; one with a random trunk (``pnet_rand=True``) is marked ``reportable: False``.
    """
    import torch

    check_choice("LPIPS net", net, LPIPS_TRUNKS)
    a, b = _lpips_input(restored, "restored"), _lpips_input(target, "target")
    if a.shape != b.shape:
        raise MetricInputError(f"restored {a.shape} and target {b.shape} differ in shape")
    official = True
    if model is None:
        try:
            trunk = _weights_path(f"LPIPS {net} trunk", LPIPS_TRUNKS[net])
        except WeightsUnavailable as exc:
            return exc.result()
        model, official = _pretrained_lpips(net, trunk)
    m = None if mask is None else torch.from_numpy(_mask(mask, a.shape))
    if m is not None:  # same network, lpips's own spatial branch: a per-pixel distance map
        model = copy.copy(model)
        model.spatial = True
    device = next(model.parameters()).device
    values = []
    with torch.inference_mode():
        for i in range(0, len(a), batch_size):
            x, y = (torch.from_numpy(v[i:i + batch_size]).permute(0, 3, 1, 2).to(device)
                    for v in (a, b))
            d = model(x, y).double().cpu()
            if m is None:
                values.append(d.flatten())
            else:
                w = m[i:i + batch_size].double()
                values.append((d[:, 0] * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)))
    per = torch.cat(values).numpy()
    random_trunk = bool(model.pnet_rand)
    out = {"value": _mean(per), "available": True,
           "metric": f"lpips-{model.pnet_type}-v{model.version}", "net": model.pnet_type,
           "random_trunk": random_trunk, "official_trunk": official,
           "reportable": official and not random_trunk, "masked": m is not None,
           "n_images": len(per), "n_empty_mask": int((~np.isfinite(per)).sum()),
           "per_image": _per_image(per)}
    if not out["reportable"]:
        out["warning"] = ("random LPIPS trunk" if random_trunk else "LPIPS trunk file is not the "
                          "official one") + ": a pipeline test only, never report this value"
    return out


# --------------------------------------------------------------------------- identity, report


def identity_similarity(restored_emb: Any, target_emb: Any, recognizer: str) -> dict[str, Any]:
    """Cosine similarity between embeddings of restored and ground-truth faces."""
    a, b = np.asarray(restored_emb, np.float64), np.asarray(target_emb, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise MetricInputError(
            f"embeddings must be two equal (N, D) arrays, got {a.shape}, {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if not (norms > 0).all():
        raise MetricInputError("zero-norm embedding: cosine similarity is undefined")
    cos = np.einsum("nd,nd->n", a, b) / norms
    return {"recognizer": recognizer, "measure": "cosine", "mean": float(cos.mean()),
            "n_images": len(cos), "per_image": cos.tolist()}


def restoration_report(restored: Any, target: Any, mask_maps: Any, *,
                       restored_emb: Any = None, target_emb: Any = None,
                       recognizer: str | None = None,
                       fid_features: FeatureExtractor | None = None,
                       lpips_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """All restoration metrics as one JSON-ready dict (masked variants when masks are given)."""
    a, b = _pair(restored, target)
    identity = None
    if restored_emb is not None or target_emb is not None:
        if recognizer is None:
            raise MetricInputError("identity similarity needs the recognizer's name")
        identity = identity_similarity(restored_emb, target_emb, recognizer)
    m = None if mask_maps is None else _mask(mask_maps, a.shape)
    psnr_whole, psnr_region = _psnr_results(a, b, m)
    ssim_whole, ssim_region = _ssim_results(a, b, m)

    def bare(result: PerImageResult | None) -> dict[str, Any] | None:
        """The result without its conventions, which the report states once."""
        return None if result is None else {
            k: v for k, v in result.to_dict().items() if k != "conventions"}

    return {
        "n_images": len(a),
        "psnr": bare(psnr_whole),
        "ssim": bare(ssim_whole),
        "psnr_masked_region": bare(psnr_region),
        "ssim_masked_region": bare(ssim_region),
        "identity_similarity": identity,
        "fid": fid_images(a, b, feature_extractor=fid_features),
        "lpips": lpips_distance(a, b, model=lpips_model),
        "lpips_masked_region": (None if m is None
                                else lpips_distance(a, b, mask=m, model=lpips_model)),
        "conventions": {"psnr": PSNR_CONVENTIONS, "ssim": SSIM_CONVENTIONS,
                        "fid": FID_CONVENTIONS, "lpips": LPIPS_CONVENTIONS},
    }
