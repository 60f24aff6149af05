"""dlib face detection and 68-point landmarks, as a cascade of detector passes, cheapest first.

``DlibAligner("auto")`` tries dlib's HOG detector exactly as before (so every face HOG finds is
aligned to the same bytes), then HOG one pyramid level coarser (about 1 ms on a small image), and
only then dlib's CNN detector, on the image scaled so that its shorter side is ``cnn_side`` pixels
(never larger than the HOG pass saw it). The CNN's cost grows with the pixels it scans, and a
250-px LFW image upsampled 2x (what the CNN saw before) is 5x the pixels of 224 px. Landmarks are
always found on the full-resolution image. docs/alignment.md has the measurements.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from meerbench.errors import ConfigError, ModelError

INSTALL_HINT = "install the [dlib] extra: pip install -e '.[dlib]'"

#: the shorter side, in pixels, of the image the CNN pass scans by default: faces down to about a
#: third of it are found (dlib's MMOD detector looks for faces of about 80 px).
CNN_SIDE = 224


def five_from_68(pts68: np.ndarray) -> np.ndarray:
    """ArcFace's 5 points from iBUG 68 points: eye centres (mean of 36-41 and of 42-47), nose tip
    (30), mouth corners (48, 54)."""
    return np.stack([pts68[36:42].mean(0), pts68[42:48].mean(0), pts68[30], pts68[48], pts68[54]])


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise ModelError(f"The dlib aligner needs dlib: {INSTALL_HINT}") from None
    return dlib


def model_file(name: str) -> Path:
    """A model file of the ``face_recognition_models`` package, located without importing it
    (its ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"dlib's model files (face-recognition-models) are missing: "
                         f"{INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelError(f"dlib model file {path} is missing; reinstall it: {INSTALL_HINT}")
    return path


@functools.cache
def _load(kind: str) -> Any:
    """dlib models, loaded once per process (the 68-point predictor takes ~1.5 s)."""
    dlib = _dlib()
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@dataclass(frozen=True)
class Pass:
    """One detector pass: ``kind`` on the image resized by ``scale`` (1: as it is), with dlib's
    own ``upsample`` pyramid doublings; ``name`` is what the aligned images are counted under."""

    name: str
    kind: Literal["hog", "cnn"]
    upsample: int
    scale: float = 1.0

    def find(self, image: np.ndarray) -> Any:
        """The most confident face's dlib rectangle in ``image``'s coordinates, or None."""
        seen = image
        if self.scale != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            seen = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        if self.kind == "hog":
            rects, scores, _ = _load("hog").run(seen, self.upsample, 0.0)
            found = list(zip(scores, rects, strict=True))
        else:
            found = [(d.confidence, d.rect) for d in _load("cnn")(seen, self.upsample)]
        if not found:
            return None
        rect = max(found, key=lambda f: f[0])[1]
        if self.scale == 1.0:
            return rect
        s = 1.0 / self.scale
        return _dlib().rectangle(round(rect.left() * s), round(rect.top() * s),
                                 round(rect.right() * s), round(rect.bottom() * s))


Detector = Literal["auto", "hog", "cnn", "exhaustive"]
DETECTORS = ("auto", "hog", "cnn", "exhaustive")


class DlibAligner:
    """dlib face detector + 68-point shape predictor.

    ``detector``: "auto" (the cascade of the module docstring), "hog" (fast), "cnn" (dlib's MMOD
    CNN: more robust, ~100x slower on CPU) or "exhaustive" (HOG, then the CNN at HOG's resolution:
    the strategy before the cascade, kept as the reference it is measured against).
    ``upsample``: detector pyramid upsampling; default 1 for images whose shorter side is under
    300 px (faces in small crops are below the detectors' ~80 px window), else 0. ``cnn_side``:
    see ``CNN_SIDE``. The most confident face is kept.

    The ArcFace 5 points come from the 68-point model (``five_from_68``): dlib's own 5-point
    predictor marks eye corners and the nose base, and has no mouth corners, so it is not used.
    """

    name = "dlib"

    def __init__(self, detector: Detector = "auto", upsample: int | None = None,
                 cnn_side: int = CNN_SIDE) -> None:
        if detector not in DETECTORS:
            raise ConfigError(f"detector must be one of {', '.join(map(repr, DETECTORS))}, "
                              f"got {detector!r}")
        if isinstance(cnn_side, bool) or not isinstance(cnn_side, int) or cnn_side < 16:
            raise ConfigError(f"cnn_side must be an integer >= 16 (pixels), got {cnn_side!r}")
        self.detector = detector
        self.upsample = upsample
        self.cnn_side = cnn_side
        _dlib()  # fail now, with the install hint, rather than on the first image
        model_file("shape_predictor_68_face_landmarks.dat")

    @property
    def settings(self) -> dict[str, Any]:
        """Everything the crops depend on besides the images (part of their cache key)."""
        cnn_side = self.cnn_side if self.detector == "auto" else None
        return {"detector": self.detector, "upsample": self.upsample, "cnn_side": cnn_side}

    def passes(self, shape: tuple[int, ...]) -> list[Pass]:
        """The detector passes tried, in order, on an image of ``shape``."""
        up = self.upsample if self.upsample is not None else int(min(shape[:2]) < 300)
        hog, cnn = Pass("hog", "hog", up), Pass("cnn", "cnn", up)
        if self.detector in ("hog", "cnn"):
            return [hog if self.detector == "hog" else cnn]
        if self.detector == "exhaustive":
            return [hog, cnn]
        cascade = [hog] + ([Pass("hog_coarse", "hog", up - 1)] if up > 0 else [])
        scale = self.cnn_side / min(shape[:2])
        return cascade + [cnn if scale >= 2 ** up else Pass("cnn", "cnn", 0, scale)]

    def _find(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        """(68, 2) float64 iBUG landmarks of the most confident face and the name of the pass
        that found it, or None when no pass finds a face."""
        img = np.ascontiguousarray(image, dtype=np.uint8)
        for detector_pass in self.passes(img.shape):
            rect = detector_pass.find(img)
            if rect is not None:
                shape = _load("sp68")(img, rect)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                return pts, detector_pass.name
        return None

    def landmarks68(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float64 iBUG landmarks of the most confident face, or None when none is found."""
        found = self._find(image)
        return None if found is None else found[0]

    def locate(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        """(5, 2) ArcFace-order landmarks (see ``five_from_68``) and the name of the pass that
        found the face, or None when no face is found."""
        found = self._find(image)
        return None if found is None else (five_from_68(found[0]), found[1])

    def landmarks5(self, image: np.ndarray) -> np.ndarray | None:
        """(5, 2) ArcFace-order landmarks, or None when no face is found."""
        found = self.locate(image)
        return None if found is None else found[0]
