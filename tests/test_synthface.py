"""SynthFace: pinned bytes, exact twins, landmarks, identity signal and split writing."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from meerbench.data import synthface
from meerbench.data.render import face, occluders
from meerbench.data.render.face import render_face
from meerbench.data.synthface import SplitSpec, generate_split
from meerbench.errors import MeerbenchError

# sha256 of image | unmasked | mask map | landmarks bytes, computed once with this code: a change
# means SynthFace no longer renders the same dataset (bump the protocol version if intended).
PINNED = {
    (2311, 0, 0, False, "seen"):
        "7b0705fe9035177f12b8a1fc2ec20bb69a153b54d45b66b43ad7c54cfcbf0cc2",
    (2311, 1, 3, True, "seen"):
        "a7efa6851746717e57e93b006d049919fff310686429781c7c230de060e729fb",
    (7, 123456, 12, True, "seen"):
        "361e57cb56b186d53d0fdec7643dacf3446bac38b261a5f3d7447ea5b0ab56cd",
    (7, 42, 5, True, "unseen"):
        "a7cc67236e220454e1c11c882456ab8c8decde65007a0d1e3765738a3c537894",
}


def digest(r: face.FaceRender) -> str:
    h = hashlib.sha256()
    h.update(r.image.tobytes())
    h.update(r.unmasked.tobytes())
    if r.mask_map is not None:
        h.update(r.mask_map.tobytes())
    h.update(r.landmarks.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("key", sorted(PINNED))
def test_renders_are_byte_identical_to_the_pinned_hashes(key: tuple) -> None:
    seed, identity, index, masked, which = key
    families = occluders.SEEN_FAMILIES if which == "seen" else occluders.UNSEEN_FAMILIES
    r = render_face(seed, identity, index, masked=masked, families=families)
    again = render_face(seed, identity, index, masked=masked, families=families)
    assert digest(r) == digest(again)
    assert digest(r) == PINNED[key], (
        f"SynthFace bytes changed for {key} (Pillow {PIL.__version__}, NumPy {np.__version__}); "
        "the pins were made with Pillow 13.0 / NumPy 2.4"
    )


def test_render_contract() -> None:
    r = render_face(3, 5, 0, masked=False)
    assert r.image.shape == (112, 112, 3) and r.image.dtype == np.uint8
    assert r.mask_map is None and r.occluder is None
    assert np.array_equal(r.image, r.unmasked)
    assert r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float32
    m = render_face(3, 5, 1, masked=True)
    assert m.mask_map is not None and m.mask_map.dtype == bool
    assert m.occluder is not None and m.occluder.family in occluders.SEEN_FAMILIES
    with pytest.raises(ValueError, match=">= 0"):
        render_face(3, -1, 0, masked=False)


def test_twin_is_exact_outside_the_occluder_and_differs_inside() -> None:
    for index in range(12):
        r = render_face(9, index % 4, index, masked=True, families=occluders.FAMILIES)
        assert r.mask_map is not None
        outside = ~r.mask_map
        assert np.array_equal(r.image[outside], r.unmasked[outside])
        inside = (r.image[r.mask_map].astype(int) - r.unmasked[r.mask_map]) != 0
        assert inside.any(axis=-1).mean() > 0.8
        # the twin is the image a masked=False render gives
        assert np.array_equal(render_face(9, index % 4, index, masked=False).image, r.unmasked)


@pytest.mark.parametrize("blur", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("jpeg", [0, 55, 90])
def test_finishing_a_crop_equals_finishing_the_whole_frame(blur: float, jpeg: int) -> None:
    """The masked image finishes only a crop around the map (blur reach, JPEG macroblocks and
    their neighbours); it must equal the whole frame finished and composited, bit for bit, also
    when the map touches the border or is a single pixel."""
    rng = np.random.default_rng([int(blur * 10), jpeg])
    base = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    occluded = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    light = rng.uniform(0.5, 1.2, size=(112, 112, 3)).astype(np.float32)
    noise = rng.normal(0, 4, size=(112, 112, 3)).astype(np.float32)
    nz = dataclasses.replace(face._nuisance(np.random.default_rng(1)), blur=blur, jpeg=jpeg)
    unmasked = face._develop(face._expose(base * light, nz, noise), nz)
    whole = face._develop(face._expose(occluded * light, nz, noise), nz)
    boxes = [(40, 20, 100, 90), (0, 0, 30, 112), (70, 90, 112, 112), (57, 33, 58, 34)]
    for y0, x0, y1, x1 in boxes:
        mask_map = np.zeros((112, 112), dtype=bool)
        mask_map[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
        mask_map[y0, x0] = True
        got = face._finish_occluded(occluded, light, noise, mask_map, unmasked, nz)
        assert np.array_equal(got, np.where(mask_map[..., None], whole, unmasked)), (y0, x0)


def test_landmarks_lie_in_the_image_near_the_arcface_template() -> None:
    errors = []
    for index in range(20):
        lm = render_face(4, index, index, masked=False).landmarks
        features = lm[17:]  # brows, nose, eyes, mouth; the chin may leave the frame (real crops)
        assert (features > 0).all() and (features < 112).all()
        assert (lm > -10).all() and (lm < 122).all()
        eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
        errors.append(np.abs(eyes - face.TEMPLATE[:2]).max())
    assert max(errors) < 14 and np.mean(errors) < 7  # pose jitter, not misalignment
    assert np.mean(errors) > 1  # ... but there is jitter


def test_same_identity_is_closer_than_different_identities() -> None:
    def grey(identity: int, index: int) -> np.ndarray:
        return render_face(6, identity, index, masked=False).image[30:100, 28:84].mean(-1) / 255

    faces = {i: [grey(i, k) for k in range(4)] for i in range(6)}
    same = [np.abs(a - b).mean() for f in faces.values()
            for i, a in enumerate(f) for b in f[i + 1:]]
    diff = [np.abs(faces[i][k] - faces[j][k]).mean()
            for i in faces for j in faces if i < j for k in range(4)]
    assert np.mean(same) < np.mean(diff)
    # but images of one identity still differ visibly (pose, light, background)
    assert min(same) > 0.02


def test_identity_parameters() -> None:
    names = [f.name for f in dataclasses.fields(face.IdentityParams)]
    assert len(names) >= 20
    for lower in ("mouth_width", "lower_lip", "jaw_width", "chin_point", "facial_hair", "marks"):
        assert lower in names
    a, b = face.identity_params(1, 2), face.identity_params(1, 2)
    assert a == b and a != face.identity_params(1, 3) and a != face.identity_params(2, 2)
    params = [face.identity_params(0, i) for i in range(200)]
    assert {p.hair_style for p in params} == set(face.HAIR_STYLES)
    assert {p.facial_hair for p in params} == set(face.FACIAL_HAIR)
    assert all(p.mouth_y + p.lower_lip + 10 <= p.face_length + 1e-9 for p in params)


TINY = SplitSpec(name="tiny", seed=3, first_identity=10, n_identities=3, n_unmasked=2,
                 n_masked=2, families=occluders.SEEN_FAMILIES)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_generate_split_writes_a_complete_manifest(tmp_path: Path) -> None:
    out = generate_split(TINY, progress=False, root=tmp_path).dir
    assert sorted(p.name for p in (tmp_path / "synthface").iterdir()) == [out.name]  # no partial
    with open(out / "manifest.csv", newline="") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "path,identity,masked,mask_type,split,twin,mask_map,index"
    rows = list(csv.DictReader(lines))
    assert len(rows) == 12
    assert [(r["identity"], int(r["index"])) for r in rows] == [
        (f"id{i:06d}", k) for i in (10, 11, 12) for k in range(4)]
    for row in rows:
        masked = row["masked"] == "1"
        assert row["split"] == "tiny"
        assert (row["mask_type"] in occluders.SEEN_FAMILIES) == masked
        assert bool(row["twin"]) == masked and bool(row["mask_map"]) == masked
        image = np.asarray(Image.open(out / row["path"]))
        assert image.shape == (112, 112, 3)
        if masked:
            twin = np.asarray(Image.open(out / row["twin"]))
            occ = np.asarray(Image.open(out / row["mask_map"])) > 0
            assert occ.any() and np.array_equal(image[~occ], twin[~occ])
    r = render_face(3, 11, 3, masked=True)
    assert np.array_equal(np.asarray(Image.open(out / rows[7]["path"])), r.image)
    landmarks = np.load(out / "landmarks.npy")
    assert landmarks.shape == (12, 68, 2) and landmarks.dtype == np.float32
    assert np.array_equal(landmarks[7], r.landmarks)
    assert json.loads((out / "spec.json").read_text())["families"] == list(TINY.families)
    with open(out / "occluders.csv", newline="") as fh:
        logged = list(csv.DictReader(fh))
    assert [o["path"] for o in logged] == [r["path"] for r in rows if r["masked"] == "1"]
    spec = occluders.OccluderSpec.from_dict({k: v for k, v in logged[3].items() if k != "path"})
    assert spec == r.occluder  # the log regenerates the occluder exactly


def test_generate_split_is_a_no_op_when_done(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = generate_split(TINY, progress=False, root=tmp_path).dir
    before = files_of(out)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered again")

    monkeypatch.setattr(synthface, "render_face", boom)
    assert generate_split(TINY, progress=False, root=tmp_path).dir == out
    assert files_of(out) == before


def test_generate_split_interrupted_leaves_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthface.render_face

    def flaky(seed: int, identity: int, index: int, **kwargs: object) -> object:
        if identity == 12:
            raise KeyboardInterrupt
        return real(seed, identity, index, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synthface, "render_face", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_split(TINY, progress=False, root=tmp_path)
    assert list((tmp_path / "synthface").iterdir()) == []


def test_workers_give_identical_files(tmp_path: Path) -> None:
    one = generate_split(TINY, progress=False, workers=1, root=tmp_path / "one").dir
    two = generate_split(TINY, progress=False, workers=2, root=tmp_path / "two").dir
    assert files_of(one) == files_of(two)


def test_default_workers_use_every_core_for_large_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both cores of a 2-core machine for the synthmask splits; one process for small ones."""
    monkeypatch.setattr(synthface.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    v2 = dataclasses.replace(TINY, n_identities=1000, n_unmasked=5, n_masked=5)
    assert synthface.default_workers(v2) == 2
    assert synthface.default_workers(dataclasses.replace(v2, n_identities=150)) == 1
    assert synthface.default_workers(TINY) == 1
    monkeypatch.setattr(synthface.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert synthface.default_workers(v2) == 10  # one per 1,000 images


def test_split_spec_validation() -> None:
    with pytest.raises(ValueError, match="families"):
        dataclasses.replace(TINY, families=("surgical", "visor"))
    with pytest.raises(ValueError, match="n_identities"):
        dataclasses.replace(TINY, n_identities=0)
    with pytest.raises(ValueError, match="at least one image"):
        dataclasses.replace(TINY, n_unmasked=0, n_masked=0)
    with pytest.raises(MeerbenchError, match="at most 1,000,000"):
        dataclasses.replace(TINY, n_identities=10**12)


@pytest.mark.parametrize("progress", [False, True])
def test_generation_progress_bar_follows_the_flag(capsys, progress: bool) -> None:
    from meerbench.data.formats.synthface import SynthFaceFormat

    options = {"split": f"bar-{progress}", "seed": 9, "first_identity": 700_000,
               "n_identities": 2, "n_unmasked": 1, "n_masked": 1}
    dataset = SynthFaceFormat().read(None, options, "synthface-bar", progress=progress)
    assert len(dataset.samples) == 4
    assert ("SynthFace bar" in capsys.readouterr().err) is progress


def test_the_content_hash_of_a_split_comes_from_its_checked_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a SynthFace split checks every file against its store record; the content hash
    then takes the images', twins' and maps' sha256 from that record and reads no file again."""
    from meerbench.data import dataset as dataset_module
    from meerbench.data.formats import DatasetSpec, open_dataset

    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path))
    spec = DatasetSpec("synthface", "tiny", {
        "split": "tiny", "seed": 3, "first_identity": 10, "n_identities": 3, "n_unmasked": 2,
        "n_masked": 2, "include_twins": True})
    opened = open_dataset(spec, progress=False)
    expected = opened.content_hash()

    def no_read(path: Path, key: str) -> str:
        raise AssertionError(f"read {path} again")

    monkeypatch.setattr(dataset_module, "_hash_file", no_read)
    again = open_dataset(spec, progress=False)
    assert again.content_hash() == expected
    # the split has twins and maps: their hashes, too, came from the record
    assert sum(s.twin is not None for s in again.samples) == 6


def test_known_hashes_given_by_path_are_found_by_path_text(tmp_path: Path) -> None:
    """A reader may key ``known_sha256`` by Path or by text: both are found, no file read."""
    from meerbench.data.dataset import Dataset, Sample

    image = tmp_path / "a.png"
    image.write_bytes(b"not read")
    twin = tmp_path / "a-twin.png"
    samples = [Sample(key="a.png", path=image, identity="x", twin=twin, sha256="1" * 64)]
    by_path = Dataset("d", tmp_path, list(samples), known_sha256={twin: "2" * 64})
    by_text = Dataset("d", tmp_path, list(samples), known_sha256={str(twin): "2" * 64})
    assert by_path.content_hash() == by_text.content_hash()  # twin.png does not exist: not read
