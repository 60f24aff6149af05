"""SynthFace: procedural, identity-controlled 112x112 faces with exact masked/unmasked twins.

Every image is a pure function of (seed, identity, index): identity parameters come from
``default_rng([seed, identity])``, nuisance (pose, expression, light, background, blur, noise,
JPEG) from ``default_rng([seed, identity, index])`` and the occluder from a separate stream, so an
image rendered unmasked equals the unmasked twin of the same image rendered masked.

Faces are built as polygons in a canonical frame close to the ArcFace 5-point template, moved by a
yaw/pitch/rotation/scale/shift of the *coordinates*, drawn with Pillow at 2x and box-reduced.
Lighting multiplies an albedo render by a head-ellipsoid shading field, after the occluder is drawn
so the occluder sits in the same light. Blur, noise and JPEG hit both twins identically, and the
masked image takes the twin's pixels outside the occluder map, so the twin is exact ground truth
there.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from meerbench.data.render.draw import RGB, bezier, blend, scale_rgb, skin_tone, unit_circle
from meerbench.data.render.occluders import (
    SEEN_FAMILIES,
    OccluderSpec,
    render_occluder,
    sample_occluder,
)
from meerbench.models.contract import ARCFACE_112_TEMPLATE

SIZE = 112
TEMPLATE = np.array(ARCFACE_112_TEMPLATE, dtype=np.float32)
HAIR_STYLES = ("bald", "buzz", "short", "side_part", "fringe", "long", "curly", "receding")
FACIAL_HAIR = ("none", "stubble", "moustache", "goatee", "beard")

_CX, _EYE_Y = 56.0, 51.6  # canonical face centre line and eye height
_PIVOT_Y = 70.0  # roll and scale turn about (_CX, _PIVOT_Y)
_CIRCLE = unit_circle(32)
_SMALL_CIRCLE = unit_circle(16)  # for features a few pixels across
# upper half of a squircle (exponent 2.4), image-left to image-right: a rounder cranium
_CRANIUM = np.array([(math.copysign(round(abs(x) ** (1 / 1.2), 12), x),
                      math.copysign(round(abs(y) ** (1 / 1.2), 12), y))
                     for x, y in np.vstack([_CIRCLE[16:], _CIRCLE[:1]])])
# curly hair outline: radius modulated by |cos(6 theta)|, rounded for determinism
_BUMPY = (np.array([1.0 + 0.06 * abs(round(math.cos(6 * 2 * math.pi * k / 32), 12))
                    for k in range(32)])[:, None] * _CIRCLE)[list(range(16, 32)) + [0]]
_AXIS = np.arange(SIZE, dtype=np.float32)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class IdentityParams:
    """Appearance of one identity (canonical 112-px frame, before pose and expression)."""

    face_width: float  # half-width at the cheekbones
    face_length: float  # chin height (y)
    crown: float  # top of the head (y)
    jaw_width: float  # jaw half-width at mouth level / face_width
    chin_width: float  # half-width of the chin
    chin_point: float  # 0 = square chin, 1 = pointed
    neck_width: float  # neck half-width / face_width
    skin: RGB
    eye_spacing: float  # half the distance between the eye centres
    eye_width: float
    eye_open: float  # eye height / width
    eye_tilt: float  # outer corner lift, radians
    iris: RGB
    brow_thickness: float
    brow_angle: float  # inner-end drop, px
    brow_arch: float
    brow_height: float  # brow above eye centre, px
    brow_colour: RGB
    nose_length: float  # nose-tip height (y)
    nose_width: float  # half-width of the nostril wings
    mouth_width: float  # half-width
    mouth_y: float
    upper_lip: float
    lower_lip: float
    lip_colour: RGB
    hair_colour: RGB
    hairline: float  # y of the hairline at the centre
    hair_style: str
    hair_volume: float
    hair_side: int  # -1 / +1: side of the parting and swoop
    ear_size: float
    facial_hair: str
    facial_hair_density: float
    marks: tuple[tuple[str, float, float, float], ...]  # (mole|scar|freckles, x, y, size)


_IRIS = ((58, 38, 24), (96, 62, 34), (120, 98, 52), (76, 112, 70), (70, 108, 160),
         (110, 122, 134), (150, 104, 40))
_HAIR = ((24, 20, 18), (52, 36, 26), (94, 62, 38), (124, 56, 30), (198, 164, 104),
         (158, 128, 84), (166, 76, 40), (150, 148, 146), (222, 218, 208))
_LIPS = ((184, 82, 92), (150, 70, 62), (196, 110, 112), (120, 58, 60))


@functools.lru_cache(maxsize=4096)
def identity_params(seed: int, identity: int) -> IdentityParams:
    """Deterministic identity parameters of ``identity`` under ``seed``."""
    rng = np.random.default_rng([seed, identity])

    def u(lo: float, hi: float) -> float:
        return round(lo + (hi - lo) * float(rng.random()), 4)

    def pick(options: Sequence[RGB], jitter: int) -> RGB:
        base = options[int(rng.integers(len(options)))]
        r, g, b = (min(255, max(0, c + int(rng.integers(-jitter, jitter + 1)))) for c in base)
        return (r, g, b)

    skin = pick([skin_tone(u(0, 1))], 8)
    hair = pick(_HAIR, 10)
    width, length = u(32.5, 38.0), u(103.0, 112.0)
    nose = u(66.5, 75.5)
    lower_lip = u(2.5, 6.2)
    # the mouth sits under the nose and, opened, still clears the chin
    mouth_y = min(max(u(88.0, 97.0), nose + 13.0), length - lower_lip - 10.0)
    mouth_w = u(11.5, 18.0)
    marks = []
    for _ in range(int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))):
        kind = ("mole", "mole", "scar", "freckles")[int(rng.integers(4))]
        region = int(rng.integers(4))
        side = 1.0 if rng.random() < 0.5 else -1.0
        if region < 2:  # cheek
            x, y = _CX + side * width * u(0.4, 0.7), u(nose + 1, mouth_y + 2)
        elif region == 2:  # chin
            x, y = _CX + u(-7, 7), u(length - 11, length - 5)
        else:  # beside the mouth
            x, y = _CX + side * (mouth_w + u(2, 5)), u(mouth_y - 5, mouth_y + 4)
        marks.append((kind, round(x, 3), round(y, 3), u(0.6, 1.4)))
    style = HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))]
    facial = FACIAL_HAIR[int(rng.choice(5, p=[0.46, 0.1, 0.14, 0.12, 0.18]))]
    return IdentityParams(
        face_width=width, face_length=length, crown=u(-9.0, 2.0), jaw_width=u(0.66, 0.93),
        chin_width=u(3.0, 11.0), chin_point=u(0.0, 1.0), neck_width=u(0.5, 0.72), skin=skin,
        eye_spacing=u(16.2, 19.0), eye_width=u(10.5, 15.0), eye_open=u(0.3, 0.56),
        eye_tilt=u(-0.12, 0.14), iris=pick(_IRIS, 12), brow_thickness=u(1.3, 4.2),
        brow_angle=u(-2.5, 2.5), brow_arch=u(0.0, 3.5), brow_height=u(6.0, 11.0),
        brow_colour=blend(hair, (30, 24, 20), u(0.0, 0.6)), nose_length=nose,
        nose_width=u(6.0, 11.5), mouth_width=mouth_w, mouth_y=mouth_y, upper_lip=u(1.8, 4.6),
        lower_lip=lower_lip, lip_colour=blend(skin, pick(_LIPS, 10), u(0.3, 0.85)),
        hair_colour=hair, hairline=u(12.0, 27.0), hair_style=style, hair_volume=u(0.0, 1.0),
        hair_side=1 if rng.random() < 0.5 else -1, ear_size=u(0.8, 1.25), facial_hair=facial,
        facial_hair_density=u(0.35, 1.0), marks=tuple(marks),
    )


# --------------------------------------------------------------------------- nuisance


@dataclass(frozen=True)
class _Nuisance:
    yaw: float  # radians
    pitch: float
    roll: float
    scale: float
    shift: tuple[float, float]
    gaze: float
    smile: float
    open: float
    brows: float  # raised (+) or frowning (-)
    light: tuple[float, float, float]  # unit direction (x right, y down, z towards camera)
    diffuse: float
    ambient: float
    cast: tuple[float, float, float]
    background: str
    bg_colours: tuple[RGB, RGB, RGB]
    clothes: RGB
    blur: float  # sigma in px, <= 1
    noise: float
    jpeg: int  # 0 = no JPEG


def _nuisance(rng: np.random.Generator) -> _Nuisance:
    r = rng.random(23)
    expression = int(rng.choice(5, p=[0.34, 0.3, 0.12, 0.14, 0.1]))  # neutral smile open wow frown
    smile = float(r[5]) * (expression == 1) + 0.3 * float(r[6]) * (expression == 3)
    opened = (0.3 + 0.7 * float(r[6])) * (expression in (2, 3)) + 0.4 * float(r[7]) * (
        expression == 1)
    brows = (0.5 + 0.5 * float(r[8])) * (expression == 3) - float(r[8]) * (expression == 4)
    azimuth = 2 * math.pi * float(r[9])
    elevation = 0.15 + 0.9 * float(r[10])  # angle of the light above the image plane
    ce = math.cos(elevation)
    light = (round(ce * math.cos(azimuth), 9), round(ce * math.sin(azimuth), 9),
             round(math.sin(elevation), 9))
    diffuse = 0.35 + 0.6 * float(r[11])
    warm = float(r[12]) * 0.16 - 0.08
    tint = float(r[13]) * 0.06 - 0.03
    kinds = ("gradient", "blobs", "room", "texture")
    background = kinds[int(r[14] * 4)]
    bg = (_random_colour(rng), _random_colour(rng), _random_colour(rng))
    return _Nuisance(
        yaw=(float(r[0]) - 0.5) * 0.7, pitch=(float(r[1]) - 0.5) * 0.3,
        roll=math.radians((float(r[2]) - 0.5) * 20), scale=0.92 + 0.16 * float(r[3]),
        shift=((float(r[4]) - 0.5) * 8, (float(r[15]) - 0.5) * 8),
        gaze=(float(r[16]) - 0.5) * 2.4, smile=smile, open=opened, brows=brows, light=light,
        diffuse=diffuse, ambient=0.25 + 0.45 * float(r[18]) + 0.25 * (1 - diffuse),
        cast=(1 + warm + tint, 1 + tint * -0.5, 1 - warm + tint),
        background=background, bg_colours=bg, clothes=_random_colour(rng),
        blur=round(float(r[19]), 2) if r[17] < 0.5 else 0.0,
        noise=round(float(r[20]) * 9.0, 2),
        jpeg=int(40 + 56 * float(r[21])) if r[22] < 0.8 else 0,
    )


def _random_colour(rng: np.random.Generator) -> RGB:
    h, s, v = rng.random(3)
    r, g, b = (int(x * 255 + 0.5) for x in colorsys.hsv_to_rgb(float(h), float(s) * 0.7,
                                                                 0.15 + 0.8 * float(v)))
    return (r, g, b)


# --------------------------------------------------------------------------- geometry


def _catmull_weights(n_ctrl: int, steps: int) -> np.ndarray:
    """(samples, n_ctrl) weights of a uniform Catmull-Rom curve through ctrl[1:-1]."""
    rows = []
    for seg in range(n_ctrl - 3):
        for k in range(steps):
            t = k / steps
            row = [0.0] * n_ctrl
            t2, t3 = t * t, t * t * t
            row[seg:seg + 4] = (0.5 * (-t + 2 * t2 - t3), 0.5 * (2 - 5 * t2 + 3 * t3),
                                0.5 * (t + 4 * t2 - 3 * t3), 0.5 * (t3 - t2))
            rows.append(row)
    rows.append([0.0] * (n_ctrl - 2) + [1.0, 0.0])
    return np.array(rows)


_JAW_WEIGHTS = _catmull_weights(7, 4)  # 17 samples, temple -> chin


def _weighted(weights: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """Rows of ``weights`` applied to control points (explicit sums: same bits everywhere)."""
    out = weights[:, :1] * ctrl[0]
    for j in range(1, len(ctrl)):
        out = out + weights[:, j:j + 1] * ctrl[j]
    return out


def _mirror(p: np.ndarray) -> np.ndarray:
    return np.stack([2 * _CX - p[:, 0], p[:, 1]], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, table: np.ndarray = _CIRCLE
             ) -> np.ndarray:
    return np.array([cx, cy]) + table * np.array([rx, ry])


def _outer_arc(ellipse: np.ndarray, side: int) -> np.ndarray:
    """Top -> outer side -> bottom half of a 32-point ellipse (outer = towards ``side``)."""
    return ellipse[24:7:-1] if side < 0 else np.vstack([ellipse[24:], ellipse[:9]])


class _Scene:
    """Draw operations in canonical coordinates; all points are posed together before drawing.

    An op is (kind, start, stop, colour, size, body): kind poly | line | dot (size = line width
    or dot radius, canonical px); body marks head/neck parts that form the lighting silhouette.
    """

    def __init__(self) -> None:
        self.ops: list[tuple[str, int, int, RGB, float, bool]] = []
        self.points: list[np.ndarray] = []
        self.depth: list[np.ndarray] = []
        self.n = 0

    def add(self, kind: str, pts: object, colour: RGB, size: float = 0.0, depth: float = 0.0,
            body: bool = False) -> None:
        """Append one op; ``depth`` moves its points towards the camera (yaw/pitch parallax)."""
        arr = pts if isinstance(pts, np.ndarray) else np.array(pts, dtype=np.float64)
        self.ops.append((kind, self.n, self.n + len(arr), colour, size, body))
        self.points.append(arr)
        self.depth.append(np.full(len(arr), depth))
        self.n += len(arr)

    def extend(self, other: _Scene) -> None:
        """Append every op of a prebuilt scene (per-identity parts are built once)."""
        n = self.n
        self.ops.extend((k, a + n, b + n, c, s, body) for k, a, b, c, s, body in other.ops)
        self.points.extend(other.points)
        self.depth.extend(other.depth)
        self.n += other.n


@dataclass(frozen=True)
class _Parts:
    """Per-identity scene pieces that expressions do not change."""

    back: _Scene  # long hair behind the head, neck
    ears: _Scene
    features: _Scene  # lower-face marks and the nose
    hair: _Scene  # scalp hair and sideburns
    nose_points: np.ndarray  # landmarks 27-35


@functools.lru_cache(maxsize=4096)
def _parts(p: IdentityParams) -> _Parts:
    """Build the expression-independent pieces of an identity once."""
    w, skin, hair = p.face_width, p.skin, p.hair_colour
    top_y = _EYE_Y + 3.0
    back, ears, features, scalp = _Scene(), _Scene(), _Scene(), _Scene()
    neck = p.neck_width * w
    if p.hair_style == "long":
        v = 3 + 5 * p.hair_volume
        back.add("poly", [(_CX - w - v, top_y - 14), (_CX - w - v - 4, p.face_length + 20),
                          (_CX + w + v + 4, p.face_length + 20), (_CX + w + v, top_y - 14)],
                 scale_rgb(hair, 0.8), depth=-14, body=True)
    back.add("poly", [(_CX - neck, p.face_length - 14), (_CX - neck - 2, p.face_length + 30),
                      (_CX + neck + 2, p.face_length + 30), (_CX + neck, p.face_length - 14)],
             scale_rgb(skin, 0.8), depth=-6, body=True)
    if p.hair_style != "long":
        ear_y = (_EYE_Y + p.nose_length) / 2 + 1
        for s in (-1, 1):
            cx = _CX + s * (w + 1.0)
            ears.add("poly", _ellipse(cx, ear_y, 3.8 * p.ear_size, 8.5 * p.ear_size),
                     scale_rgb(skin, 0.93), depth=-8, body=True)
            inner = _ellipse(cx + s * 0.8, ear_y, 2.2 * p.ear_size, 6 * p.ear_size)
            ears.add("line", _outer_arc(inner, s), scale_rgb(skin, 0.72), 0.8, depth=-8)
    for kind, x, y, size in p.marks:
        if kind == "mole":
            features.add("dot", [(x, y)], scale_rgb(skin, 0.42), size)
        elif kind == "scar":
            features.add("line", [(x - 2.5 * size, y - 1.5 * size), (x + 2.5 * size, y + size)],
                         blend(skin, (240, 200, 200), 0.45), 0.7)
        else:
            for k in range(6):
                c = _CIRCLE[(k * 11) % 32] * (2.5 * size * (0.4 + 0.12 * k))
                features.add("dot", [(x + c[0], y + c[1])], scale_rgb(skin, 0.72), 0.35)
    nose, nw = p.nose_length, p.nose_width
    for s in (-1, 1):
        features.add("line", [(_CX + s * 3.0, _EYE_Y + 3), (_CX + s * 3.6, nose - 6),
                              (_CX + s * nw * 0.8, nose + 0.5)], scale_rgb(skin, 0.88), 1.0,
                     depth=4)
        wing = _ellipse(_CX + s * nw * 0.7, nose + 2.0, 2.8, 2.4)
        features.add("line", _outer_arc(wing, s), scale_rgb(skin, 0.74), 0.9, depth=5)
        features.add("poly", _ellipse(_CX + s * nw * 0.4, nose + 3.2, 1.7, 0.9, _SMALL_CIRCLE),
                     scale_rgb(skin, 0.4), depth=6)
    features.add("poly", _ellipse(_CX, nose - 1.2, 1.8, 1.4, _SMALL_CIRCLE),
                 blend(skin, (255, 255, 255), 0.15), depth=9)
    base = np.array([(_CX - nw, nose + 2.5), (_CX - nw * 0.5, nose + 4.0), (_CX, nose + 4.4),
                     (_CX + nw * 0.5, nose + 4.0), (_CX + nw, nose + 2.5)])
    features.add("line", base[1:4], scale_rgb(skin, 0.72), 0.8, depth=6)
    bridge = np.array([(_CX, _EYE_Y - 1.0 + k * (nose - _EYE_Y + 1.0) / 3) for k in range(4)])
    _hair(scalp, p, w, top_y)
    return _Parts(back, ears, features, scalp, np.vstack([bridge, base]))


def _outline(p: IdentityParams, drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(17-point temple-to-chin curve of the image-left side, 17 jaw landmarks, face outline)."""
    w = p.face_width
    top_y = _EYE_Y + 3.0
    chin = p.face_length + drop
    chin_x = p.chin_width * (1 - 0.5 * p.chin_point)
    chin_y = chin - 2.5 - 4 * p.chin_point
    ctrl = np.array([
        (_CX - w, top_y - 10), (_CX - w, top_y), (_CX - w * 1.02, top_y + 0.3 * (chin - top_y)),
        (_CX - w * p.jaw_width, p.mouth_y + 2 + 0.6 * drop), (_CX - chin_x, chin_y), (_CX, chin),
        (_CX + chin_x, chin_y),
    ])
    left = _weighted(_JAW_WEIGHTS, ctrl)
    jaw = np.vstack([left[::2], _mirror(left[::2][7::-1])])
    cranium = _CRANIUM * (w, top_y - p.crown) + (_CX, top_y)
    return left, jaw, np.vstack([cranium, _mirror(left)[1:], left[::-1][1:-1]])


def _build(p: IdentityParams, nz: _Nuisance) -> tuple[_Scene, int]:
    """The face as draw operations (back to front); returns the scene and the landmark offset."""
    parts = _parts(p)
    sc = _Scene()
    drop = 4.0 * nz.open
    chin = p.face_length + drop
    neck = p.neck_width * p.face_width
    sc.extend(parts.back)
    sc.add("poly", [(-20, chin + 16), (_CX - neck - 6, chin + 10), (_CX, chin + 19),
                    (_CX + neck + 6, chin + 10), (132, chin + 16), (132, 160), (-20, 160)],
           nz.clothes, depth=-12, body=True)
    sc.extend(parts.ears)
    left, jaw, outline = _outline(p, drop)
    sc.add("poly", outline, p.skin, body=True)
    _facial_hair_under(sc, p, left, drop)
    sc.extend(parts.features)
    mouth = _mouth(p, nz, drop)
    sc.add("poly", mouth[[0, 1, 2, 3, 4, 5, 6, 16, 15, 14, 13, 12]], p.lip_colour, depth=2)
    sc.add("poly", mouth[[6, 7, 8, 9, 10, 11, 0, 12, 19, 18, 17, 16]],
           scale_rgb(p.lip_colour, 1.07), depth=2)
    if nz.open > 0.15:
        sc.add("poly", mouth[12:20], (60, 24, 28), depth=1)
        teeth = mouth[12:17]
        sc.add("poly", np.vstack([teeth, teeth[::-1] + (0, 1.2 + 1.5 * nz.open)]),
               (232, 226, 212), depth=1)
    sc.add("line", mouth[[0, 12, 13, 14, 15, 16, 6]], scale_rgb(p.lip_colour, 0.55), 0.8, depth=2)
    _facial_hair_over(sc, p, mouth)
    eyes = [_eye(sc, p, nz, _CX + s * p.eye_spacing, s) for s in (-1, 1)]
    brows = [_brow(sc, p, nz, _CX + s * p.eye_spacing, s) for s in (-1, 1)]
    sc.extend(parts.hair)
    start = sc.n
    sc.points.append(np.vstack([jaw, *brows, parts.nose_points, *eyes, mouth]))
    sc.depth.append(_LANDMARK_DEPTH)
    sc.n += 68
    return sc, start


_LANDMARK_DEPTH = np.concatenate([np.zeros(17), np.ones(10), [3, 5, 7, 9, 6, 6, 6, 6, 6],
                                  np.ones(12), np.full(20, 2.0)])  # as the features are drawn


def _mouth(p: IdentityParams, nz: _Nuisance, drop: float) -> np.ndarray:
    """20 iBUG mouth points (48-67) with smile and opening applied."""
    mw = p.mouth_width * (1 + 0.12 * nz.smile)
    y = p.mouth_y
    lift = 2.6 * nz.smile
    ul, ll = p.upper_lip, p.lower_lip * (1 - 0.2 * nz.smile)
    gap = drop * 1.4
    half = [(-mw, y - lift), (-0.58 * mw, y - 0.8 * ul - 0.5 * lift), (-0.22 * mw, y - ul - 0.4)]
    top = [*half, (0.0, y - ul + 0.6), *[(-x, yy) for x, yy in half[::-1]]]
    bottom = [(0.6 * mw, y + 0.85 * ll + gap - 0.3 * lift), (0.25 * mw, y + ll + gap),
              (0.0, y + 1.05 * ll + gap), (-0.25 * mw, y + ll + gap),
              (-0.6 * mw, y + 0.85 * ll + gap - 0.3 * lift)]
    inner_top = [(-0.9 * mw, y - 0.9 * lift), (-0.4 * mw, y - 0.25 - 0.2 * lift), (0.0, y),
                 (0.4 * mw, y - 0.25 - 0.2 * lift), (0.9 * mw, y - 0.9 * lift)]
    inner_bottom = [(0.4 * mw, y + gap - 0.1 * lift), (0.0, y + gap * 1.1),
                    (-0.4 * mw, y + gap - 0.1 * lift)]
    pts = np.array(top + bottom + inner_top + inner_bottom)
    pts[:, 0] += _CX
    return pts


def _eye(sc: _Scene, p: IdentityParams, nz: _Nuisance, cx: float, side: int) -> np.ndarray:
    """Draw one eye; returns its 6 landmarks (image-left corner, upper lid, right corner, lower)."""
    ew = p.eye_width
    eh = ew * p.eye_open * (1 - 0.3 * nz.smile + 0.25 * max(nz.brows, 0.0))
    lift = round(math.sin(p.eye_tilt), 12) * ew / 2 * side  # outer corner up
    left = np.array([cx - ew / 2, _EYE_Y + lift])
    right = np.array([cx + ew / 2, _EYE_Y - lift])
    mid = (left + right) / 2
    upper = bezier(left, mid + (0, -eh), right, 9)
    lower = bezier(right, mid + (0, 0.7 * eh), left, 7)
    sc.add("line", bezier(left + (1, -0.6), mid + (0, -1.9 * eh), right + (-1, -0.6), 7),
           scale_rgb(p.skin, 0.82), 0.8, depth=1)
    sc.add("poly", np.vstack([upper, lower[1:-1]]), (234, 230, 224), depth=1)
    radius = 0.22 * ew
    centre = mid + (nz.gaze, 0.05 * eh)
    sc.add("poly", _clip_to_lids(centre + radius * _SMALL_CIRCLE, left, mid, right, eh), p.iris,
           depth=1)
    sc.add("poly", _clip_to_lids(centre + 0.45 * radius * _SMALL_CIRCLE, left, mid, right, eh),
           (16, 12, 12), depth=1)
    sc.add("dot", [centre + (0.35 * radius, -0.35 * radius)], (250, 250, 250), 0.45, depth=1)
    sc.add("line", upper, (40, 28, 24), 0.9, depth=1)
    return np.vstack([left, upper[3], upper[5], right, lower[2], lower[4]])


def _clip_to_lids(pts: np.ndarray, left: np.ndarray, mid: np.ndarray, right: np.ndarray,
                  eh: float) -> np.ndarray:
    """Clamp a polygon between the lid curves (their x is linear in the Bezier parameter)."""
    t = np.clip((pts[:, 0] - left[0]) / (right[0] - left[0]), 0.0, 1.0)
    base = left[1] + (right[1] - left[1]) * t
    hump = 2 * t * (1 - t)
    corner_mid = (left[1] + right[1]) / 2
    top = base + hump * (mid[1] - eh - corner_mid)
    bottom = base + hump * (mid[1] + 0.7 * eh - corner_mid)
    return np.stack([pts[:, 0], np.clip(pts[:, 1], top, bottom)], axis=1)


def _brow(sc: _Scene, p: IdentityParams, nz: _Nuisance, cx: float, side: int) -> np.ndarray:
    """Draw one brow; returns its 5 landmarks from image left to right."""
    y = _EYE_Y - p.brow_height - 3.0 * nz.brows
    inner = (cx - side * 0.5 * p.eye_width, y + p.brow_angle + (1.5 if nz.brows < 0 else 0.0))
    outer = (cx + side * 0.62 * p.eye_width, y + 1.5)
    peak = (cx + side * 0.15 * p.eye_width, y - p.brow_arch - 1.2 * max(nz.brows, 0.0))
    line = bezier(inner, peak, outer, 7)
    taper = np.linspace(1.0, 0.55, 7)  # thinner towards the outer end
    if side < 0:
        line, taper = line[::-1], taper[::-1]
    half = (p.brow_thickness * taper / 2)[:, None] * (0, 1)
    sc.add("poly", np.vstack([line - half, (line + half)[::-1]]), p.brow_colour, depth=1)
    return line[[0, 2, 3, 4, 6]]


def _facial_hair_under(sc: _Scene, p: IdentityParams, left: np.ndarray, drop: float) -> None:
    """Beard, stubble or goatee (drawn under the lips)."""
    if p.facial_hair not in ("beard", "stubble", "goatee"):
        return
    strength = p.facial_hair_density * (0.3 if p.facial_hair == "stubble" else 0.85)
    colour = blend(p.skin, p.hair_colour, 0.2 + strength * 0.75)
    nose, mw = p.nose_length, p.mouth_width
    if p.facial_hair == "goatee":
        half = [(_CX - mw * 0.9, p.mouth_y - 1), (_CX - mw * 0.95, p.mouth_y + 5 + drop),
                (_CX - p.chin_width - 3, p.face_length - 4 + drop)]
        tip = (_CX, p.face_length + 0.8 + drop)
        sc.add("poly", [*half, tip, *[(2 * _CX - x, y) for x, y in half[::-1]]], colour)
        return
    jaw = left[5:]  # cheek -> chin
    outer = np.vstack([jaw, _mirror(jaw[::-1])[1:]]) + (0, 0.6)
    upper = [(_CX + p.face_width * 0.74, nose + 1), (_CX + mw + 3, nose + 4.5),
             (_CX, nose + 5.5), (_CX - mw - 3, nose + 4.5), (_CX - p.face_width * 0.74, nose + 1)]
    sc.add("poly", np.vstack([outer, upper]), colour)


def _facial_hair_over(sc: _Scene, p: IdentityParams, mouth: np.ndarray) -> None:
    """Moustache over the upper lip (moustache, goatee and beard styles)."""
    if p.facial_hair not in ("moustache", "goatee", "beard"):
        return
    colour = blend(p.skin, p.hair_colour, 0.3 + 0.65 * p.facial_hair_density)
    top = p.nose_length + 4.8
    lip = mouth[:7] + (0, 0.4)
    ends = [(lip[6][0] + 1.5, lip[6][1] + 1.8), (_CX + 3.5, top), (_CX - 3.5, top),
            (lip[0][0] - 1.5, lip[0][1] + 1.8)]
    sc.add("poly", np.vstack([lip, ends]), colour, depth=3)


def _hair(sc: _Scene, p: IdentityParams, w: float, top_y: float) -> None:
    """Scalp hair over the forehead (style-dependent), sideburns and strands."""
    style, colour = p.hair_style, p.hair_colour
    if style == "bald":
        for s in (-1, 1):
            sc.add("poly", [(_CX + s * (w + 1.5), top_y - 12), (_CX + s * (w - 2.5), top_y - 8),
                            (_CX + s * (w - 2), top_y + 2), (_CX + s * (w + 1), top_y + 4)],
                   blend(p.skin, colour, 0.7), body=True)
        return
    v = 1.0 if style == "buzz" else 2 + 5 * p.hair_volume + 3 * (style == "curly")
    shape = _BUMPY if style == "curly" else _CRANIUM
    outer = np.vstack([shape, shape[-1:] + (0, 0.15)]) * (w + v, top_y - p.crown + v) + (
        _CX, top_y)
    hl, s = p.hairline, p.hair_side
    temple = top_y - 5
    if style == "fringe":
        y = _EYE_Y - p.brow_height - 2.5
        xs = np.linspace(w - 3, -(w - 3), 9)
        inner = [(_CX + w - 0.5, temple), *[(_CX + x, y + 1.2 * (k % 2)) for k, x in
                                            enumerate(xs)], (_CX - w + 0.5, temple)]
    elif style == "side_part":  # a swoop low on one side, the parting high on the other
        swoop = [(_CX + s * w * 0.5, hl + 7), (_CX - s * w * 0.15, hl + 2),
                 (_CX - s * w * 0.55, hl - 1)]
        inner = [(_CX + w - 0.5, temple), *(swoop if s > 0 else swoop[::-1]),
                 (_CX - w + 0.5, temple)]
    elif style == "receding":
        inner = [(_CX + w - 0.5, temple), (_CX + w * 0.55, hl - 6), (_CX + w * 0.2, hl),
                 (_CX - w * 0.2, hl), (_CX - w * 0.55, hl - 6), (_CX - w + 0.5, temple)]
    else:
        inner = [(_CX + w - 0.5, temple), (_CX + w * 0.6, hl + 3), (_CX, hl),
                 (_CX - w * 0.6, hl + 3), (_CX - w + 0.5, temple)]
    cap = blend(p.skin, colour, 0.6) if style == "buzz" else colour
    sc.add("poly", np.vstack([outer, inner]), cap, depth=-1, body=True)
    if style != "buzz":
        dark, light = scale_rgb(colour, 0.72), blend(colour, (255, 255, 255), 0.18)
        for k, x in enumerate(np.linspace(-0.7, 0.7, 4)):
            start = (_CX + x * w * 0.5, p.crown + 6)
            end = (_CX + x * w * 1.05, hl + (14 if style == "fringe" else 3))
            sc.add("line", bezier(start, (start[0] + s * 6, (start[1] + end[1]) / 2), end, 5),
                   (dark, light)[k % 2], 0.7, depth=-1)
    for side in (-1, 1):
        sc.add("poly", [(_CX + side * (w - 0.2), temple - 2), (_CX + side * (w - 3.2), temple),
                        (_CX + side * (w - 2.6), top_y + 8), (_CX + side * (w - 0.6), top_y + 9)],
               cap, body=True)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class FaceRender:
    """One rendered image; ``unmasked`` is its exact twin without the occluder."""

    image: np.ndarray  # (112, 112, 3) uint8
    unmasked: np.ndarray  # (112, 112, 3) uint8, equals image when not masked
    mask_map: np.ndarray | None  # (112, 112) bool, None when not masked
    landmarks: np.ndarray  # (68, 2) float32 iBUG points, pixel coordinates of the image
    occluder: OccluderSpec | None


def _pose(points: np.ndarray, depth: np.ndarray, p: IdentityParams,
          nz: _Nuisance) -> np.ndarray:
    """Canonical points -> image pixels: yaw/pitch by depth, then roll, scale, shift."""
    x = points[:, 0] - _CX
    wd = p.face_width * 1.3
    r = np.clip(1 - (x / wd) * (x / wd), 0.0, 1.0)
    z = 0.75 * p.face_width * (np.sqrt(r) - 1) + depth  # 0 on the face centre line
    cy, sy = round(math.cos(nz.yaw), 12), round(math.sin(nz.yaw), 12)
    cp, sp = round(math.cos(nz.pitch), 12), round(math.sin(nz.pitch), 12)
    px = x * cy + z * sy
    py = (points[:, 1] - _PIVOT_Y) * cp + z * sp
    cr, sr = round(math.cos(nz.roll), 12), round(math.sin(nz.roll), 12)
    k = nz.scale
    return np.stack([_CX + nz.shift[0] + k * (px * cr - py * sr),
                     _PIVOT_Y + nz.shift[1] + k * (px * sr + py * cr)], axis=1)


def _background(nz: _Nuisance, rng: np.random.Generator) -> Image.Image:
    """A 224x224 background: gradient, smooth blobs, a room-like layout or a grainy wall."""
    c1, c2, c3 = nz.bg_colours
    if nz.background == "blobs":
        corners = np.array([c1, c2, c3], dtype=np.uint8)[rng.integers(0, 3, size=(3, 3))]
    else:  # a two-colour gradient in one of four directions
        corners = np.rot90(np.array([[c1, c1], [c2, c2]], dtype=np.uint8), int(rng.integers(4)))
    img = Image.fromarray(np.ascontiguousarray(corners)).resize((SIZE, SIZE),
                                                                Image.Resampling.BILINEAR)
    if nz.background == "texture":
        grain = np.frombuffer(rng.bytes(SIZE * SIZE), dtype=np.uint8).reshape(SIZE, SIZE, 1)
        img = Image.fromarray(np.minimum(np.asarray(img), 215) + (grain >> 3))
    elif nz.background == "room":
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = (int(v) for v in rng.integers(-20, SIZE, size=2))
            wd, ht = (int(v) for v in rng.integers(10, 80, size=2))
            draw.rectangle((x0, y0, x0 + wd, y0 + ht), fill=blend(c3, c1, float(rng.random())))
    return img.resize((2 * SIZE, 2 * SIZE), Image.Resampling.NEAREST)


def _shading(nz: _Nuisance, p: IdentityParams, silhouette: np.ndarray) -> np.ndarray:
    """Per-pixel light factor: a lit head ellipsoid inside the silhouette, a gradient outside."""
    cx, cy = (float(c) for c in _pose(np.array([[_CX, (p.crown + p.face_length) / 2 + 4]]),
                                      np.zeros(1), p, nz)[0])
    ax = p.face_width * 1.15 * nz.scale
    ay = (p.face_length - p.crown) * 0.55 * nz.scale
    cr, sr = round(math.cos(nz.roll), 9), round(math.sin(nz.roll), 9)
    # ellipsoid coordinates (u, v): linear in x and y, so built from the two pixel axes
    u = (_AXIS * (cr / ax))[None, :] + (_AXIS * (sr / ax) - (cx * cr + cy * sr) / ax)[:, None]
    v = (_AXIS * (-sr / ay))[None, :] + (_AXIS * (cr / ay) + (cx * sr - cy * cr) / ay)[:, None]
    c_yaw, s_yaw = round(math.cos(nz.yaw), 9), round(math.sin(nz.yaw), 9)
    lx, ly, lz = nz.light
    hx, hz = lx * c_yaw - lz * s_yaw, lx * s_yaw + lz * c_yaw  # light in head coordinates
    hx, hy = hx * cr + ly * sr, ly * cr - hx * sr
    # lam = (u hx + v hy) / sqrt(max(r2, 1)) + sqrt(max(1 - r2, 0)) hz with r2 = u^2 + v^2,
    # in place: image-sized temporaries cost more than the arithmetic
    r2, tmp = u * u, np.empty_like(u)
    r2 += np.multiply(v, v, out=tmp)
    lam = np.multiply(u, hx, out=u)
    lam += np.multiply(v, hy, out=v)
    lam /= np.sqrt(np.maximum(r2, 1.0, out=tmp), out=tmp)
    lam += np.multiply(np.sqrt(np.maximum(np.subtract(1, r2, out=tmp), 0.0, out=tmp), out=tmp),
                       hz, out=tmp)
    face = np.maximum(lam, 0.0, out=lam)
    face *= nz.diffuse
    face += nz.ambient
    ramp = _AXIS * (0.3 * nz.diffuse / 56)
    back = (ramp * lx)[None, :] + (ramp * ly + nz.ambient + nz.diffuse * (
        0.55 - 0.3 * (lx + ly)))[:, None]
    face -= back
    face *= silhouette
    face += back
    return face


def _draw(sc: _Scene, pix: np.ndarray, canvas: Image.Image) -> np.ndarray:
    """Draw the scene on a 224 canvas; returns the 112x112 head silhouette in [0, 1]."""
    cpts = (pix * 2 + 0.5).ravel().tolist()  # flat x, y lists: Pillow takes them as is
    spts = pix.ravel().tolist()
    draw = ImageDraw.Draw(canvas)
    sil = Image.new("L", (SIZE, SIZE), 0)
    sdraw = ImageDraw.Draw(sil)
    for kind, a, b, colour, size, body in sc.ops:
        if kind == "poly":
            draw.polygon(cpts[2 * a:2 * b], fill=colour)
            if body:
                sdraw.polygon(spts[2 * a:2 * b], fill=255)
        elif kind == "line":
            draw.line(cpts[2 * a:2 * b], fill=colour, width=max(1, int(size * 2 + 0.5)),
                      joint="curve")
        else:
            x, y, r = cpts[2 * a], cpts[2 * a + 1], size * 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    silhouette = np.asarray(sil, dtype=np.float32)
    silhouette /= 255
    return silhouette


def _blur_passes(sigma: float) -> int:
    """Passes of the 3-tap kernel for ``sigma``; each pass reaches one more pixel."""
    return 0 if sigma <= 0 else 1 if sigma <= 0.7 else 2


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable blur of (H, W, 3) float32 by [w, 1 - 2w, w] passes (edges replicated), in
    place with one scratch buffer: a fresh image-sized temporary per step costs more than the
    arithmetic (page faults)."""
    passes = _blur_passes(sigma)
    w = np.float32(sigma * sigma / (2 * passes))
    keep = np.float32(1) - 2 * w
    term = np.empty_like(x)
    for _ in range(passes):
        for axis in (0, 1):
            src, t = np.moveaxis(x, axis, 0), np.moveaxis(term, axis, 0)
            np.multiply(src, w, out=t)
            src *= keep
            src[1:] += t[:-1]
            src[:-1] += t[1:]
            src[0] += t[0]
            src[-1] += t[-1]
    return x


def _noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """(112, 112, 3) near-Gaussian sensor noise: the sum of four 4-bit uniforms (Irwin-Hall,
    standard deviation 9.22) from raw bytes, so every machine draws the same values."""
    raw = np.frombuffer(rng.bytes(2 * SIZE * SIZE * 3), dtype=np.uint8).reshape(2, SIZE, SIZE, 3)
    total = (raw[0] & 15) + (raw[0] >> 4) + (raw[1] & 15) + (raw[1] >> 4)
    noise = total.astype(np.float32)
    noise -= 30
    noise *= np.float32(sigma / 9.22)
    return noise


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return np.asarray(Image.open(buf, formats=["JPEG"]).convert("RGB"))


def _expose(lit: np.ndarray, nz: _Nuisance, noise: np.ndarray | None) -> np.ndarray:
    """Blur and sensor noise on a lit (H, W, 3) float32 render, in place."""
    if nz.blur > 0:
        lit = _blur(lit, nz.blur)
    if noise is not None:
        lit += noise
    return lit


def _develop(lit: np.ndarray, nz: _Nuisance) -> np.ndarray:
    """Round an exposed render to uint8 (in place on ``lit``), then JPEG when the image has it."""
    lit += np.float32(0.5)
    out = np.clip(lit, 0, 255, out=lit).astype(np.uint8)
    return _jpeg(out, nz.jpeg) if nz.jpeg else out


_MACROBLOCK = 16  # JPEG 4:2:0 coding unit


def _finish_occluded(occluded: np.ndarray, light: np.ndarray, noise: np.ndarray | None,
                     mask_map: np.ndarray, unmasked: np.ndarray, nz: _Nuisance) -> np.ndarray:
    """The masked image: ``unmasked`` with the finished occluded render inside ``mask_map``.

    Only a crop around the map is finished, bit-identical to finishing the whole frame: the
    blur reaches ``_blur_passes`` pixels, and a decoded JPEG pixel depends on its own 16-pixel
    macroblock and, through chroma upsampling, on the neighbouring ones.
    """
    rows, cols = np.flatnonzero(mask_map.any(1)), np.flatnonzero(mask_map.any(0))
    if rows.size == 0:
        return unmasked.copy()
    box = [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1]  # y0 x0 y1 x1
    if nz.jpeg:  # whole macroblocks plus a ring of neighbours (SIZE is a multiple of 16)
        m = _MACROBLOCK
        box = [box[0] // m * m - m, box[1] // m * m - m, -(-box[2] // m) * m + m,
               -(-box[3] // m) * m + m]
    y0, x0, y1, x1 = (min(max(v, 0), SIZE) for v in box)
    r = _blur_passes(nz.blur)  # expose r more pixels on every side, then drop them
    ly0, lx0, ly1, lx1 = max(y0 - r, 0), max(x0 - r, 0), min(y1 + r, SIZE), min(x1 + r, SIZE)
    crop = np.s_[ly0:ly1, lx0:lx1]
    lit = _expose(occluded[crop] * light[crop], nz, None if noise is None else noise[crop])
    out = _develop(lit[y0 - ly0:y1 - ly0, x0 - lx0:x1 - lx0], nz)
    image = unmasked.copy()
    np.copyto(image[y0:y1, x0:x1], out, where=mask_map[y0:y1, x0:x1, None])
    return image


def render_face(seed: int, identity: int, index: int, *, masked: bool,
                families: Sequence[str] = SEEN_FAMILIES) -> FaceRender:
    """Render image ``index`` of ``identity``; masked images carry their exact unmasked twin."""
    if min(seed, identity, index) < 0:
        raise ValueError(f"seed, identity and index must be >= 0, got {seed}, {identity}, {index}")
    p = identity_params(seed, identity)
    rng = np.random.default_rng([seed, identity, index])
    nz = _nuisance(rng)
    sc, lm_start = _build(p, nz)
    pix = _pose(np.vstack(sc.points), np.concatenate(sc.depth), p, nz)
    canvas = _background(nz, rng)
    silhouette = _draw(sc, pix, canvas)
    albedo = np.asarray(canvas.reduce(2))
    landmarks = pix[lm_start:lm_start + 68]
    spec, mask_map = None, None
    light = _shading(nz, p, silhouette)[..., None] * np.array(nz.cast, dtype=np.float32)
    noise = _noise(rng, nz.noise) if nz.noise > 0 else None
    unmasked = _develop(_expose(albedo * light, nz, noise), nz)
    image = unmasked
    if masked:
        spec = sample_occluder(np.random.default_rng([seed, identity, index, 1]), families)
        occluded, mask_map = render_occluder(albedo, landmarks, spec)
        image = _finish_occluded(occluded, light, noise, mask_map, unmasked, nz)
    return FaceRender(image=image, unmasked=unmasked, mask_map=mask_map,
                      landmarks=landmarks.astype(np.float32), occluder=spec)
