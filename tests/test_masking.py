"""Reproducible synthetic masking: folders, datasets and real faces."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from meerbench.data.align import ARCFACE_112
from meerbench.data.dataset import Dataset, Pair, Sample
from meerbench.data.images import read_mask, read_rgb
from meerbench.data.masking import (
    DATASET_COLUMNS,
    FOLDER_COLUMNS,
    MANIFEST,
    MaskingSpec,
    image_seed,
    mask_dataset,
    mask_folder,
    mask_image,
)
from meerbench.data.render.occluders import (
    SEEN_FAMILIES,
    UNSEEN_FAMILIES,
    OccluderSpec,
    render_occluder,
)
from meerbench.errors import DatasetError, MeerbenchError

FIXTURES = Path(__file__).parent / "fixtures" / "lfw" / "lfw"
ALL_FAMILIES = SEEN_FAMILIES + UNSEEN_FAMILIES


@pytest.fixture()
def faces(tmp_path: Path) -> Path:
    """A small folder of faces: nested folders, JPEG, PNG and grey BMP inputs, and a non-image."""
    src = tmp_path / "faces"
    for person in ("Abel_Pacheco", "Bernard_Law"):
        shutil.copytree(FIXTURES / person, src / person)
    (src / "Bernard_Law" / "Bernard_Law_0004.jpg").unlink()
    Image.open(FIXTURES / "Carl_Reiner" / "Carl_Reiner_0001.jpg").save(src / "carl.png")
    Image.open(FIXTURES / "Carl_Reiner" / "Carl_Reiner_0002.jpg").convert("L").save(
        src / "carl2.bmp")
    (src / "notes.txt").write_text("not an image")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_mask_folder_is_reproducible_and_seed_dependent(faces: Path, tmp_path: Path) -> None:
    spec = MaskingSpec(seed=7, families=ALL_FAMILIES)
    first = _files(mask_folder(faces, tmp_path / "a", spec, progress=False).parent)
    second = _files(mask_folder(faces, tmp_path / "b", spec, progress=False).parent)
    other = _files(mask_folder(faces, tmp_path / "c", MaskingSpec(8, ALL_FAMILIES),
                               progress=False).parent)
    assert first == second
    assert first.keys() == other.keys()
    assert first[MANIFEST] != other[MANIFEST]
    assert sum(first[k] != other[k] for k in first if not k.startswith("_maps/")) >= 5
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_mask_folder_layout_and_manifest_regenerate_the_images(faces: Path, tmp_path: Path
                                                               ) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an empty output folder is accepted
    manifest = mask_folder(faces, out, MaskingSpec(3), progress=False)
    assert manifest == out / MANIFEST
    rows = _rows(manifest)
    with manifest.open() as handle:
        assert handle.readline().strip().split(",") == list(FOLDER_COLUMNS)
    assert [r["image"] for r in rows] == [
        "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0002.jpg",
        "Abel_Pacheco/Abel_Pacheco_0003.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg",
        "Bernard_Law/Bernard_Law_0001.jpg", "Bernard_Law/Bernard_Law_0002.jpg",
        "Bernard_Law/Bernard_Law_0003.jpg", "carl.png", "carl2.bmp"]
    for row in rows:
        original = read_rgb(faces / row["image"])
        masked = read_rgb(out / row["masked_path"])
        occupied = read_mask(out / row["mask_map"])
        assert row["masked_path"] == str(Path(row["image"]).with_suffix(".png"))
        assert row["mask_map"] == f"_maps/{row['masked_path']}"
        assert int(row["seed"]) == image_seed(3, row["image"])
        assert row["family"] in SEEN_FAMILIES and row["landmarks_source"] in ("dlib68", "template")
        occluder = OccluderSpec.from_dict(json.loads(row["occluder_json"]))
        assert (row["family"], row["colour"], row["pattern"], row["texture_seed"]) == (
            occluder.family, occluder.to_dict()["colour"], occluder.pattern,
            str(occluder.texture_seed))
        assert 0.05 < occupied.mean() < 0.8
        assert not (masked != original).any(axis=2)[~occupied].any()
        # another lab regenerates the image from the manifest alone
        again, again_map = render_occluder(original, np.array(json.loads(row["landmarks"])),
                                           occluder)
        assert np.array_equal(again, masked) and np.array_equal(again_map, occupied)


def test_mask_folder_corrupt_image_leaves_nothing(faces: Path, tmp_path: Path) -> None:
    (faces / "Bernard_Law" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="broken.jpg"):
        mask_folder(faces, out, MaskingSpec(1, landmarks="template"), progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_mask_folder_refuses_bad_folders(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MeerbenchError, match="not empty"):
        mask_folder(faces, out, MaskingSpec(1), progress=False)
    with pytest.raises(DatasetError, match="No images"):
        mask_folder(out, tmp_path / "z", MaskingSpec(1), progress=False)
    with pytest.raises(DatasetError, match="not a folder"):
        mask_folder(tmp_path / "missing", tmp_path / "z", MaskingSpec(1), progress=False)


def test_spec_validation() -> None:
    with pytest.raises(MeerbenchError, match="families"):
        MaskingSpec(1, ("balaclava",))
    with pytest.raises(MeerbenchError, match="landmarks"):
        MaskingSpec(1, landmarks="mtcnn")
    assert MaskingSpec(5, ("hand",)).to_dict() == {"seed": 5, "families": ["hand"],
                                                   "landmarks": "auto"}


def test_mask_image_depends_only_on_seed_and_key() -> None:
    image = read_rgb(FIXTURES / "Carl_Reiner" / "Carl_Reiner_0001.jpg")
    spec = MaskingSpec(11, ALL_FAMILIES, landmarks="template")
    a = mask_image(image, "k1", spec)
    assert a.landmarks_source == "template"
    np.testing.assert_allclose(a.landmarks, ARCFACE_112, atol=5e-4)
    b = mask_image(image, "k1", spec)
    assert a.occluder == b.occluder and np.array_equal(a.image, b.image)
    assert image_seed(11, "k1") == a.seed != image_seed(11, "k2") != image_seed(12, "k1")
    given = mask_image(image, "k1", spec, landmarks=ARCFACE_112)
    assert given.landmarks_source == "given" and given.occluder == a.occluder


def _dataset(keys: list[str]) -> Dataset:
    samples = [Sample(k, FIXTURES / k, k.split("/")[0], split="test") for k in keys]
    samples.append(Sample("Carl_Reiner/Carl_Reiner_0002.jpg",
                          FIXTURES / "Carl_Reiner" / "Carl_Reiner_0002.jpg", "Carl_Reiner",
                          masked=True, mask_type="real"))
    pairs = [Pair(keys[0], "Carl_Reiner/Carl_Reiner_0002.jpg", 0, 0)]
    return Dataset("lfw-mini", FIXTURES, samples, pairs, info={"format": "test"})


def test_mask_dataset_adds_masked_twins() -> None:
    keys = ["Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0002.jpg",
            "Bernard_Law/Bernard_Law_0001.jpg"]
    data = _dataset(keys)
    spec = MaskingSpec(21, ALL_FAMILIES)
    extended, info = mask_dataset(data, spec, progress=False)
    twins = [s for s in extended.samples if s.key.startswith("masked/")]
    assert [s.key for s in twins] == [f"masked/{k[:-4]}.png" for k in keys]
    assert len(extended.samples) == 7 and extended.pairs == data.pairs
    for twin in twins:
        original = data.by_key(twin.key[len("masked/"):-4] + ".jpg")
        assert twin.masked and twin.identity == original.identity and twin.split == "test"
        assert twin.twin == original.path and twin.mask_type in ALL_FAMILIES
        assert read_mask(twin.mask_map).any() and read_rgb(twin.path).shape == (112, 112, 3)
    manifest = Path(info["manifest"])
    assert info["masking"] == spec.to_dict() and info["masked_images"] == 3
    rows = _rows(manifest)
    assert list(rows[0]) == list(DATASET_COLUMNS) and [r["key"] for r in rows] == keys
    assert extended.info["masking"] == info

    again, info2 = mask_dataset(data, spec, progress=False)  # cache hit
    assert info2 == info and [s.key for s in again.samples] == [s.key for s in extended.samples]
    # the same key gets the same occluder in another dataset, whatever its other samples
    _, sub = mask_dataset(_dataset(keys[1:]), spec, progress=False)
    assert Path(sub["manifest"]) != manifest
    assert _rows(Path(sub["manifest"])) == rows[1:]
    with pytest.raises(DatasetError, match="masked before"):
        mask_dataset(extended, spec, progress=False)


# --------------------------------------------------------------------------- real face


def _polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1, outline=1)
    return np.asarray(canvas).astype(bool)


def test_astronaut_mask_covers_nose_and_mouth_not_eyes() -> None:
    pytest.importorskip("dlib", reason="the [dlib] extra (dlib-bin) is not installed")
    image = pytest.importorskip("skimage.data", reason="scikit-image is missing").astronaut()
    first = mask_image(image, "astronaut.png", MaskingSpec(0, SEEN_FAMILIES, landmarks="dlib68"))
    assert first.landmarks_source == "dlib68" and first.landmarks.shape == (68, 2)
    pts = first.landmarks
    mouth = _polygon(pts[48:60], image.shape[:2])
    nose = _polygon(pts[[30, 35, 34, 33, 32, 31]], image.shape[:2])
    eyes = _polygon(pts[36:42], image.shape[:2]) | _polygon(pts[42:48], image.shape[:2])
    inside = np.round(pts).astype(int)
    for key in ["astronaut.png"] + [f"astronaut-{k}.png" for k in range(7)]:
        result = mask_image(image, key, MaskingSpec(0, SEEN_FAMILIES), landmarks=pts)
        covered = result.mask_map
        assert covered[inside[30:36, 1], inside[30:36, 0]].all(), result.occluder
        assert covered[inside[48:68, 1], inside[48:68, 0]].all(), result.occluder
        assert covered[mouth].all() and covered[nose].all(), result.occluder
        assert not covered[eyes].any(), result.occluder
