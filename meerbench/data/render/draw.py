"""Drawing primitives shared by the face and occluder renderers: colours and curves.

Every curve is built from rounded constants and + - * / arithmetic so that shapes, and with them
the rendered bytes, do not depend on the platform's libm.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

RGB = tuple[int, int, int]


def unit_circle(n: int) -> np.ndarray:
    """n points on the unit circle, rounded so libm differences cannot leak into shapes."""
    return np.array(
        [(round(math.cos(2 * math.pi * k / n), 12), round(math.sin(2 * math.pi * k / n), 12))
         for k in range(n)]
    )


def skin_tone(t: float) -> RGB:
    """A skin colour from a light (t=0) to dark (t=1) ramp; shared by SynthFace and hands."""
    ramp = ((244, 214, 190), (229, 185, 150), (198, 144, 106), (150, 100, 68), (96, 62, 42))
    x = min(max(t, 0.0), 1.0) * (len(ramp) - 1)
    i = min(int(x), len(ramp) - 2)
    return blend(ramp[i], ramp[i + 1], x - i)


def blend(c1: Sequence[int], c2: Sequence[int], t: float) -> RGB:
    """Colour ``t`` of the way from c1 to c2, rounded."""
    r, g, b = (int(p + (q - p) * t + 0.5) for p, q in zip(c1, c2, strict=True))
    return (r, g, b)


def scale_rgb(c: Sequence[int], f: float) -> RGB:
    """Colour c brightened (f > 1) or darkened (f < 1), clipped to 255."""
    r, g, b = (min(255, int(x * f + 0.5)) for x in c)
    return (r, g, b)


@functools.cache
def bezier_weights(n: int) -> np.ndarray:
    """(n, 3) Bernstein weights of a quadratic Bezier curve at n evenly spaced t."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.hstack([(1 - t) * (1 - t), 2 * (1 - t) * t, t * t])


def bezier(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve p0 -> p2 pulled towards p1."""
    w = bezier_weights(n)
    return (w[:, :1] * np.asarray(p0, dtype=np.float64) + w[:, 1:2] * np.asarray(p1)
            + w[:, 2:] * np.asarray(p2))
