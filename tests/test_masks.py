"""Occluder renderer: coverage, determinism, spec round trips and input errors."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from meerbench.data.render import occluders

# ArcFace 5-point template (112 x 112): eyes, nose tip, mouth corners
FIVE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                 [41.5493, 92.3655], [70.7299, 92.2041]])
MOUTH_AND_NOSE = [30, 48, 51, 54, 57, 62, 66]
EYES = list(range(36, 48))


def face(size: int, angle: float = 0.0, five: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A flat skin-coloured image and landmarks scaled to ``size`` and turned by ``angle``."""
    pts = FIVE if five else occluders.expand_landmarks(FIVE)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    centred = pts - 56.0
    turned = np.stack([centred[:, 0] * c - centred[:, 1] * s,
                       centred[:, 0] * s + centred[:, 1] * c], axis=1)
    k = size / 112 * 0.9
    image = np.full((size, size, 3), (205, 160, 130), dtype=np.uint8)
    return image, turned * k + size / 2


def covered(occluder_map: np.ndarray, point: np.ndarray) -> bool:
    x, y = np.rint(point).astype(int)
    return bool(occluder_map[y, x])


def spec_of(family: str, seed: int = 0) -> occluders.OccluderSpec:
    return occluders.sample_occluder(np.random.default_rng(seed), [family])


@pytest.mark.parametrize("family", occluders.FAMILIES)
@pytest.mark.parametrize("size", [112, 250])
@pytest.mark.parametrize("five", [False, True], ids=["68pt", "5pt"])
def test_every_family_covers_mouth_and_nose_not_eyes(family: str, size: int, five: bool) -> None:
    for seed, angle in ((0, 0.0), (1, 9.0), (2, -9.0)):
        image, pts = face(size, angle, five)
        out, occ = occluders.render_occluder(image, pts, spec_of(family, seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert occ.shape == (size, size) and occ.dtype == bool
        full = occluders.expand_landmarks(pts)
        assert all(covered(occ, full[i]) for i in MOUTH_AND_NOSE), (family, seed)
        assert not any(covered(occ, full[i]) for i in EYES), (family, seed)
        # the image changes only under the map, and (almost) everywhere under it
        assert np.array_equal(out[~occ], image[~occ])
        assert (out[occ] != image[occ]).any(axis=-1).mean() > 0.9


def test_occluder_polygons_match_the_map() -> None:
    image, pts = face(250)
    for family in occluders.FAMILIES:
        spec = spec_of(family, 3)
        _, occ = occluders.render_occluder(image, pts, spec)
        drawn = Image.new("L", (250, 250), 0)
        for poly in occluders.occluder_polygons(pts, spec, (250, 250)):
            assert poly.ndim == 2 and poly.shape[1] == 2
            ImageDraw.Draw(drawn).polygon(poly.ravel().tolist(), fill=1)
        filled = np.asarray(drawn).astype(bool)
        assert (filled & ~occ).sum() <= 0.01 * filled.sum(), family
        assert filled.sum() >= 0.85 * occ.sum(), family  # straps, fringe and edges are extra


def test_families_look_different() -> None:
    image, pts = face(112)
    renders = {f: occluders.render_occluder(image, pts, spec_of(f, 4)) for f in occluders.FAMILIES}

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / (a | b).sum())

    for unseen in occluders.UNSEEN_FAMILIES:
        for seen in occluders.SEEN_FAMILIES:
            assert iou(renders[unseen][1], renders[seen][1]) < 0.85, (unseen, seen)
    # scarves and gaiters reach below the jaw to the image bottom; seen masks stop under the chin
    for family in ("scarf", "gaiter"):
        assert renders[family][1][-1].sum() > 20
    below_chin = int(occluders.expand_landmarks(pts)[8][1]) + 8
    for family in occluders.SEEN_FAMILIES:
        assert not renders[family][1][below_chin:].any(), family


def test_deterministic_and_seed_dependent() -> None:
    image, pts = face(250, 5.0)
    for family in occluders.FAMILIES:
        spec = spec_of(family, 7)
        a, map_a = occluders.render_occluder(image, pts, spec)
        b, map_b = occluders.render_occluder(image.copy(), pts.copy(), spec)
        assert a.tobytes() == b.tobytes() and map_a.tobytes() == map_b.tobytes()
        c, map_c = occluders.render_occluder(image, pts, spec, rng_seed=spec.texture_seed + 1)
        assert np.array_equal(map_a, map_c)  # the seed moves texture, not shape
        assert a.tobytes() != c.tobytes(), family


def test_sampling_covers_families_and_is_reproducible() -> None:
    first = [occluders.sample_occluder(np.random.default_rng(11), occluders.FAMILIES)
             for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(12)
    seen = {occluders.sample_occluder(rng).family for _ in range(200)}
    assert seen == set(occluders.SEEN_FAMILIES)
    rng = np.random.default_rng(13)
    unseen = {occluders.sample_occluder(rng, occluders.UNSEEN_FAMILIES).family for _ in range(100)}
    assert unseen == set(occluders.UNSEEN_FAMILIES)


def test_spec_round_trip_through_json_and_csv() -> None:
    rng = np.random.default_rng(5)
    specs = [occluders.sample_occluder(rng, occluders.FAMILIES) for _ in range(40)]
    for spec in specs:
        record = spec.to_dict()
        assert occluders.OccluderSpec.from_dict(json.loads(json.dumps(record))) == spec
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(specs[0].to_dict()))
    writer.writeheader()
    writer.writerows(s.to_dict() for s in specs)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [occluders.OccluderSpec.from_dict(r) for r in rows] == specs


def test_bad_inputs_name_the_problem() -> None:
    image, pts = face(112)
    spec = spec_of("surgical")
    with pytest.raises(ValueError, match=r"\(68, 2\) or \(5, 2\).*\(3, 2\)"):
        occluders.render_occluder(image, pts[:3], spec)
    with pytest.raises(ValueError, match="NaN"):
        occluders.render_occluder(image, np.full((5, 2), np.nan), spec)
    with pytest.raises(ValueError, match="uint8"):
        occluders.render_occluder(image.astype(np.float32), pts, spec)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        occluders.render_occluder(image[..., 0], pts, spec)
    with pytest.raises(ValueError, match="below"):
        occluders.render_occluder(image, pts * (1, -1) + (0, 112), spec)  # upside down
    with pytest.raises(ValueError, match="'balaclava'"):
        occluders.OccluderSpec(**{**spec.__dict__, "family": "balaclava"})
    with pytest.raises(ValueError, match="'dots'.*'surgical'"):
        occluders.OccluderSpec(**{**spec.__dict__, "pattern": "dots"})
    with pytest.raises(ValueError, match="visor"):
        occluders.sample_occluder(np.random.default_rng(0), ["surgical", "visor"])
    with pytest.raises(ValueError, match="missing fields.*top"):
        occluders.OccluderSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "top"})
    with pytest.raises(ValueError, match="colour"):
        occluders.OccluderSpec.from_dict({**spec.to_dict(), "colour": "blue"})


def test_partly_outside_and_offscreen_faces() -> None:
    image, pts = face(112)
    out, occ = occluders.render_occluder(image, pts + (0, 60), spec_of("n95"))
    assert occ.any() and not occ[:50].any()
    out, occ = occluders.render_occluder(image, pts + (500, 0), spec_of("n95"))
    assert not occ.any() and np.array_equal(out, image)


def test_family_choices_have_one_parser() -> None:
    from meerbench.errors import ConfigError

    assert occluders.resolve_families("seen") == occluders.SEEN_FAMILIES
    assert occluders.resolve_families("unseen") == occluders.UNSEEN_FAMILIES
    assert occluders.resolve_families("scarf, hand") == ("scarf", "hand")
    assert occluders.resolve_families(["n95"]) == ("n95",)
    for bad, message in (("", "at least one"), ([], "at least one"), ("visor", "visor"),
                         ("n95,n95", "named twice"), ("seen,", "at least one")):
        with pytest.raises(ConfigError, match=message):
            occluders.resolve_families(bad)
