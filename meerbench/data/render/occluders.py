"""Landmark-driven occluders (face masks, scarves, hands, gaiters) drawn onto face images.

The renderer needs only facial landmarks, so it masks SynthFace renders and real photos alike.
All geometry is built in a *face frame*: origin midway between the eye centres, axis ``a`` from
the image-left eye to the image-right eye, axis ``b`` perpendicular to it pointing down the face,
unit = interocular distance. Shapes are drawn with Pillow at 2x supersampling and reduced with a
box filter (antialiasing); the binary map marks every pixel the occluder touches, so the output
equals the input exactly outside the map.

Determinism: shape arithmetic uses + - * / and sqrt only (transcendentals come from ``math`` on
scalars, rounded), Pillow rasterises integer vertices, and colour mixing is integer arithmetic, so
the same inputs and seed give the same bytes.

Five-point (ArcFace) landmarks are expanded to 68 points by the least-squares affine map from a
built-in canonical 68-point shape (its eye centres, nose tip and mouth corners) onto the five
points: jaw, nose bridge and ears then follow the eye/mouth geometry, not the true face outline.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

from meerbench.data.render.draw import RGB, bezier, blend, scale_rgb, skin_tone, unit_circle
from meerbench.errors import ConfigError

SEEN_FAMILIES: tuple[str, ...] = ("surgical", "cloth", "n95", "kn95", "fabric")
UNSEEN_FAMILIES: tuple[str, ...] = ("scarf", "hand", "gaiter")
FAMILIES: tuple[str, ...] = SEEN_FAMILIES + UNSEEN_FAMILIES
FAMILY_SETS: dict[str, tuple[str, ...]] = {"seen": SEEN_FAMILIES, "unseen": UNSEEN_FAMILIES}

PATTERNS: dict[str, tuple[str, ...]] = {
    "surgical": ("pleats",),
    "cloth": ("stripes", "dots", "checks", "floral"),
    "n95": ("plain",),
    "kn95": ("seam",),
    "fabric": ("plain",),
    "scarf": ("knit", "tartan"),
    "hand": ("skin",),
    "gaiter": ("camo", "bands", "zigzag"),
}

_SS = 2  # supersampling factor of the drawing canvas
# fibre grain of a random byte: the sum of its top two and bottom two bits, centred (-3..3)
_GRAIN = np.array([(v >> 6) + (v & 3) - 3 for v in range(256)], dtype=np.float32)

# Canonical iBUG 68-point shape in the 112x112 ArcFace frame (a mean-like frontal face whose eye
# centres, nose tip and mouth corners sit on the ArcFace 5-point template).
_CANON_68 = np.array(
    [
        # jaw 0-16, image-left ear level -> chin -> image-right ear level
        (20.5, 55.0), (21.0, 64.5), (22.5, 74.0), (24.5, 83.0), (28.0, 91.5), (33.0, 99.0),
        (39.5, 105.0), (47.0, 109.0), (56.0, 110.5), (65.0, 109.0), (72.5, 105.0),
        (79.0, 99.0), (84.0, 91.5), (87.5, 83.0), (89.5, 74.0), (91.0, 64.5), (91.5, 55.0),
        # brows 17-26
        (27.0, 42.0), (32.0, 39.0), (38.0, 38.2), (44.0, 38.8), (50.0, 40.5),
        (62.0, 40.5), (68.0, 38.8), (74.0, 38.2), (80.0, 39.0), (85.0, 42.0),
        # nose bridge 27-30, nostril base 31-35
        (56.0, 50.0), (56.0, 57.5), (56.0, 64.5), (56.0, 71.7),
        (49.5, 76.5), (52.5, 77.5), (56.0, 78.3), (59.5, 77.5), (62.5, 76.5),
        # eyes 36-41 (image-left), 42-47 (image-right)
        (31.5, 52.2), (35.5, 49.3), (40.5, 49.2), (45.0, 52.2), (40.5, 54.0), (35.5, 54.0),
        (67.0, 52.2), (71.5, 49.2), (76.5, 49.3), (80.5, 52.2), (76.5, 54.0), (71.5, 54.0),
        # outer lips 48-59, inner lips 60-67
        (41.5, 92.3), (46.0, 88.8), (51.0, 87.0), (56.0, 88.0), (61.0, 87.0), (66.0, 88.8),
        (70.5, 92.3), (66.0, 96.5), (61.0, 98.5), (56.0, 99.0), (51.0, 98.5), (46.0, 96.5),
        (44.0, 92.3), (51.0, 90.8), (56.0, 91.2), (61.0, 90.8), (68.0, 92.3), (61.0, 93.5),
        (56.0, 94.0), (51.0, 93.5),
    ],
    dtype=np.float64,
)


_CIRCLE = unit_circle(40)
_HALF_CIRCLE = np.array(
    [(round(math.cos(math.pi * k / 10), 12), round(math.sin(math.pi * k / 10), 12))
     for k in range(11)]
)
def _hex(c: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class OccluderSpec:
    """Everything needed to redraw one occluder on any face (logged per image in manifests).

    Fit parameters are in interocular units so one spec fits faces of any size.
    """

    family: str
    colour: RGB
    secondary: RGB  # pattern / pleat-shadow / seam / crease colour
    accent: RGB  # straps, third pattern colour, valve detail, fingernails
    pattern: str  # one of PATTERNS[family]
    pattern_scale: float  # pattern period (hand: finger width), interocular units
    pattern_angle: float  # degrees: stripe direction; hand: finger tilt
    top: float  # midline top edge: fraction from landmark 27 (bridge top) to 30 (nose tip)
    bottom: float  # extension below the chin
    side: float  # outward offset from the jaw contour (negative = tight fit)
    straps: bool  # ear loops / head straps drawn
    valve: bool  # n95 exhalation valve
    mirrored: bool  # flips asymmetric details: valve, hand and scarf-tail side, panel shading
    texture_seed: int  # pattern phase, camo noise and fibre grain

    def __post_init__(self) -> None:
        if self.family not in PATTERNS:
            raise ConfigError(
                f"unknown occluder family {self.family!r}; known: {', '.join(FAMILIES)}"
            )
        if self.pattern not in PATTERNS[self.family]:
            raise ConfigError(
                f"pattern {self.pattern!r} does not fit family {self.family!r}; "
                f"use one of {', '.join(PATTERNS[self.family])}"
            )
        for name in ("colour", "secondary", "accent"):
            c = getattr(self, name)
            if len(c) != 3 or not all(isinstance(x, int) and 0 <= x <= 255 for x in c):
                raise ConfigError(f"{name} must be three ints in 0..255, got {c!r}")
        if not self.pattern_scale > 0:
            raise ConfigError(f"pattern_scale must be positive, got {self.pattern_scale}")

    def to_dict(self) -> dict[str, str | int | float | bool]:
        """Flat JSON/CSV-friendly record; colours as ``#rrggbb``."""
        out: dict[str, str | int | float | bool] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = _hex(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> OccluderSpec:
        """Inverse of ``to_dict``; also accepts the strings of a CSV row."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        extra = [k for k in data if k not in names]
        if missing or extra:
            raise ConfigError(
                f"occluder record: missing fields {missing or 'none'}, unknown {extra or 'none'}"
            )
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = data[f.name]
            if f.type == "RGB":
                values[f.name] = _parse_colour(raw, f.name)
            elif f.type == "float":
                values[f.name] = float(raw)  # type: ignore[arg-type]
            elif f.type == "int":
                values[f.name] = int(raw)  # type: ignore[call-overload]
            elif f.type == "bool":
                values[f.name] = _parse_bool(raw, f.name)
            else:
                values[f.name] = str(raw)
        return cls(**values)  # type: ignore[arg-type]


def _parse_colour(raw: object, name: str) -> RGB:
    if isinstance(raw, str) and len(raw) == 7 and raw.startswith("#"):
        try:
            return (int(raw[1:3], 16), int(raw[3:5], 16), int(raw[5:7], 16))
        except ValueError:
            pass
    elif isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == 3:
        r, g, b = (int(x) for x in raw)
        return (r, g, b)
    raise ConfigError(f"{name} must be '#rrggbb' or three ints, got {raw!r}")


def _parse_bool(raw: object, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ConfigError(f"{name} must be a boolean, got {raw!r}")


# --------------------------------------------------------------------------- sampling


def _hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float],
         v: tuple[float, float]) -> RGB:
    hh, ss, vv = (lo + (hi - lo) * float(rng.random()) for lo, hi in (h, s, v))
    r, g, b = (int(x * 255 + 0.5) for x in colorsys.hsv_to_rgb(hh % 1.0, ss, vv))
    return (r, g, b)


def _jitter(rng: np.random.Generator, c: RGB, amount: int) -> RGB:
    r, g, b = (int(min(255, max(0, x + int(rng.integers(-amount, amount + 1))))) for x in c)
    return (r, g, b)


def _pick(rng: np.random.Generator, options: Sequence[RGB]) -> RGB:
    return options[int(rng.integers(len(options)))]


def _colours(family: str, rng: np.random.Generator) -> tuple[RGB, RGB, RGB]:
    """(colour, secondary, accent) typical of the family."""
    white = (236, 238, 240)
    if family == "surgical":
        base = _jitter(rng, _pick(rng, [(160, 196, 226), (150, 190, 222), (226, 232, 236),
                                        (168, 214, 198), (234, 196, 208), (118, 152, 204)]), 8)
        return base, scale_rgb(base, 0.78), _jitter(rng, white, 6)
    if family == "cloth":
        base = _hsv(rng, (0, 1), (0.25, 0.8), (0.3, 0.85))
        second = _hsv(rng, (0, 1), (0.0, 0.6), (0.75, 1.0))
        return base, second, _hsv(rng, (0.1, 0.2), (0.5, 0.9), (0.8, 1.0))
    if family == "n95":
        base = _jitter(rng, _pick(rng, [(238, 238, 232), (232, 232, 226), (214, 216, 214),
                                        (236, 228, 206)]), 5)
        valve = _pick(rng, [(150, 155, 160), (240, 240, 240), (226, 136, 52), (70, 110, 170)])
        return base, valve, _pick(rng, [(232, 212, 80), (240, 240, 240), (90, 130, 200)])
    if family == "kn95":
        base = _jitter(rng, _pick(rng, [(240, 240, 238), (40, 40, 44), (150, 152, 156),
                                        (176, 206, 232), (236, 196, 210)]), 6)
        return base, scale_rgb(base, 0.72), _pick(rng, [(240, 240, 240), (30, 30, 30), base])
    if family == "fabric":
        base = _hsv(rng, (0, 1), (0.0, 0.85), (0.1, 0.8))
        return base, scale_rgb(base, 0.7), _hsv(rng, (0, 1), (0.0, 0.3), (0.1, 0.9))
    if family == "scarf":
        base = _hsv(rng, (0, 1), (0.3, 0.8), (0.3, 0.75))
        return base, scale_rgb(base, 0.62), _hsv(rng, (0, 1), (0.1, 0.7), (0.6, 0.95))
    if family == "hand":
        skin = skin_tone(float(rng.random()))
        return skin, scale_rgb(skin, 0.78), blend(skin, (250, 222, 222), 0.5)
    base = _hsv(rng, (0, 1), (0.2, 0.9), (0.2, 0.8))  # gaiter
    return base, _hsv(rng, (0, 1), (0.2, 0.9), (0.2, 0.9)), _hsv(rng, (0, 1), (0.1, 0.5), (0.5, 1))


# (top, bottom, side, pattern_scale, pattern_angle) ranges per family
_FIT: dict[str, tuple[tuple[float, float], ...]] = {
    "surgical": ((0.22, 0.42), (0.08, 0.28), (0.0, 0.12), (0.2, 0.2), (0.0, 0.0)),
    "cloth": ((0.22, 0.4), (0.1, 0.3), (-0.04, 0.1), (0.12, 0.3), (-60.0, 60.0)),
    "n95": ((0.2, 0.38), (0.05, 0.2), (-0.06, 0.06), (0.2, 0.2), (0.0, 0.0)),
    "kn95": ((0.22, 0.4), (0.05, 0.2), (-0.04, 0.08), (0.2, 0.2), (0.0, 0.0)),
    "fabric": ((0.24, 0.42), (0.05, 0.22), (-0.06, 0.06), (0.2, 0.2), (0.0, 0.0)),
    "scarf": ((0.45, 0.75), (0.45, 0.9), (0.2, 0.45), (0.14, 0.24), (0.0, 0.0)),
    "hand": ((0.5, 0.5), (0.0, 0.0), (0.0, 0.0), (0.19, 0.24), (6.0, 22.0)),
    "gaiter": ((0.2, 0.45), (0.0, 0.0), (0.02, 0.15), (0.15, 0.35), (-20.0, 20.0)),
}


def sample_occluder(rng: np.random.Generator, families: Sequence[str] = SEEN_FAMILIES
                    ) -> OccluderSpec:
    """A random occluder of one of ``families`` (colour, texture and fit vary)."""
    fams = resolve_families(families)
    family = fams[int(rng.integers(len(fams)))]
    colour, secondary, accent = _colours(family, rng)
    options = PATTERNS[family]
    pattern = options[int(rng.integers(len(options)))]
    top, bottom, side, scale, angle = (
        round(lo + (hi - lo) * float(rng.random()), 4) for lo, hi in _FIT[family]
    )
    return OccluderSpec(
        family=family, colour=colour, secondary=secondary, accent=accent, pattern=pattern,
        pattern_scale=scale, pattern_angle=angle, top=top, bottom=bottom, side=side,
        straps=family in SEEN_FAMILIES and bool(rng.random() < 0.85),
        valve=family == "n95" and bool(rng.random() < 0.4),
        mirrored=bool(rng.random() < 0.5),
        texture_seed=int(rng.integers(2**31)),
    )


def resolve_families(value: str | Sequence[str]) -> tuple[str, ...]:
    """The occluder families ``value`` names: ``"seen"``, ``"unseen"``, or family names (a list
    or a comma-separated string). The one parser of family choices: protocols, SynthFace
    options, the masking command and ``MaskingSpec`` all go through it."""
    if isinstance(value, str):
        value = FAMILY_SETS.get(value) or tuple(v.strip() for v in value.split(","))
    fams = tuple(value)
    if not fams or not all(fams):
        raise ConfigError("families must name at least one occluder family")
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown occluder families {unknown}; known: 'seen', 'unseen' or "
                          f"names from {', '.join(FAMILIES)}")
    repeated = sorted({f for f in fams if fams.count(f) > 1})
    if repeated:
        raise ConfigError(f"occluder families named twice: {', '.join(repeated)}")
    return fams


# --------------------------------------------------------------------------- landmarks


def expand_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) float64 landmarks from a 68-point iBUG or 5-point ArcFace array (pixel coords)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape not in ((68, 2), (5, 2)):
        raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if pts.shape[0] == 68:
        return pts
    src = _five_of(_CANON_68)
    return _affine_fit(src, pts)(_CANON_68)


def _five_of(pts68: np.ndarray) -> np.ndarray:
    """The ArcFace 5 points (eye centres, nose tip, mouth corners) of a 68-point shape."""
    return np.stack([pts68[36:42].mean(0), pts68[42:48].mean(0), pts68[30], pts68[48], pts68[54]])


def _affine_fit(src: np.ndarray, dst: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Least-squares affine map src -> dst (5 points), solved in closed form for determinism."""
    n = float(len(src))
    cs, cd = src.sum(0) / n, dst.sum(0) / n
    xs, ys = src[:, 0] - cs[0], src[:, 1] - cs[1]
    sxx, sxy, syy = float((xs * xs).sum()), float((xs * ys).sum()), float((ys * ys).sum())
    det = sxx * syy - sxy * sxy
    if abs(det) < 1e-9:
        raise ValueError("the five landmarks are degenerate (collinear or coincident)")
    rows = []
    for k in range(2):
        d = dst[:, k] - cd[k]
        bx, by = float((xs * d).sum()), float((ys * d).sum())
        rows.append(((syy * bx - sxy * by) / det, (sxx * by - sxy * bx) / det))
    (a11, a12), (a21, a22) = rows

    def apply(p: np.ndarray) -> np.ndarray:
        dx, dy = p[:, 0] - cs[0], p[:, 1] - cs[1]
        return np.stack([cd[0] + a11 * dx + a12 * dy, cd[1] + a21 * dx + a22 * dy], axis=1)

    return apply


@dataclass(frozen=True)
class _Frame:
    """Face frame: pixel = origin + s * (a * u + b * v), v = u turned 90 degrees clockwise."""

    ox: float
    oy: float
    ux: float
    uy: float
    s: float

    @classmethod
    def of(cls, pts68: np.ndarray) -> _Frame:
        left, right = pts68[36:42].mean(0), pts68[42:48].mean(0)
        dx, dy = float(right[0] - left[0]), float(right[1] - left[1])
        s = math.sqrt(dx * dx + dy * dy)
        if s < 2.0:
            raise ValueError(f"eye centres are {s:.2f} px apart: landmarks too small or degenerate")
        mid = (left + right) / 2
        return cls(float(mid[0]), float(mid[1]), dx / s, dy / s, s)

    def local(self, p: np.ndarray) -> np.ndarray:
        d = (p - (self.ox, self.oy)) / self.s
        return d[..., :1] * (self.ux, -self.uy) + d[..., 1:] * (self.uy, self.ux)

    def pixels(self, q: np.ndarray) -> np.ndarray:
        s = self.s
        return (q[..., :1] * (s * self.ux, s * self.uy) + q[..., 1:] * (-s * self.uy, s * self.ux)
                + (self.ox, self.oy))

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame coordinates (a, b) of the pixel grid xs (columns) x ys (rows)."""
        dx, dy = (xs[None, :] - self.ox) / self.s, (ys[:, None] - self.oy) / self.s
        return dx * self.ux + dy * self.uy, dy * self.ux - dx * self.uy


# --------------------------------------------------------------------------- geometry helpers


def _norm(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt((v * v).sum(-1, keepdims=True))


def _circle(c: np.ndarray, r: float) -> np.ndarray:
    return c + r * _CIRCLE


def _capsule(p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """Finger-like outline: flat at p, rounded at q."""
    d = _norm(q - p)
    n = np.array([-d[1], d[0]])
    h = width / 2
    arc = q + h * (_HALF_CIRCLE[:, :1] * n + _HALF_CIRCLE[:, 1:] * d)
    return np.vstack([p + h * n, arc, p - h * n])


def _dot(p: np.ndarray, q: np.ndarray) -> float:
    return float(p[0] * q[0] + p[1] * q[1])


def _frac(t: np.ndarray) -> np.ndarray:
    return t - np.floor(t)


def _tri(t: np.ndarray) -> np.ndarray:
    """Triangle wave in [0, 1] with period 1."""
    return np.abs(2 * _frac(t) - 1)


# --------------------------------------------------------------------------- designs

_Tex = Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Design:
    """An occluder as ordered draw operations in face-frame coordinates.

    Kinds: ``body`` (filled occluder outline), ``strap`` (line that is part of the occluder),
    ``poly`` / ``line`` / ``dot`` (decoration on the colour layer, clipped by the occluder).
    """

    def __init__(self) -> None:
        self.ops: list[tuple[str, int, int, RGB, float]] = []
        self.chunks: list[np.ndarray] = []
        self.n = 0
        self.texture: _Tex | None = None  # frame (a, b) grids -> _palette indices, canvas scale
        self.shade: _Tex = _flat  # frame (a, b) grids -> light factor, output scale

    def add(self, kind: str, pts: np.ndarray, colour: RGB = (255, 255, 255),
            size: float = 0.0) -> None:
        """``size``: line width or dot radius in interocular units."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        self.chunks.append(pts)
        self.ops.append((kind, self.n, self.n + len(pts), colour, size))
        self.n += len(pts)

    def outline(self, pts: np.ndarray, colour: RGB, width: float) -> None:
        self.add("line", np.vstack([pts, pts[:1]]), colour, width)


@dataclass(frozen=True)
class _Face:
    """Landmark-derived anchors (face frame) shared by all families."""

    f: np.ndarray  # (68, 2) landmarks in the face frame
    normals: np.ndarray  # (17, 2) outward unit normals of the jaw contour

    @classmethod
    def of(cls, f: np.ndarray) -> _Face:
        jaw = f[:17]
        t = np.empty_like(jaw)
        t[1:-1] = jaw[2:] - jaw[:-2]
        t[0], t[-1] = jaw[1] - jaw[0], jaw[16] - jaw[15]
        return cls(f, _norm(np.stack([-t[:, 1], t[:, 0]], axis=1)))

    def bridge(self, x: float) -> np.ndarray:
        """Point on the nose bridge: 0 = landmark 27, 1 = nose tip (30)."""
        return self.f[27] + (self.f[30] - self.f[27]) * x

    def contour(self, side: float, bottom: float, first: int = 1, last: int = 15) -> np.ndarray:
        """Jaw points first..last pushed out by ``side``, blending to ``bottom`` at the chin."""
        idx = np.arange(first, last + 1)
        w = np.clip(1 - np.abs(idx - 8) / 4.0, 0.0, 1.0)[:, None]
        return self.f[idx] + self.normals[idx] * (side + (bottom - side) * w)

    def ear(self, k: int, out: float) -> np.ndarray:
        return self.f[k] + self.normals[k] * out


def _flat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.ones_like(a)


def _cyl_shade(centre_a: float, half: float, k: float) -> _Tex:
    def shade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x = (a - centre_a) / half
        return 1.0 - k * x * x

    return shade


def _ear_loops(d: _Design, face: _Face, corners: Sequence[np.ndarray], colour: RGB) -> None:
    """Loops from the mask corners (upper/lower left, upper/lower right) to the ears."""
    ul, ll, ur, lr = corners
    for upper, lower, k, k2 in ((ul, ll, 0, 2), (ur, lr, 16, 14)):
        ear_top = face.ear(k, 0.08) + (face.f[k] - face.f[k2]) * 0.25
        ear_low = face.ear(k2, 0.12)
        d.add("strap", np.stack([upper, ear_top]), colour, 0.035)
        d.add("strap", np.stack([lower, (ear_top + ear_low) / 2, ear_low]), colour, 0.035)


def _top_edge(face: _Face, top: float, cl: np.ndarray, cr: np.ndarray, roundness: float,
              n: int = 9) -> np.ndarray:
    """Top edge cheek -> nose bridge -> cheek; roundness 0 = straight, 1 = flat over the nose."""
    b = face.bridge(top)
    left = bezier(cl, b + (cl - b) * np.array([roundness * 0.6, 0.0]), b, n)
    right = bezier(b, b + (cr - b) * np.array([roundness * 0.6, 0.0]), cr, n)
    return np.vstack([left, right[1:]])


def _texture(spec: OccluderSpec, rng: np.random.Generator) -> _Tex:
    """Per-pixel pattern as indices into ``_palette(spec)``; the phase comes from ``rng``."""
    p = spec.pattern_scale
    c = round(math.cos(math.radians(spec.pattern_angle)), 12)
    s = round(math.sin(math.radians(spec.pattern_angle)), 12)
    phase_x, phase_y = (float(v) * p for v in rng.random(2))
    noise = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    pattern = spec.pattern

    def tex(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x, y = a * c + b * s + phase_x, b * c - a * s + phase_y
        if pattern == "stripes":
            return _frac(y / p) < 0.45
        if pattern in ("checks", "tartan"):
            h, v = _frac(y / p) < 0.5, _frac(x / p) < 0.5
            idx = (h & v) + 3 * (h ^ v)  # 1 = both bands, 3 = one band (mixed colour)
            if pattern == "tartan":
                lines = (_frac(y / (2 * p) + 0.125) < 0.06) | (_frac(x / (2 * p) + 0.125) < 0.06)
                idx = np.where(lines, 2, idx)
            return idx
        if pattern in ("dots", "floral"):  # offset rows of round dots / four-petal flowers
            row = np.floor(y / p)
            dx = _frac(x / p + 0.5 * (row % 2)) - 0.5
            dy = _frac(y / p) - 0.5
            r2 = dx * dx + dy * dy
            if pattern == "dots":
                return r2 < 0.05
            # petal edge r = R (0.55 + 0.45 cos 4 theta), cos 4 theta written as a polynomial
            dx2, dy2 = dx * dx, dy * dy
            quartic = dx2 * dx2 - 6 * dx2 * dy2 + dy2 * dy2
            petal = r2 * r2 * np.sqrt(r2) < 0.42 * (0.55 * r2 * r2 + 0.45 * quartic)
            return petal + (r2 < 0.01)  # 2 = flower centre in the accent colour
        if pattern == "knit":  # rows of chevrons over a fine rib
            chevron = _frac((y - 0.3 * p * _tri(x / (0.5 * p))) / (0.5 * p)) < 0.28
            return np.where(_frac(x / (0.25 * p)) < 0.12, 3, chevron)
        if pattern == "bands":
            t = _frac(y / (1.6 * p))
            return (t < 0.44) + 2 * ((t > 0.6) & (t < 0.7))
        if pattern == "zigzag":
            t = (y - 0.4 * p * _tri(x / (0.5 * p))) / (0.8 * p)
            return (_frac(t) < 0.3) * (1 + np.floor(t) % 2)
        assert pattern == "camo", pattern  # thresholded smooth noise, cells of size ~p
        cells = (int((float(a.max()) - float(a.min())) / p) + 2,
                 int((float(b.max()) - float(b.min())) / p) + 2)
        small = Image.fromarray(noise[:min(cells[1], 64), :min(cells[0], 64)])
        v = np.asarray(small.resize(a.shape[::-1], Image.Resampling.BICUBIC))
        return (v < 100) + 2 * (v > 156)

    return tex


def _palette(spec: OccluderSpec) -> list[int]:
    """Flat P-mode palette: base, secondary, accent, base/secondary mix."""
    colours = (spec.colour, spec.secondary, spec.accent, blend(spec.colour, spec.secondary, 0.5))
    return [v for colour in colours for v in colour]


def _design(spec: OccluderSpec, face: _Face, bottom_b: float,
            rng: np.random.Generator) -> _Design:
    """Per-family shape and texture; ``bottom_b`` is a frame ``b`` below the image bottom."""
    d = _Design()
    sign = 1.0 if spec.mirrored else -1.0  # side of asymmetric details (+ = image right)
    if spec.family in ("surgical", "cloth", "fabric", "kn95"):
        _fitted(d, spec, face, sign, rng)
    elif spec.family == "n95":
        _n95(d, spec, face, sign)
    elif spec.family == "scarf":
        _scarf(d, spec, face, sign, bottom_b, rng)
    elif spec.family == "hand":
        _hand(d, spec, face, sign, bottom_b)
    else:
        _gaiter(d, spec, face, bottom_b, rng)
    return d


def _box(pts: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    return (float(pts[:, 0].min()) - pad, float(pts[:, 1].min()) - pad,
            float(pts[:, 0].max()) + pad, float(pts[:, 1].max()) + pad)


def _fitted(d: _Design, spec: OccluderSpec, face: _Face, sign: float,
            rng: np.random.Generator) -> None:
    """Masks cut along the jaw: surgical, cloth, fabric and kn95."""
    f, fam = face.f, spec.family
    side = face.contour(spec.side, spec.bottom)
    cl, cr = side[0], side[-1]
    top = face.bridge(spec.top)
    chin = f[8] + face.normals[8] * spec.bottom
    if fam == "kn95":
        tip = f[8] + face.normals[8] * (spec.bottom + 0.14)
        outline = np.vstack([_top_edge(face, spec.top, cl, cr, 0.0, 3), side[-1:-7:-1], tip,
                             side[5::-1]])  # jaw 15..10, the pointed chin, jaw 6..1
    else:
        lower = side[::-1].copy()
        if fam == "surgical":  # a pleated rectangle pulled flat under the chin
            lower[:, 1] += (lower[:, 1].max() - lower[:, 1]) * 0.35
        roundness = {"surgical": 0.25, "cloth": 1.0, "fabric": 1.2}[fam]
        outline = np.vstack([_top_edge(face, spec.top, cl, cr, roundness), lower[1:-1]])
    d.add("body", outline)
    half = (float(cr[0]) - float(cl[0])) / 2
    d.shade = _cyl_shade(float(cl[0] + cr[0]) / 2, half, 0.22)
    a0, _, a1, _ = _box(outline, 0.1)
    if fam == "surgical":
        for frac in (0.3, 0.5, 0.7):
            a = np.linspace(a0, a1, 9)
            pleat = np.stack([a, top[1] + (chin[1] - top[1]) * frac + 0.12 * (a - top[0]) ** 2], 1)
            d.add("line", pleat, spec.secondary, 0.06)
            d.add("line", pleat - (0.0, 0.05), blend(spec.colour, (255, 255, 255), 0.45), 0.03)
        wire = top + np.array([[-0.28, 0.06], [0.0, 0.03], [0.28, 0.06]])
        d.add("line", wire, blend(spec.colour, (205, 205, 205), 0.6), 0.04)
        d.outline(outline, spec.accent, 0.05)
    elif fam == "cloth":
        d.texture = _texture(spec, rng)
        d.outline(outline, scale_rgb(spec.colour, 0.75), 0.05)
    elif fam == "fabric":  # plain, contoured, with a centre seam and a stitched hem
        seam = np.vstack([top, (f[33] + f[51]) / 2, (f[57] + chin) / 2 + (0.0, 0.04), chin])
        d.add("line", seam, spec.secondary, 0.03)
        hem = _top_edge(face, spec.top, cl + (0.06, 0.06), cr + (-0.06, 0.06), 1.2) + (0, 0.07)
        for i in range(0, len(hem) - 1, 2):
            d.add("line", hem[i:i + 2], spec.secondary, 0.02)
    else:  # kn95: a folded flat mask, one panel in shadow, welded border
        d.add("line", np.stack([top, tip]), spec.secondary, 0.035)
        d.outline(outline, scale_rgb(spec.colour, 0.86), 0.07)

        def shade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            t = np.clip((b - top[1]) / (tip[1] - top[1]), 0.0, 1.0)
            seam_a = top[0] + (tip[0] - top[0]) * t
            return 1.0 - 0.16 * ((a - seam_a) / half) ** 2 - 0.12 * ((a - seam_a) * sign > 0)

        d.shade = shade
    if spec.straps:
        _ear_loops(d, face, (cl, side[3], cr, side[-4]), spec.accent)


# unit superellipse (exponent 2.5) for the n95 cup, rounded for determinism
_SUPER = np.array(
    [(math.copysign(round(abs(x) ** 0.8, 12), x), math.copysign(round(abs(y) ** 0.8, 12), y))
     for x, y in _CIRCLE]
)


def _n95(d: _Design, spec: OccluderSpec, face: _Face, sign: float) -> None:
    """A moulded cup from the nose bridge to under the chin, head straps, optional valve."""
    f = face.f
    top = face.bridge(spec.top)
    low = f[8] + face.normals[8] * spec.bottom
    axis = low - top
    hb = float(np.sqrt((axis * axis).sum())) / 2
    e = axis / (2 * hb)  # down the cup
    perp = np.array([e[1], -e[0]])  # across the cup, towards image right
    centre = (top + low) / 2
    ha = (float(f[14][0]) - float(f[2][0])) / 2 + spec.side
    cup = centre + ha * _SUPER[:, :1] * perp + hb * _SUPER[:, 1:] * e
    d.add("body", cup)
    d.outline(cup, scale_rgb(spec.colour, 0.82), 0.05)
    d.add("line", top + np.array([[-0.25, 0.07], [0.0, 0.045], [0.25, 0.07]]),
          scale_rgb(spec.colour, 0.9), 0.06)

    def dome(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x, y = (a - centre[0]) / ha, (b - centre[1]) / hb
        return 1.05 - 0.3 * (x * x + y * y)

    d.shade = dome
    if spec.valve:
        vc = centre + perp * (0.42 * ha * sign) + e * 0.06
        d.add("poly", _circle(vc, 0.17), spec.secondary)
        d.add("poly", _circle(vc, 0.11), scale_rgb(spec.secondary, 0.8))
        for k in (-1, 0, 1):
            d.add("line", np.stack([vc + (-0.07, 0.04 * k), vc + (0.07, 0.04 * k)]),
                  scale_rgb(spec.secondary, 0.55), 0.015)
    if spec.straps:
        for k, k2, s in ((0, 4, -1.0), (16, 12, 1.0)):
            upper = centre + perp * (0.85 * ha * s) - e * (0.45 * hb)
            lower = centre + perp * (0.92 * ha * s) + e * (0.3 * hb)
            d.add("strap", np.stack([upper, face.ear(k, 0.5) - e * 0.15]), spec.accent, 0.05)
            d.add("strap", np.stack([lower, face.ear(k2, 0.6)]), spec.accent, 0.05)


def _scarf(d: _Design, spec: OccluderSpec, face: _Face, sign: float, bottom_b: float,
           rng: np.random.Generator) -> None:
    """A wide knitted or tartan band from the nose to below the chin, with a fringed tail."""
    f = face.f
    top = face.bridge(spec.top)
    half = max(abs(float(f[0][0])), abs(float(f[16][0]))) + spec.side
    low = float(f[8][1]) + spec.bottom
    a = np.linspace(-half, half, 13)
    top_edge = np.stack([a, top[1] + 0.1 * a * a], axis=1)
    hem = np.stack([a[::-1], low + 0.05 * (np.arange(13) % 2)], axis=1)
    d.add("body", np.vstack([top_edge, hem]))
    tail_a = sign * half * 0.45
    tail_end = min(low + 1.3, bottom_b)
    lean = 0.1 * sign
    d.add("body", np.array([[tail_a - 0.3, low - 0.1], [tail_a + 0.3, low - 0.1],
                            [tail_a + 0.26 + lean, tail_end], [tail_a - 0.34 + lean, tail_end]]))
    for x in np.linspace(tail_a - 0.3 + lean, tail_a + 0.22 + lean, 8):
        d.add("strap", np.array([[x, tail_end - 0.02], [x + 0.2 * lean, tail_end + 0.16]]),
              spec.colour, 0.03)
    d.texture = _texture(spec, rng)
    for frac in (0.45, 0.75):  # folds of the wrap
        y = top[1] + (low - top[1]) * frac
        d.add("line", np.stack([a, y + 0.1 * a * a * (1 - frac)], axis=1),
              scale_rgb(spec.colour, 0.55), 0.05)
    d.shade = _cyl_shade(0.0, half, 0.3)


def _gaiter(d: _Design, spec: OccluderSpec, face: _Face, bottom_b: float,
            rng: np.random.Generator) -> None:
    """A patterned tube from the nose bridge down the neck, past the image bottom."""
    left = face.contour(spec.side, spec.side + 0.3, 1, 4)
    right = face.contour(spec.side, spec.side + 0.3, 12, 15)
    cl, cr = left[0], right[-1]
    outline = np.vstack([_top_edge(face, spec.top, cl, cr, 0.7), right[::-1][1:],
                         (right[0][0] * 0.92, bottom_b), (left[-1][0] * 0.92, bottom_b),
                         left[::-1][:-1]])
    d.add("body", outline)
    box = _box(outline, 0.2)
    d.texture = _texture(spec, rng)
    chin_b = float(face.f[8][1])
    for y in (0.15, 0.45, 0.8):  # folds around the neck
        a = np.linspace(box[0], box[2], 9)
        d.add("line", np.stack([a, chin_b + y + 0.1 * a * a], axis=1),
              scale_rgb(spec.colour, 0.6), 0.04)
    d.shade = _cyl_shade(0.0, (float(cr[0]) - float(cl[0])) / 2, 0.3)


def _hand(d: _Design, spec: OccluderSpec, face: _Face, sign: float, bottom_b: float) -> None:
    """A hand over mouth and chin: wrist on one side, fingers across the far cheek."""
    f = face.f
    w = spec.pattern_scale
    gap = 0.22 * w
    tilt = math.radians(spec.pattern_angle)
    fdir = np.array([-sign * round(math.cos(tilt), 12), -round(math.sin(tilt), 12)])
    down = np.array([-fdir[1], fdir[0]])
    down = down if down[1] > 0 else -down
    back = -fdir
    far_corner, near_corner = (f[48], f[54]) if sign > 0 else (f[54], f[48])
    nose = f[30]
    # knuckles sit just beyond the far mouth corner; the index finger passes the nose tip;
    # the palm reaches past the near corner and below the lower lip
    knuckle = nose + fdir * ((float(far_corner[0]) - float(nose[0])) / float(fdir[0]) + 0.15)
    roots = [knuckle + down * (k * (w + gap)) for k in range(4)]
    depth = max(3 * (w + gap) + w / 2 + 0.12, _dot(f[57] - knuckle, down) + 0.15)
    heel = knuckle + down * depth
    length = max(0.9, _dot(near_corner - knuckle, back) + 0.3)
    palm = np.array([roots[0] - down * (w / 2), roots[0] - down * (w / 2) + back * length,
                     heel + back * (length + 0.05), heel + back * 0.1, heel + fdir * 0.05])
    wrist_dir = _norm(back * 0.35 + np.array([0.0, 1.0]))
    far = (bottom_b - float(palm[2][1])) / float(wrist_dir[1]) + 1.0
    d.add("body", np.stack([palm[1], palm[2], palm[2] + wrist_dir * far,
                            palm[1] + wrist_dir * far]))
    d.add("body", palm)
    thumb = heel + back * 0.3
    d.add("body", _capsule(thumb, thumb + fdir * 0.55 + down * 0.25, w * 1.1))
    for k, length in enumerate((0.8, 0.9, 0.82, 0.66)):
        tip = roots[k] + fdir * length
        d.add("body", _capsule(roots[k] - fdir * 0.05, tip, w))
        d.add("dot", tip - fdir * (w * 0.35), spec.accent, w * 0.28)  # nail
    for k in range(3):  # creases where the fingers meet the palm
        y = roots[k] + down * ((w + gap) / 2)
        d.add("line", np.stack([y + back * 0.1, y + fdir * 0.25]), spec.secondary, 0.03)
    d.add("line", np.stack([roots[1] + back * 0.5, heel + back * 0.55]), spec.secondary, 0.025)
    centre = (roots[0] + heel) / 2

    def shade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x, y = a - centre[0], b - centre[1]
        return 1.04 - 0.12 * (x * x + y * y)

    d.shade = shade


# --------------------------------------------------------------------------- rendering


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an (H, W, 3) array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    return image


def _prepare(shape: tuple[int, int], landmarks: np.ndarray, spec: OccluderSpec,
             rng: np.random.Generator) -> tuple[_Frame, _Design, np.ndarray]:
    """Frame, design and the design's points in pixels."""
    pts = expand_landmarks(landmarks)
    frame = _Frame.of(pts)
    f = frame.local(pts)
    if not (f[30, 1] > 0 and f[57, 1] > f[30, 1] and f[8, 1] > f[57, 1]):
        raise ValueError(
            "landmarks are not in iBUG/ArcFace order: nose tip, mouth and chin must lie below "
            "the eyes (is the image-left eye given first?)"
        )
    h, w = shape
    corners = frame.local(np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]))
    design = _design(spec, _Face.of(f), float(corners[:, 1].max()) + 0.5, rng)
    return frame, design, frame.pixels(np.vstack(design.chunks))


def _width(px: float) -> int:
    return max(1, int(px * _SS + 0.5))


def render_occluder(image: np.ndarray, landmarks: np.ndarray, spec: OccluderSpec,
                    rng_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``spec`` on a copy of ``image`` placed by ``landmarks`` (68 iBUG or 5 ArcFace points).

    Returns (masked uint8 image, bool occluder map). Outside the map the image is unchanged.
    ``rng_seed`` overrides ``spec.texture_seed`` for the texture jitter.
    """
    img = _check_image(image)
    h, w = img.shape[:2]
    rng = np.random.default_rng(spec.texture_seed if rng_seed is None else rng_seed)
    frame, design, pts = _prepare((h, w), landmarks, spec, rng)
    shaped = [(a, b, size) for kind, a, b, _, size in design.ops if kind in ("body", "strap")]
    extent = np.vstack([pts[a:b] for a, b, _ in shaped])
    pad = max(size for _, _, size in shaped) * frame.s / 2 + 2
    x0 = max(0, math.floor(float(extent[:, 0].min()) - pad))
    y0 = max(0, math.floor(float(extent[:, 1].min()) - pad))
    x1 = min(w, math.ceil(float(extent[:, 0].max()) + pad) + 1)
    y1 = min(h, math.ceil(float(extent[:, 1].max()) + pad) + 1)
    occluder_map = np.zeros((h, w), dtype=bool)
    if x0 >= x1 or y0 >= y1:
        return img.copy(), occluder_map
    cw, ch = (x1 - x0) * _SS, (y1 - y0) * _SS
    canvas = ((pts - (x0, y0)) * _SS + (_SS - 1) / 2).tolist()
    alpha = Image.new("L", (cw, ch), 0)
    if design.texture is None:
        colour = Image.new("RGB", (cw, ch), spec.colour)
    else:  # canvas pixel i has its centre at image x0 + (i - (SS - 1) / 2) / SS
        off = (_SS - 1) / 2
        a, b = frame.grid(x0 + (np.arange(cw, dtype=np.float32) - off) / _SS,
                          y0 + (np.arange(ch, dtype=np.float32) - off) / _SS)
        colour = Image.fromarray(design.texture(a, b).astype(np.uint8), "P")
        colour.putpalette(_palette(spec))
        colour = colour.convert("RGB")
    draw_a, draw_c = ImageDraw.Draw(alpha), ImageDraw.Draw(colour)
    for kind, start, stop, fill, size in design.ops:
        xy = canvas[start:stop]
        if kind == "body":
            draw_a.polygon(xy, fill=255)
        elif kind == "poly":
            draw_c.polygon(xy, fill=fill)
        elif kind == "dot":
            r = size * frame.s * _SS
            draw_c.ellipse((xy[0][0] - r, xy[0][1] - r, xy[0][0] + r, xy[0][1] + r), fill=fill)
        else:
            width = _width(size * frame.s)
            draw_c.line(xy, fill=fill, width=width, joint="curve")
            if kind == "strap":
                draw_a.line(xy, fill=255, width=width, joint="curve")
    alpha8 = np.asarray(alpha.reduce(_SS))
    raw = np.frombuffer(rng.bytes((y1 - y0) * (x1 - x0)), dtype=np.uint8)
    grain = _GRAIN[raw].reshape(y1 - y0, x1 - x0, 1)
    ga, gb = frame.grid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    factor = np.clip(design.shade(ga, gb), 0.4, 1.25)[..., None]
    paint = np.asarray(colour.reduce(_SS)) * factor  # self-shading and fibre grain
    paint += grain
    region = img[y0:y1, x0:x1]
    # alpha blend region + (paint - region) alpha, in place; where alpha is 0 this gives back
    # the input pixel exactly
    paint -= region
    paint *= alpha8[..., None] * np.float32(1 / 255)
    paint += region
    paint += np.float32(0.5)
    out = img.copy()
    out[y0:y1, x0:x1] = np.clip(paint, 0, 255, out=paint).astype(np.uint8)
    occluder_map[y0:y1, x0:x1] = alpha8 > 0
    return out, occluder_map


def occluder_polygons(landmarks: np.ndarray, spec: OccluderSpec,
                      shape: tuple[int, int]) -> list[np.ndarray]:
    """Filled outlines (each (K, 2) pixel coords) of the occluder on an image of ``shape``
    (H, W); their union is the occluder without straps and fringe."""
    _, design, pts = _prepare(shape, landmarks, spec, np.random.default_rng(spec.texture_seed))
    return [pts[a:b] for kind, a, b, _, _ in design.ops if kind == "body"]
