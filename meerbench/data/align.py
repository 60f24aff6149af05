"""Face detection and 5-point similarity alignment to the ArcFace 112x112 template.

Coordinates are pixel indices (pixel ``(i, j)`` has its centre at ``x=i, y=j``), the convention
of the ArcFace template and of dlib's landmarks. ``align_dataset`` caches the prepared crops under
``home()/prepared``; a face that cannot be detected falls back to a centre crop, counted and
listed in the returned info so results can report it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from meerbench.data.dataset import Dataset
from meerbench.data.images import read_rgb
from meerbench.errors import ConfigError, DatasetError, ModelError, UnknownNameError
from meerbench.models.contract import ARCFACE_112_TEMPLATE
from meerbench.store import Artefact

ARCFACE_112 = np.array(ARCFACE_112_TEMPLATE, dtype=np.float64)

INSTALL_HINT = "install the [dlib] extra: pip install -e '.[dlib]'"
MAX_LISTED_FAILURES = 100


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) matrix of the least-squares similarity (rotation, uniform scale, translation)
    mapping ``src`` points onto ``dst`` points, both (N, 2), N >= 2.

    Umeyama's closed form (IEEE TPAMI 13(4), 1991): SVD of the cross-covariance, with the sign
    of the last singular direction flipped when needed so the result is a rotation, never a
    reflection (a mirrored face must not be "aligned" by flipping it).
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or len(s) < 2:
        raise ValueError(f"src and dst must both be (N, 2) with N >= 2, got {s.shape}, {d.shape}")
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc * sc).sum()) / len(s)
    if var_s <= 1e-12:
        raise ValueError("src points coincide: no similarity is defined")
    cov = dc.T @ sc / len(s)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection guard
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sv * sign).sum()) / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def warp_to_template(image: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """(size, size, 3) uint8 crop whose 5 landmarks land on the ArcFace template.

    The template is scaled by ``size / 112``. Bilinear sampling (Pillow), black outside the
    source image; deterministic.
    """
    fwd = estimate_similarity(landmarks5, ARCFACE_112 * (size / 112.0))
    lin, t = fwd[:, :2], fwd[:, 2]
    inv = np.linalg.inv(lin)
    # Pillow samples output pixel centres at (i + 0.5) in a frame where input pixel centres also
    # sit at +0.5: shift the index-space inverse map into that frame.
    inv_t = inv @ (-t) + 0.5 - inv @ np.array([0.5, 0.5])
    coeffs = (inv[0, 0], inv[0, 1], inv_t[0], inv[1, 0], inv[1, 1], inv_t[1])
    src = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    out = src.transform((size, size), Image.Transform.AFFINE, coeffs,
                        resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out)


def centre_crop(image: np.ndarray, size: int = 112) -> np.ndarray:
    """The largest central square of ``image`` resized to (size, size): the fallback when no
    face is found (right for images that are already roughly face crops)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR))


def five_from_68(pts68: np.ndarray) -> np.ndarray:
    """ArcFace's 5 points from iBUG 68 points: eye centres (mean of 36-41 and of 42-47), nose tip
    (30), mouth corners (48, 54)."""
    return np.stack([pts68[36:42].mean(0), pts68[42:48].mean(0), pts68[30], pts68[48], pts68[54]])


# --------------------------------------------------------------------------- dlib


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise ModelError(f"The dlib aligner needs dlib: {INSTALL_HINT}") from None
    return dlib


def _model_file(name: str) -> Path:
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
        return dlib.cnn_face_detection_model_v1(str(_model_file("mmod_human_face_detector.dat")))
    return dlib.shape_predictor(str(_model_file("shape_predictor_68_face_landmarks.dat")))


Detector = Literal["auto", "hog", "cnn"]


class DlibAligner:
    """dlib face detector + 68-point shape predictor.

    ``detector``: "hog" (fast), "cnn" (dlib's MMOD CNN: more robust, ~100x slower on CPU) or
    "auto" (HOG, then the CNN on images where HOG finds nothing). ``upsample``: detector
    pyramid upsampling; default 1 for images whose shorter side is under 300 px (faces in small
    crops are below the detectors' ~80 px window), else 0. The most confident face is kept.

    The ArcFace 5 points come from the 68-point model (``five_from_68``): dlib's own 5-point
    predictor marks eye corners and the nose base, and has no mouth corners, so it is not used.
    """

    name = "dlib"

    def __init__(self, detector: Detector = "auto", upsample: int | None = None) -> None:
        if detector not in ("auto", "hog", "cnn"):
            raise ConfigError(f"detector must be 'auto', 'hog' or 'cnn', got {detector!r}")
        self.detector = detector
        self.upsample = upsample
        _dlib()  # fail now, with the install hint, rather than on the first image
        _model_file("shape_predictor_68_face_landmarks.dat")

    def _detect(self, image: np.ndarray, kind: str, upsample: int) -> Any:
        if kind == "hog":
            rects, scores, _ = _load("hog").run(image, upsample, 0.0)
            found = list(zip(scores, rects, strict=True))
        else:
            found = [(d.confidence, d.rect) for d in _load("cnn")(image, upsample)]
        return max(found, key=lambda f: f[0])[1] if found else None

    def landmarks68(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float64 iBUG landmarks of the most confident face, or None when none is found."""
        img = np.ascontiguousarray(image, dtype=np.uint8)
        up = self.upsample if self.upsample is not None else int(min(img.shape[:2]) < 300)
        kinds = ("hog", "cnn") if self.detector == "auto" else (self.detector,)
        for kind in kinds:
            rect = self._detect(img, kind, up)
            if rect is not None:
                shape = _load("sp68")(img, rect)
                return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return None

    def landmarks5(self, image: np.ndarray) -> np.ndarray | None:
        """(5, 2) ArcFace-order landmarks (see ``five_from_68``), or None when no face is found."""
        pts = self.landmarks68(image)
        return None if pts is None else five_from_68(pts)


class Aligner(Protocol):
    """What ``align_dataset`` needs of an aligner plugin."""

    name: str

    def landmarks5(self, image: np.ndarray) -> np.ndarray | None: ...


ALIGNERS: dict[str, Callable[[], Aligner]] = {"dlib": DlibAligner}


def get_aligner(name: str) -> Aligner:
    """A new aligner by name."""
    if name not in ALIGNERS:
        raise UnknownNameError(f"Unknown aligner {name!r}; known aligners: {', '.join(ALIGNERS)}")
    return ALIGNERS[name]()


# --------------------------------------------------------------------------- datasets


def png_key(key: str) -> str:
    """``key`` with its suffix replaced by ``.png`` (outputs are lossless PNG)."""
    return str(PurePosixPath(key).with_suffix(".png"))


def check_unique_outputs(keys: list[str]) -> None:
    """Refuse two keys that would write the same PNG (``a.jpg`` and ``a.png``)."""
    seen: dict[str, str] = {}
    for key in keys:
        other = seen.setdefault(png_key(key), key)
        if other != key:
            raise DatasetError(f"Images {other!r} and {key!r} would both be written as "
                               f"{png_key(key)!r}; rename one of them.")


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def align_dataset(dataset: Dataset, aligner: str = "dlib", *,
                  progress: bool = True) -> tuple[Dataset, dict[str, Any]]:
    """Detect and align every sample to 112x112; return the dataset of crops and an info dict
    ``{"aligner", "aligned", "fallback_centre_crop", "failures"}`` (failures: first 100 keys).

    Crops are PNGs in the store artefact ``home()/prepared/<name>-<key>/<key>.png``, keyed by the
    aligner and the content of the images, checked on every use. Samples keep their keys,
    identities, masked flags and splits; ``twin`` and ``mask_map`` are dropped (they are in the
    original geometry). Images without a detected face become centre crops (``centre_crop``).
    """
    keys = [s.key for s in dataset.samples]
    check_unique_outputs(keys)
    artefact = Artefact("prepared", {"aligner": aligner, "content": dataset.content_hash()},
                        label=dataset.name)
    final = artefact.ensure(lambda folder: _align_into(dataset, get_aligner(aligner), folder,
                                                       progress))
    info = artefact.info
    samples = [replace(s, path=final / png_key(s.key), sha256=artefact.sha256(png_key(s.key)))
               for s in as_aligned(dataset).samples]
    prepared = Dataset(dataset.name, final, samples, dataset.pairs,
                       info={**dataset.info, "alignment": info})
    return prepared, info


def as_aligned(dataset: Dataset) -> Dataset:
    """``dataset``'s samples as ``align_dataset`` returns them, without aligning anything: the
    same keys, identities, masked flags, families and splits, no ``twin`` or ``mask_map`` (they
    are in the original geometry). Enough to build a protocol's lists before the slow alignment."""
    return Dataset(dataset.name, dataset.root,
                   [replace(s, twin=None, mask_map=None) for s in dataset.samples],
                   dataset.pairs, info=dataset.info)


def _align_into(dataset: Dataset, impl: Aligner, folder: Path, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    failures: list[str] = []
    for sample in tqdm(dataset.samples, disable=not progress, unit="img",
                       desc=f"align {dataset.name}"):
        image = read_rgb(sample.path)
        pts = impl.landmarks5(image)
        if pts is None:
            failures.append(sample.key)
            crop = centre_crop(image)
        else:
            crop = warp_to_template(image, pts)
        save_png(crop, folder / png_key(sample.key))
    return {"aligner": impl.name, "aligned": len(dataset.samples) - len(failures),
            "fallback_centre_crop": len(failures), "failures": failures[:MAX_LISTED_FAILURES]}
