"""Restoration metrics against reference tools: BasicSR-style oracles, scikit-image, pytorch-fid
and lpips (the installed packages serve as live oracles; no weights are downloaded)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lpips
import numpy as np
import pytest
import pytorch_fid.inception
import scipy.signal
import torch
import torchvision
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance, get_activations
from restoration_reference import psnr64, ssim64

from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.restoration import (
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    FeatureStats,
    InceptionFeatures,
    WeightsUnavailable,
    fid,
    fid_images,
    frechet_distance,
    identity_similarity,
    lpips_distance,
    psnr,
    restoration_report,
    ssim,
)
from meerbench.store import ArtefactRepaired

#: SSIM filters in its numba kernel (another summation order than the oracles' scipy/numpy).
SSIM_RTOL = 1e-12

pytestmark = pytest.mark.filterwarnings(  # lpips passes torchvision's deprecated `pretrained`
    "ignore:The parameter 'pretrained':UserWarning",
    "ignore:Arguments other than a weight enum:UserWarning")


def _noisy_pairs(n: int, h: int, w: int, noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n * h * w + noise)
    target = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    restored = np.clip(target + rng.integers(-noise, noise + 1, target.shape), 0, 255)
    return restored.astype(np.uint8), target


def _no_download(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"a download was attempted: {args}")


@pytest.fixture()
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch home without any weights, where any torch hub download fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    return tmp_path / "hub" / "checkpoints"


# --------------------------------------------------------------------------- PSNR


def _psnr_oracle(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_psnr_is_per_image_mean_and_identical_images_are_counted_not_averaged() -> None:
    restored, target = _noisy_pairs(6, 20, 24)
    restored[2] = target[2]
    result = psnr(restored, target)
    expected = [_psnr_oracle(restored[i], target[i]) for i in (0, 1, 3, 4, 5)]
    assert result.n_identical == 1 and np.isinf(result.per_image[2])
    np.testing.assert_allclose(np.delete(result.per_image, 2), expected, rtol=1e-12)
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["n_averaged"] == 5 and d["per_image"][2] is None
    assert d["conventions"]["crop_border"] == 0 and d["conventions"]["channels"] == "RGB"


def test_psnr_masked_region_equals_psnr_of_the_masked_pixels() -> None:
    rng = np.random.default_rng(1)
    restored, target = _noisy_pairs(5, 16, 16)
    mask = rng.random((5, 16, 16)) < 0.3
    mask[3] = False
    result = psnr(restored, target, mask)
    for i in (0, 1, 2, 4):
        assert result.per_image[i] == pytest.approx(
            _psnr_oracle(restored[i][mask[i]], target[i][mask[i]]), rel=1e-12)
    assert np.isnan(result.per_image[3]) and result.n_empty_mask == 1 and result.masked
    # the mask matters: outside pixels are ignored even when they differ wildly
    restored[~mask] = 255 - target[~mask]
    assert psnr(restored, target, mask).mean == pytest.approx(result.mean, rel=1e-12)


def test_psnr_accepts_float_in_range_and_rejects_bad_inputs() -> None:
    restored, target = _noisy_pairs(3, 8, 8)
    assert psnr(restored.astype(np.float32), target).mean == psnr(restored, target).mean
    with pytest.raises(ValueError, match="max=300"):
        psnr(np.full((3, 8, 8, 3), 300.0), target)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(restored[:2], target)
    with pytest.raises(ValueError, match=r"restored must lie in \[0, 255\], found min=nan"):
        psnr(np.full((3, 8, 8, 3), np.nan), target)
    with pytest.raises(ValueError, match=r"\(N >= 1, H, W, 3\)"):
        psnr(restored[..., 0], target[..., 0])
    with pytest.raises(ValueError, match=r"\(N >= 1, H, W, 3\)"):
        psnr(restored[:0], target[:0])
    with pytest.raises(ValueError, match="mask must have shape"):
        psnr(restored, target, np.ones((3, 8, 7), bool))


# --------------------------------------------------------------------------- SSIM


def _ssim_oracle_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BasicSR ``_ssim`` on one channel, written plainly: 2-D Gaussian, valid filtering."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g / g.sum(), g / g.sum())
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(z: np.ndarray) -> np.ndarray:
        return scipy.signal.convolve2d(z, window, mode="valid")  # symmetric window

    x, y = x.astype(np.float64), y.astype(np.float64)
    mu1, mu2 = filt(x), filt(y)
    s1, s2, s12 = filt(x * x) - mu1**2, filt(y * y) - mu2**2, filt(x * y) - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))


def _ssim_oracle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([_ssim_oracle_map(a[..., c], b[..., c]).mean() for c in range(3)]))


def test_ssim_matches_basicsr_oracle() -> None:
    restored, target = _noisy_pairs(5, 32, 28, noise=60)
    restored[1] = target[1]
    result = ssim(restored, target)
    expected = [_ssim_oracle(restored[i], target[i]) for i in range(5)]
    np.testing.assert_allclose(result.per_image, expected, rtol=1e-12, atol=1e-12)
    assert result.per_image[1] == pytest.approx(1.0, abs=1e-12)
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert 0 < result.mean < 1


def test_ssim_takes_any_layout_and_float_inputs_and_refuses_images_below_its_window() -> None:
    """One compiled kernel for every input: floats (mixed with uint8), strided, reversed,
    Fortran-order and read-only arrays give the float64 reference's numbers (whole and mask);
    an image narrower or shorter than the 11x11 window is refused, naming its size."""
    restored, target = _noisy_pairs(70, 11, 13, noise=60)  # 70: more than one chunk per thread
    mask = np.zeros(target.shape[:3], bool)
    mask[:, 5:, 2:] = True  # the valid map is row 5 only: the mask covers three of its pixels
    mask[3] = False  # no pixel: NaN for that image, counted
    exact, region = ssim(restored, target).per_image, ssim(restored, target, mask)
    np.testing.assert_allclose(exact, ssim64(restored, target), rtol=SSIM_RTOL)
    np.testing.assert_allclose(region.per_image, ssim64(restored, target, mask), rtol=SSIM_RTOL)
    assert np.isnan(region.per_image[3]) and region.n_empty_mask == 1
    frozen = target.copy()
    frozen.flags.writeable = False
    for a, b in ((restored.astype(np.float32), target), (restored, target.astype(np.float64)),
                 (restored.astype(np.float16), target.astype(np.float32)),
                 (restored[::-1][::-1], np.asfortranarray(target)), (restored, frozen),
                 (np.repeat(restored, 2, axis=2)[:, :, ::2], target)):
        np.testing.assert_allclose(ssim(a, b).per_image, exact, rtol=1e-12)
        np.testing.assert_allclose(ssim(a, b, mask).per_image, region.per_image, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 11x11 pixels .* got 10x13"):
        ssim(restored[:, :10], target[:, :10])
    with pytest.raises(ValueError, match="at least 11x11 pixels .* got 11x10"):
        ssim(restored[:, :, :10], target[:, :, :10])


def test_ssim_kernel_compiles_where_no_cache_folder_is_writable() -> None:
    """numba refuses to cache where no folder is writable; SSIM then compiles in the process and
    warns how to give it one."""
    code = ("import warnings, numpy as np, numba.core.caching as caching\n"
            "caching.CacheImpl._locator_classes = []\n"
            "from meerbench.metrics.restoration import ssim\n"
            "black = np.zeros((2, 11, 11, 3), np.uint8)\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    value = ssim(black, black)\n"
            "print(value.mean, [str(w.message) for w in seen])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1.0 ") and "NUMBA_CACHE_DIR" in done.stdout


def test_ssim_matches_skimage_gaussian_setting() -> None:
    """skimage pads (reflect) but averages the map cropped by (win-1)/2 = 5 px: the valid map."""
    metrics = pytest.importorskip("skimage.metrics")
    restored, target = _noisy_pairs(3, 40, 36, noise=80)
    expected = [metrics.structural_similarity(
        restored[i], target[i], channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255) for i in range(3)]
    np.testing.assert_allclose(ssim(restored, target).per_image, expected, rtol=1e-10)


def _restored_faces(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SynthFace masked faces restored by OpenCV's Telea inpainting, their twins and maps."""
    from meerbench.data.render.face import render_face
    from meerbench.models.restorers import InpaintRestorer

    faces = [render_face(7, i // 2, i % 2, masked=True) for i in range(n)]
    maps = np.stack([f.mask_map for f in faces]) != 0
    restored = InpaintRestorer("telea").restore(np.stack([f.image for f in faces]), maps)
    return restored, np.stack([f.unmasked for f in faces]), maps


def test_psnr_ssim_equal_the_float64_reference_on_restored_faces() -> None:
    """PSNR: bit for bit (exact integer squared errors); SSIM within 1e-12 (1e-6 is what float32
    filtering misses here: the reason SSIM stays float64)."""
    restored, truth, maps = _restored_faces(24)
    restored[3] = truth[3]  # an identical image: PSNR inf, SSIM 1
    for mask in (None, maps):
        p, s = psnr(restored, truth, mask), ssim(restored, truth, mask)
        np.testing.assert_array_equal(p.per_image, psnr64(restored, truth, mask))
        reference = ssim64(restored, truth, mask)
        np.testing.assert_allclose(s.per_image, reference, rtol=SSIM_RTOL)
        assert s.mean == pytest.approx(reference.mean(), rel=SSIM_RTOL)
    assert 0.5 < ssim(restored, truth, maps).mean < 0.99  # restorations, not copies


@pytest.mark.parametrize("case", ["flat-different", "half-flat", "noise-free-patch"])
def test_ssim_keeps_flat_regions_exact(case: str) -> None:
    """Flat regions leave only C2 in the variance terms, where E[x^2] - E[x]^2 of ~6e4 cancels:
    float32 filtering loses ~1e-4 there (2e-5 even centred on the image mean)."""
    a = np.full((3, 48, 40, 3), 250, np.uint8)
    b = np.full_like(a, 240)
    if case == "half-flat":
        a[:, :, 20:] = 3
        b[:, :, 20:] = 9
    elif case == "noise-free-patch":
        b = a.copy()
        b[:, 10:30, 8:30] = 200
    np.testing.assert_allclose(ssim(a, b).per_image, ssim64(a, b), rtol=SSIM_RTOL)


def test_ssim_masked_region_is_mean_of_map_over_cropped_mask() -> None:
    rng = np.random.default_rng(1)
    restored, target = _noisy_pairs(4, 24, 24, noise=70)
    mask = rng.random((4, 24, 24)) < 0.5
    mask[2] = False
    mask[2, :5, :] = True  # only in the 5 px border: empty once cropped
    result = ssim(restored, target, mask)
    for i in (0, 1, 3):
        smap = np.mean([_ssim_oracle_map(restored[i][..., c], target[i][..., c])
                        for c in range(3)], axis=0)
        assert result.per_image[i] == pytest.approx(smap[mask[i][5:-5, 5:-5]].mean(), rel=1e-12)
    assert np.isnan(result.per_image[2]) and result.n_empty_mask == 1
    full = ssim(restored, target, np.ones((4, 24, 24), bool))
    np.testing.assert_allclose(full.per_image, ssim(restored, target).per_image, rtol=1e-13)


# --------------------------------------------------------------------------- Frechet distance


def _feature_stats(rng: np.random.Generator, d: int, n: int,
                   shift: float) -> tuple[np.ndarray, np.ndarray]:
    f = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + shift * rng.standard_normal(d)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _seeded_stats(d: int) -> tuple[np.ndarray, ...]:
    """Two full-rank covariances from N = 1.125 d samples, seeded by d."""
    rng = np.random.default_rng(d)
    return (*_feature_stats(rng, d, d + d // 8, 0.0), *_feature_stats(rng, d, d + d // 8, 0.3))


# pytorch-fid 0.3.0 calculate_frechet_distance on _seeded_stats(d), computed once: its 2048-d scipy
# sqrtm takes 10-60 s on 2 cores (the benchmarks time it live against eig).
PYTORCH_FID_GOLDEN = {64: 80.65508942041271, 2048: 2203.5963932209806}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes sqrtm's disp
def test_frechet_eig_and_sqrtm_match_pytorch_fid_64d() -> None:
    mu1, s1, mu2, s2 = _seeded_stats(64)
    golden = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert golden == pytest.approx(PYTORCH_FID_GOLDEN[64], rel=1e-10)  # the data are pinned too
    eig = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(eig, float) and abs(eig - golden) / golden < 1e-6
    assert frechet_distance(mu1, s1, mu2, s2, "sqrtm") == pytest.approx(golden, rel=1e-12)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9 * golden)


def test_frechet_eig_matches_pytorch_fid_golden_2048d() -> None:
    eig = frechet_distance(*_seeded_stats(2048))
    assert abs(eig - PYTORCH_FID_GOLDEN[2048]) / PYTORCH_FID_GOLDEN[2048] < 1e-6


def test_frechet_eig_on_rank_deficient_covariances() -> None:
    """Fewer images than dims: tr sqrt(S1 S2) is the nuclear norm of Xc Yc^T / sqrt(n1' n2')."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 64)) * 2, rng.standard_normal((40, 64)) + 0.2
    a, b = FeatureStats.from_features(x), FeatureStats.from_features(y)
    with pytest.raises(np.linalg.LinAlgError):  # the eigh branch runs, not Cholesky
        np.linalg.cholesky(a.sigma)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    nuclear = np.linalg.svd(xc @ yc.T / np.sqrt(29 * 39), compute_uv=False).sum()
    diff = a.mu - b.mu
    expected = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * nuclear
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(expected, rel=1e-6)


def test_frechet_rejects_bad_shapes_and_method() -> None:
    mu, s = _feature_stats(np.random.default_rng(1), 4, 20, 0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(mu, s, mu[:3], s[:3, :3])
    with pytest.raises(MetricInputError, match="unknown Frechet method .svd."):
        frechet_distance(mu, s, mu, s, method="svd")  # type: ignore[arg-type]


def test_fid_cross_checks_sqrtm_and_warns_below_2048_images() -> None:
    rng = np.random.default_rng(1)
    a = FeatureStats.from_features(rng.standard_normal((300, 16)))
    b = FeatureStats.from_features(rng.standard_normal((200, 16)) + 0.5)
    out = fid(a, b)
    assert out["value"] == pytest.approx(frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    assert out["rel_diff_sqrtm"] < 1e-8 and out["sqrtm_error"] is None
    assert out["n_restored"] == 300 and out["n_target"] == 200 and out["dims"] == 16
    assert "200 images" in out["warning"]
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="N >= 2"):
        FeatureStats.from_features(np.ones((1, 16)))


# --------------------------------------------------------------------------- FID pipeline


@pytest.fixture(scope="module")
def random_inception_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch home holding pytorch-fid's Inception architecture with random (kaiming) weights
    under the official file name: exercises the real loader, must never count as reportable."""
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:  # build the architecture without its weights
        mp.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, sd: None)
        net = pytorch_fid.inception.fid_inception_v3()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    home = tmp_path_factory.mktemp("torch-home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), home / "hub" / "checkpoints" / FID_WEIGHTS_FILE)
    return home


def test_fid_images_unavailable_without_weights(empty_torch_home: Path) -> None:
    restored, target = _noisy_pairs(4, 16, 16)
    out = fid_images(restored, target)
    assert out == {"value": None, "available": False, "reason": out["reason"],
                   "weights_file": FID_WEIGHTS_FILE, "place_at": str(empty_torch_home),
                   "url": FID_WEIGHTS_URL}
    assert FID_WEIGHTS_FILE in out["reason"] and str(empty_torch_home) in out["reason"]
    with pytest.raises(WeightsUnavailable, match="never downloads"):
        InceptionFeatures()


def test_fid_pipeline_on_random_inception_matches_pytorch_fid(
        random_inception_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(random_inception_home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    restored, target = _noisy_pairs(12, 20, 20, noise=90)
    extractor = InceptionFeatures(dims=64, batch_size=5)
    weights = random_inception_home / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    assert extractor.info["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert extractor.reportable is False and extractor.info["official_weights"] is False

    out = fid_images(restored, target, feature_extractor=extractor)
    assert out["available"] is True and out["reportable"] is False
    assert "never report" in out["warning"] and "12 images" in out["warning"]
    json.dumps(out, allow_nan=False)

    # golden: pytorch-fid's own pipeline (PNG files -> ToTensor -> its InceptionV3) on the same
    # random weights, which pytorch-fid loads from the same file
    files = []
    for i, img in enumerate(np.concatenate([restored, target])):
        files.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(img).save(files[-1])
    acts = get_activations(files, pytorch_fid.inception.InceptionV3([0]), batch_size=24,
                           dims=64, num_workers=0)
    ours = extractor(np.concatenate([restored, target]))
    assert ours.dtype == np.float64 and ours.std() > 1e-3  # random features did not collapse
    np.testing.assert_allclose(ours, acts, rtol=1e-4, atol=1e-5)
    r, t = acts[:12], acts[12:]  # pytorch-fid's statistics: mean and np.cov (ddof=1)
    golden = frechet_distance(r.mean(axis=0), np.cov(r, rowvar=False),
                              t.mean(axis=0), np.cov(t, rowvar=False))
    assert out["value"] == pytest.approx(golden, rel=1e-4)


class _MeanColour:
    """A cheap stand-in extractor: per-image channel means and standard deviations."""

    reportable = False

    def __init__(self, name: str = "mean-colour") -> None:
        self.info = {"name": name, "dims": 6}
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = np.asarray(images, np.float64)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def test_fid_reference_statistics_cache() -> None:
    restored, target = _noisy_pairs(12, 8, 8, noise=40)
    ext = _MeanColour()
    first = fid_images(restored, target, feature_extractor=ext, cache_reference=True)
    assert first["reference_cache"]["hit"] is False and ext.calls == 2
    second = fid_images(restored, target, feature_extractor=ext, cache_reference=True)
    assert second["reference_cache"]["hit"] is True and ext.calls == 3
    assert second["value"] == first["value"]
    assert first["value"] == fid_images(restored, target, feature_extractor=ext)["value"]
    folder = Path(first["reference_cache"]["path"])
    assert not [p for p in folder.parent.iterdir() if "partial" in p.name]
    edited = target.copy()
    edited[0, 0, 0, 0] ^= 1  # other ground truth (one pixel): a miss, never the old statistics
    third = fid_images(restored, edited, feature_extractor=ext, cache_reference=True)
    assert third["reference_cache"]["hit"] is False and ext.calls == 7
    other = fid_images(restored, target, feature_extractor=_MeanColour("other"),
                       cache_reference=True)  # another extractor too
    assert other["reference_cache"]["hit"] is False
    stats = folder / "stats.npz"
    stats.write_bytes(stats.read_bytes()[:-7])  # truncated: named, recomputed, same value
    with pytest.warns(ArtefactRepaired, match="stats.npz"):
        again = fid_images(restored, target, feature_extractor=ext, cache_reference=True)
    assert again["reference_cache"]["hit"] is False and again["value"] == first["value"]


# --------------------------------------------------------------------------- LPIPS


def _random_lpips(**kwargs: Any) -> lpips.LPIPS:
    torch.manual_seed(7)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def random_lpips() -> lpips.LPIPS:
    """LPIPS v0.1 alex with a seeded random trunk (the real trunk downloads: not here)."""
    return _random_lpips()


def _to_lpips_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_lpips_equals_the_lpips_model_called_directly(random_lpips: lpips.LPIPS) -> None:
    restored, target = _noisy_pairs(5, 64, 64, noise=60)
    out = lpips_distance(restored, target, model=random_lpips, batch_size=2)
    with torch.no_grad():
        ref = random_lpips(_to_lpips_tensor(restored), _to_lpips_tensor(target)).flatten()
    np.testing.assert_allclose(out["per_image"], ref.double().numpy(), rtol=1e-5)
    assert out["value"] == pytest.approx(ref.double().mean().item(), rel=1e-5)
    assert out["metric"] == "lpips-alex-v0.1" and out["masked"] is False
    assert out["random_trunk"] is True and out["reportable"] is False
    assert "never report" in out["warning"]
    same = lpips_distance(target, target, model=random_lpips)
    assert same["value"] == pytest.approx(0.0, abs=1e-7)
    as_float = lpips_distance(restored / 127.5 - 1, target / 127.5 - 1, model=random_lpips)
    np.testing.assert_allclose(as_float["per_image"], out["per_image"], rtol=1e-5)


def test_lpips_masked_region_is_mean_of_the_spatial_map_over_the_mask(
        random_lpips: lpips.LPIPS) -> None:
    restored, target = _noisy_pairs(3, 64, 64, noise=60)
    mask = np.zeros((3, 64, 64), bool)
    mask[:, 30:60, 10:54] = True
    mask[1] = False
    out = lpips_distance(restored, target, mask=mask, model=random_lpips)
    assert random_lpips.spatial is False  # the caller's model is left as it was
    with torch.no_grad():  # lpips's own spatial model, same seed: the same random weights
        smap = _random_lpips(spatial=True)(_to_lpips_tensor(restored),
                                           _to_lpips_tensor(target))[:, 0].double().numpy()
    for i in (0, 2):
        assert out["per_image"][i] == pytest.approx(smap[i][mask[i]].mean(), rel=1e-5)
    assert out["per_image"][1] is None and out["n_empty_mask"] == 1 and out["masked"] is True


def test_lpips_rejects_inputs_outside_minus_one_one_at_both_ends(
        random_lpips: lpips.LPIPS) -> None:
    restored, target = _noisy_pairs(2, 32, 32)
    model = random_lpips
    with pytest.raises(ValueError, match=r"restored must lie in \[-1, 1\], found min=0, max=2"):
        lpips_distance(restored.astype(np.float32), target, model=model)  # [0, 255] floats
    with pytest.raises(ValueError, match=r"target must lie in \[-1, 1\], found min=-1.5, max=0.5"):
        lpips_distance(restored, np.full(target.shape, -1.5, np.float32) + 2 * (
            np.arange(32) % 2 == 0)[None, None, :, None], model=model)
    with pytest.raises(ValueError, match="unknown LPIPS net 'squeeze'"):
        lpips_distance(restored, target, net="squeeze")  # type: ignore[arg-type]


def test_lpips_unavailable_without_trunk_weights(empty_torch_home: Path) -> None:
    restored, target = _noisy_pairs(2, 32, 32)
    for net, name in (("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")):
        out = lpips_distance(restored, target, net=net)
        assert out["value"] is None and out["available"] is False
        assert out["weights_file"] == name and out["place_at"] == str(empty_torch_home)
        assert out["url"].endswith("/" + name) and name in out["reason"]


def test_lpips_loads_a_local_trunk_but_never_reports_an_unofficial_one(
        empty_torch_home: Path) -> None:
    """A trunk file under the official name whose sha256 does not match its name's prefix."""
    torch.manual_seed(3)
    empty_torch_home.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(),
               empty_torch_home / "alexnet-owt-7be5be79.pth")
    restored, target = _noisy_pairs(3, 64, 64, noise=60)
    out = lpips_distance(restored, target)
    with torch.no_grad():
        ref = lpips.LPIPS(net="alex", verbose=False)(_to_lpips_tensor(restored),
                                                     _to_lpips_tensor(target)).flatten()
    np.testing.assert_allclose(out["per_image"], ref.double().numpy(), rtol=1e-5)
    assert out["random_trunk"] is False and out["official_trunk"] is False
    assert out["reportable"] is False and "not the official one" in out["warning"]


# --------------------------------------------------------------------------- identity, report


def test_identity_similarity_is_cosine_per_image() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    out = identity_similarity(3 * a, b, "dlib-resnet")
    expected = [a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(5)]
    np.testing.assert_allclose(out["per_image"], expected, rtol=1e-12)
    assert out["mean"] == pytest.approx(np.mean(expected)) and out["recognizer"] == "dlib-resnet"
    assert identity_similarity(a, a, "x")["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero-norm"):
        identity_similarity(np.zeros((5, 8)), b, "x")
    with pytest.raises(ValueError, match="equal"):
        identity_similarity(a, b[:4], "x")


def test_restoration_report_is_json_ready_and_consistent(
        empty_torch_home: Path, random_lpips: lpips.LPIPS) -> None:
    rng = np.random.default_rng(1)
    restored, target = _noisy_pairs(4, 32, 32, noise=50)
    mask = np.zeros((4, 32, 32), bool)
    mask[:, 16:30, 6:26] = True
    emb_r, emb_t = rng.standard_normal((4, 16)), rng.standard_normal((4, 16))
    report = restoration_report(restored, target, mask, restored_emb=emb_r, target_emb=emb_t,
                                recognizer="dlib-resnet", fid_features=_MeanColour(),
                                lpips_model=random_lpips)
    json.dumps(report, allow_nan=False)
    assert report["n_images"] == 4
    assert report["psnr"]["mean"] == psnr(restored, target).mean
    assert report["ssim"]["mean"] == ssim(restored, target).mean
    assert report["psnr_masked_region"]["mean"] == psnr(restored, target, mask).mean
    by_hand = [10 * np.log10(255**2 / np.mean((r[m].astype(float) - t[m]) ** 2))
               for r, t, m in zip(restored, target, mask, strict=True)]
    assert report["psnr_masked_region"]["mean"] == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert report["ssim_masked_region"]["mean"] == ssim(restored, target, mask).mean
    assert report["identity_similarity"]["mean"] == pytest.approx(
        identity_similarity(emb_r, emb_t, "dlib-resnet")["mean"])
    assert report["fid"]["available"] and report["fid"]["reportable"] is False
    assert report["lpips"]["reportable"] is False and report["lpips_masked_region"]["masked"]
    assert set(report["conventions"]) == {"psnr", "ssim", "fid", "lpips"}
    assert "conventions" not in report["psnr"]
    bare = restoration_report(restored, target, None)  # no masks, no embeddings, no weights
    assert bare["psnr_masked_region"] is None and bare["identity_similarity"] is None
    assert bare["fid"]["available"] is False and bare["lpips"]["available"] is False
    with pytest.raises(ValueError, match="recognizer"):
        restoration_report(restored, target, None, restored_emb=emb_r, target_emb=emb_t)


def test_import_stays_light() -> None:
    """torch, lpips and pytorch-fid load only when FID or LPIPS is computed."""
    code = ("import sys, meerbench.metrics.restoration; "
            "print(sorted({'torch', 'lpips', 'pytorch_fid'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_largest_errors_do_not_overflow_the_integer_sums():
    """Black against white over a whole 112x112 face: 255^2 x 3 x 12,544 = 2,447,020,800 per
    image, beyond int32; PSNR is 0 dB exactly, whole and over a full mask."""
    black = np.zeros((2, 112, 112, 3), np.uint8)
    white = np.full_like(black, 255)
    full = np.ones((2, 112, 112), bool)
    assert psnr(black, white).to_dict()["per_image"] == [0.0, 0.0]
    assert psnr(black, white, full).to_dict()["per_image"] == [0.0, 0.0]
