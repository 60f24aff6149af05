"""Similarity estimation, template warping, the dlib aligner and dataset preparation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.data import align, detect
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
from meerbench.errors import ConfigError, DatasetError, MeerbenchError, ModelError, UnknownNameError


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


class CentreOnly:
    """An aligner plugin that finds no face (or kills its process): worker plumbing, no dlib."""

    name = "centre-only"

    def __init__(self, die: bool = False) -> None:
        self.die = die

    @property
    def settings(self) -> dict[str, bool]:
        return {"die": self.die}

    def locate(self, image: np.ndarray) -> None:
        if self.die:
            os._exit(3)
        return None


def _folder_of_images(root: Path, count: int) -> Dataset:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / f"{i}.png")
        samples.append(Sample(f"{i}.png", root / f"{i}.png", f"id{i % 3}"))
    return Dataset("noise", root, samples, [], info={})


@pytest.fixture()
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes even for a handful of images."""
    monkeypatch.setattr(align, "MIN_PER_WORKER", align.CHUNK)


def test_workers_write_what_one_process_writes_and_pass_errors_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pools: None) -> None:
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    (tmp_path / "a").mkdir()
    data = _folder_of_images(tmp_path / "a", 3 * align.CHUNK)
    two, info = align_dataset(data, CentreOnly(), workers=2, progress=False)
    assert info["fallback_centre_crop"] == 3 * align.CHUNK and info["found_by"] == {}
    assert info["failures"] == [s.key for s in data.samples]  # in the dataset's order
    for sample in two.samples:
        assert np.array_equal(read_rgb(sample.path),
                              centre_crop(read_rgb(data.root / sample.key)))
    (tmp_path / "a" / "5.png").write_bytes(b"not a png")
    changed = Dataset("noise", data.root, data.samples, [], info={})  # hashed afresh
    with pytest.raises(DatasetError, match="5.png"):
        align_dataset(changed, CentreOnly(), workers=2, progress=False)


def test_few_images_are_aligned_in_this_process(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Below ``MIN_PER_WORKER`` images a worker, starting workers costs more than it saves."""
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(align, "ProcessPoolExecutor", no_pool)
    data = _folder_of_images(tmp_path, 2 * align.MIN_PER_WORKER - 1)
    _, info = align_dataset(data, CentreOnly(), workers=4, progress=False)
    assert info["fallback_centre_crop"] == 2 * align.MIN_PER_WORKER - 1
    monkeypatch.setattr(align, "MIN_PER_WORKER", align.CHUNK)
    with pytest.raises(AssertionError, match="worker pool"):
        align_dataset(_folder_of_images(tmp_path, 2 * align.CHUNK), CentreOnly(), workers=4,
                      progress=False)


@pytest.mark.parametrize(("load", "cores", "expected"), [
    (0.2, 2, 2), (1.0, 2, 2), (2.1, 2, 1), (4.5, 2, 1), (3.0, 16, 14), (40.0, 16, 1)])
def test_default_workers_are_the_idle_cores(monkeypatch: pytest.MonkeyPatch, load: float,
                                            cores: int, expected: int) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert align.default_workers() == expected


def test_dead_workers_are_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              small_pools: None) -> None:
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    data = _folder_of_images(tmp_path, 2 * align.CHUNK)
    with pytest.raises(MeerbenchError, match="stopped unexpectedly.*workers=1"):
        align_dataset(data, CentreOnly(die=True), workers=2, progress=False)


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

    sp5 = dlib.shape_predictor(str(detect.model_file("shape_predictor_5_face_landmarks.dat")))
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
                    "found_by": {"hog": 1}, "failures": ["grey.png"],
                    "settings": {"detector": "auto", "upsample": None, "cnn_side": 224}}
    assert [s.key for s in prepared.samples] == ["astro.jpg", "grey.png"]
    assert prepared.pairs == pairs and prepared.info["alignment"] == info
    crop = prepared.by_key("grey.png")
    assert crop.path.name == "grey.png" and crop.masked and crop.mask_type == "x"
    assert np.array_equal(read_rgb(crop.path), centre_crop(grey))
    assert read_rgb(prepared.by_key("astro.jpg").path).shape == (112, 112, 3)
    assert (crop.path.parents[0] / "record.json").is_file()
    marks = json.loads((crop.path.parent / align.LANDMARKS_FILE).read_text())
    assert marks["grey.png"] is None and marks["astro.jpg"]["found_by"] == "hog"
    np.testing.assert_allclose(marks["astro.jpg"]["points"], get_aligner("dlib").landmarks5(
        read_rgb(tmp_path / "astro.jpg")))
    assert not [p for p in crop.path.parents[1].iterdir() if p.name.endswith(".partial")]

    def no_aligning(self: DlibAligner, image: np.ndarray) -> None:
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(DlibAligner, "locate", no_aligning)
    again, info2 = align_dataset(data, progress=False)
    assert info2 == info and [s.path for s in again.samples] == [s.path for s in prepared.samples]


# --------------------------------------------------------------------------- the cascade

LFW_FIXTURE = Path(__file__).parent / "fixtures" / "lfw" / "lfw"


@pytest.fixture(scope="module")
def lfw_faces() -> Dataset:
    """The LFW fixture's 29 drawn 112-px faces (HOG at upsample 1 misses some of them)."""
    pytest.importorskip("dlib", reason="the [dlib] extra (dlib-bin) is not installed")
    paths = sorted(LFW_FIXTURE.rglob("*.jpg"))
    samples = [Sample(p.name, p, p.parent.name) for p in paths]
    return Dataset("lfw-fixture", LFW_FIXTURE, samples, [], info={"format": "test"})


@pytest.mark.parametrize(("shape", "expected"), [
    ((112, 112, 3), [("hog", "hog", 1, 1.0), ("hog_coarse", "hog", 0, 1.0),
                     ("cnn", "cnn", 1, 1.0)]),  # 224 px is what upsample 1 gives: as before
    ((250, 250, 3), [("hog", "hog", 1, 1.0), ("hog_coarse", "hog", 0, 1.0),
                     ("cnn", "cnn", 0, 224 / 250)]),
    ((400, 300, 3), [("hog", "hog", 0, 1.0), ("cnn", "cnn", 0, 224 / 300)]),
])
def test_the_cascade_tries_cheap_passes_first(lfw_faces: Dataset, shape: tuple[int, ...],
                                              expected: list[tuple]) -> None:
    got = [(p.name, p.kind, p.upsample, p.scale) for p in DlibAligner().passes(shape)]
    assert got == expected
    old = DlibAligner(detector="exhaustive").passes(shape)
    assert [(p.kind, p.upsample, p.scale) for p in old] == [(k, expected[0][2], 1.0)
                                                            for k in ("hog", "cnn")]


def test_bad_settings_are_config_errors(lfw_faces: Dataset) -> None:
    with pytest.raises(ConfigError, match="detector must be one of"):
        DlibAligner(detector="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cnn_side must be"):
        DlibAligner(cnn_side=0)
    with pytest.raises(ConfigError, match="workers must be"):
        align_dataset(lfw_faces, workers=0, progress=False)


def test_cascade_keeps_hog_crops_and_counts_each_detector(
        lfw_faces: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        small_pools: None) -> None:
    """Where HOG finds the face the crop is byte for byte the exhaustive strategy's (the one
    before the cascade); the other faces are counted under the pass that found them; two worker
    processes write the same bytes as one; the settings are part of the cache key."""
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path))
    new, info = align_dataset(lfw_faces, workers=2, progress=False)
    one, info1 = align_dataset(lfw_faces, DlibAligner(cnn_side=225), workers=1, progress=False)
    old, old_info = align_dataset(lfw_faces, DlibAligner(detector="exhaustive"), workers=1,
                                  progress=False)
    assert len({new.root, one.root, old.root}) == 3  # three artefacts: the key has the settings
    assert info1["found_by"] == info["found_by"] and info1["failures"] == info["failures"]
    assert [read_rgb(s.path).tobytes() for s in new.samples] == [
        read_rgb(s.path).tobytes() for s in one.samples]
    hog_found = {s.key for s in lfw_faces.samples
                 if DlibAligner(detector="hog").landmarks5(read_rgb(s.path)) is not None}
    assert info["found_by"]["hog"] == old_info["found_by"]["hog"] == len(hog_found) < 29
    assert set(info["found_by"]) == {"hog", "hog_coarse", "cnn"}  # each pass found some
    assert set(old_info["found_by"]) == {"hog", "cnn"}
    assert info["fallback_centre_crop"] <= old_info["fallback_centre_crop"]
    for a, b in zip(new.samples, old.samples, strict=True):
        if a.key in hog_found:
            assert a.path.read_bytes() == b.path.read_bytes(), a.key
    assert any(a.path.read_bytes() != b.path.read_bytes()  # hog_coarse's faces are new crops
               for a, b in zip(new.samples, old.samples, strict=True))


def test_cascade_landmarks_are_as_good_as_before_where_hog_misses() -> None:
    """On drawn faces HOG misses, the 5 points the cascade finds are as close to the drawn
    (true) landmarks as those of the exhaustive strategy, measured as the mean point error over
    the inter-ocular distance."""
    pytest.importorskip("dlib", reason="the [dlib] extra (dlib-bin) is not installed")
    from meerbench.data.render.face import render_face

    cascade, old, hog = DlibAligner(), DlibAligner(detector="exhaustive"), DlibAligner("hog")
    errors: dict[str, list[float]] = {"new": [], "old": []}
    index = 0
    while len(errors["old"]) < 6:
        face = render_face(7, 5000 + index // 4, index % 4 + 1, masked=index % 3 == 0)
        index += 1
        if hog.landmarks5(face.image) is not None:
            continue
        truth = five_from_68(face.landmarks.astype(np.float64))
        iod = np.linalg.norm(truth[0] - truth[1])
        found = {"new": cascade.landmarks5(face.image), "old": old.landmarks5(face.image)}
        if found["old"] is None or found["new"] is None:
            continue
        for name, pts in found.items():
            errors[name].append(float(np.linalg.norm(pts - truth, axis=1).mean() / iod))
    assert np.mean(errors["new"]) <= np.mean(errors["old"]) + 0.02, errors
    assert max(errors["new"]) < 0.3, errors
