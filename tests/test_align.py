"""Similarity estimation, template warping, the dlib aligner and dataset preparation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.data import align
from meerbench.data.align import (
    ARCFACE_112,
    DlibAligner,
    align_dataset,
    centre_crop,
    estimate_similarity,
    five_from_68,
    get_aligner,
    warp_to_template,
)
from meerbench.data.dataset import Dataset, Pair, Sample
from meerbench.data.images import read_rgb
from meerbench.errors import ModelError, UnknownNameError


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_estimate_similarity_recovers_a_known_similarity() -> None:
    src = np.random.default_rng(0).uniform(0, 200, size=(7, 2))
    truth = _similarity(0.7, 1.8, (-31.5, 12.25))
    np.testing.assert_allclose(estimate_similarity(src, _apply(truth, src)), truth, atol=1e-9)


def test_estimate_similarity_never_reflects() -> None:
    mirrored = ARCFACE_112 * np.array([-1.0, 1.0])
    m = estimate_similarity(ARCFACE_112, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_estimate_similarity_rejects_coincident_points() -> None:
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_112)


@pytest.mark.parametrize("size", [112, 224])
def test_warp_puts_the_landmarks_on_the_template(size: int) -> None:
    """Gaussian blobs drawn at transformed template points land on the template (sub-pixel)."""
    pts = _apply(_similarity(0.3, 2.7, (60.3, 20.7)), ARCFACE_112)
    yy, xx = np.mgrid[0:400, 0:400]
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 32.0) for x, y in pts)
    image = np.repeat((np.clip(blobs, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)
    out = warp_to_template(image, pts, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.array_equal(out, warp_to_template(image, pts, size))
    weight = out[..., 0].astype(np.float64)
    oy, ox = np.mgrid[0:size, 0:size]
    for tx, ty in ARCFACE_112 * (size / 112):
        near = weight * (((ox - tx) ** 2 + (oy - ty) ** 2) < (6 * size / 112) ** 2)
        centroid = ((near * ox).sum() / near.sum(), (near * oy).sum() / near.sum())
        np.testing.assert_allclose(centroid, (tx, ty), atol=0.05)


def test_centre_crop_keeps_the_central_square() -> None:
    image = np.zeros((100, 160, 3), np.uint8)
    image[:, 30:130] = 200  # the central 100x100 square
    out = centre_crop(image)
    assert out.shape == (112, 112, 3) and (out == 200).all()


def test_unknown_aligner_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="known aligners: dlib"):
        get_aligner("mtcnn")


def test_missing_dlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ModelError, match=r"pip install -e '\.\[dlib\]'"):
        DlibAligner()


# --------------------------------------------------------------------------- with dlib


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo; skips the test when dlib or scikit-image is missing."""
    pytest.importorskip("dlib", reason="the [dlib] extra (dlib-bin) is not installed")
    return pytest.importorskip("skimage.data", reason="scikit-image is not installed").astronaut()


def test_five_points_are_derived_from_the_68_point_model(astronaut: np.ndarray) -> None:
    """Eye centres agree with dlib's 5-point eye corners; the nose tip sits just above its
    nose-base point (which is why that model is not used for ArcFace's nose)."""
    pts68 = DlibAligner().landmarks68(astronaut)
    assert pts68 is not None and pts68.shape == (68, 2)
    import dlib

    sp5 = dlib.shape_predictor(str(align._model_file("shape_predictor_5_face_landmarks.dat")))
    box = dlib.rectangle(*pts68.min(0).astype(int), *pts68.max(0).astype(int))
    corners = np.array([(p.x, p.y) for p in sp5(astronaut, box).parts()], dtype=np.float64)
    five = five_from_68(pts68)
    np.testing.assert_allclose(five[0], corners[2:4].mean(0), atol=4)  # image-left eye
    np.testing.assert_allclose(five[1], corners[0:2].mean(0), atol=4)  # image-right eye
    assert 0 < corners[4][1] - five[2][1] < 15 and abs(corners[4][0] - five[2][0]) < 4


def test_dlib_aligns_the_astronaut(astronaut: np.ndarray) -> None:
    aligner = get_aligner("dlib")
    pts = aligner.landmarks5(astronaut)
    assert pts is not None
    m = estimate_similarity(pts, ARCFACE_112)
    assert np.abs(_apply(m, pts) - ARCFACE_112).max() < 6  # a frontal face fits the template
    crop = warp_to_template(astronaut, pts)
    for detector in ("hog", "cnn"):  # re-detected on the crop, the eyes sit on the template
        again = DlibAligner(detector=detector).landmarks5(crop)
        assert again is not None, detector
        assert np.linalg.norm(again[:2] - ARCFACE_112[:2], axis=1).max() < 5, detector


def test_no_face_falls_back_to_a_centre_crop(tmp_path: Path, astronaut: np.ndarray,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    grey = np.full((120, 90, 3), 128, np.uint8)
    assert get_aligner("dlib").landmarks5(grey) is None
    Image.fromarray(astronaut).save(tmp_path / "astro.jpg", quality=95)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    samples = [Sample("astro.jpg", tmp_path / "astro.jpg", "eileen"),
               Sample("grey.png", tmp_path / "grey.png", "nobody", masked=True, mask_type="x")]
    pairs = [Pair("astro.jpg", "grey.png", 0, 0)]
    data = Dataset("photos", tmp_path, samples, pairs, info={"format": "test"})
    prepared, info = align_dataset(data, progress=False)
    assert info == {"aligner": "dlib", "aligned": 1, "fallback_centre_crop": 1,
                    "failures": ["grey.png"]}
    assert [s.key for s in prepared.samples] == ["astro.jpg", "grey.png"]
    assert prepared.pairs == pairs and prepared.info["alignment"] == info
    crop = prepared.by_key("grey.png")
    assert crop.path.name == "grey.png" and crop.masked and crop.mask_type == "x"
    assert np.array_equal(read_rgb(crop.path), centre_crop(grey))
    assert read_rgb(prepared.by_key("astro.jpg").path).shape == (112, 112, 3)
    assert (crop.path.parents[0] / "record.json").is_file()
    assert not [p for p in crop.path.parents[1].iterdir() if p.name.endswith(".partial")]

    def no_aligning(name: str) -> None:
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(align, "get_aligner", no_aligning)
    again, info2 = align_dataset(data, progress=False)
    assert info2 == info and [s.path for s in again.samples] == [s.path for s in prepared.samples]
