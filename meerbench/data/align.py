"""5-point similarity alignment to the ArcFace 112x112 template, and aligning whole datasets.

Coordinates are pixel indices (pixel ``(i, j)`` has its centre at ``x=i, y=j``), the convention
of the ArcFace template and of dlib's landmarks. Faces are found by an aligner plugin
(``ALIGNERS``; dlib's is in ``meerbench.data.detect``). ``align_dataset`` aligns in worker
processes and keeps the crops as a store artefact keyed by the images' content and the aligner's
settings; a face that cannot be detected falls back to a centre crop, counted and listed in the
returned info so results can report it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from meerbench.data.dataset import Dataset
from meerbench.data.detect import INSTALL_HINT as INSTALL_HINT  # re-exported for data.masking
from meerbench.data.detect import DlibAligner
from meerbench.data.detect import five_from_68 as five_from_68  # re-exported
from meerbench.data.images import read_rgb
from meerbench.errors import ConfigError, DatasetError, MeerbenchError, UnknownNameError
from meerbench.io import write_json
from meerbench.models.contract import ARCFACE_112_TEMPLATE
from meerbench.store import Artefact

ARCFACE_112 = np.array(ARCFACE_112_TEMPLATE, dtype=np.float64)

MAX_LISTED_FAILURES = 100
#: images per task sent to a worker process (amortises the inter-process round trip)
CHUNK = 8
#: fewest images per worker process: starting one (imports, dlib's models) costs 1-2 s of CPU,
#: about what 64 faces HOG finds cost to align
MIN_PER_WORKER = 64
#: the centre-crop fallback's name in ``found_by`` counts
CENTRE_CROP = "centre_crop"
#: in the artefact, each key's detector and 5 points in the original image (null: centre crop)
LANDMARKS_FILE = "landmarks.json"


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


class Aligner(Protocol):
    """What ``align_dataset`` needs of an aligner plugin (picklable: it is sent to workers)."""

    name: str

    @property
    def settings(self) -> dict[str, Any]:
        """JSON values the crops depend on besides the images (part of their cache key)."""
        ...

    def locate(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        """(5, 2) ArcFace-order landmarks and the name of the detector that found the face, or
        None when no face is found."""
        ...


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


def default_workers() -> int:
    """``align_dataset``'s default: the cores this process may use, less those busy with other
    work (the 1-minute load average beyond this process's own 1). Workers on busy cores only add
    their start-up cost: on the shared 2-core dev VM at load 4.5, two workers took 1.4x as long as
    one (docs/alignment.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    busy = max(0.0, os.getloadavg()[0] - 1.0) if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - busy)))


def align_dataset(dataset: Dataset, aligner: str | Aligner = "dlib", *,
                  workers: int | None = None,
                  progress: bool = True) -> tuple[Dataset, dict[str, Any]]:
    """Detect and align every sample to 112x112; return the dataset of crops and an info dict
    ``{"aligner", "settings", "aligned", "fallback_centre_crop", "found_by", "failures"}``
    (found_by: images per detector that found their face; failures: the first 100 keys).

    ``aligner``: a name in ``ALIGNERS`` (with its default settings) or an aligner. Crops are PNGs
    in the store artefact ``home()/prepared/<name>-<key>/<key>.png``, next to ``LANDMARKS_FILE``
    (each image's detector and 5 points), keyed by the aligner, its settings and the content of
    the images, checked on every use. ``workers`` processes align (default: the idle cores, see
    ``default_workers``; 1 aligns in this process). Samples keep their keys, identities, masked
    flags and splits; ``twin`` and ``mask_map`` are dropped (they are in the original geometry).
    Images without a detected face become centre crops (``centre_crop``).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    keys = [s.key for s in dataset.samples]
    check_unique_outputs(keys)
    impl = get_aligner(aligner) if isinstance(aligner, str) else aligner
    artefact = Artefact("prepared", {"aligner": impl.name, "settings": impl.settings,
                                     "content": dataset.content_hash()}, label=dataset.name)
    final = artefact.ensure(lambda folder: _align_into(
        dataset, impl, folder, workers or default_workers(), progress))
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


@dataclass(frozen=True)
class AlignJob:
    """Align one image into ``folder``; return the name of the detector that found its face and
    the 5 points, or None (centre crop). What each worker process runs; also runs in this one."""

    aligner: Aligner
    folder: Path

    def __call__(self, item: tuple[str, Path]) -> tuple[str, list[list[float]]] | None:
        key, path = item
        image = read_rgb(path)
        found = self.aligner.locate(image)
        crop = centre_crop(image) if found is None else warp_to_template(image, found[0])
        save_png(crop, self.folder / png_key(key))
        return None if found is None else (found[1], found[0].tolist())


Found = tuple[str, list[list[float]]] | None


def run_jobs(job: AlignJob, items: list[tuple[str, Path]], workers: int) -> Iterator[Found]:
    """``job`` over ``items``, results in order, in up to ``workers`` spawned processes (at least
    ``MIN_PER_WORKER`` images each; one runs in this process). Spawned, not
    forked: the caller may hold threads (torch) that a fork would copy mid-state. A job's error
    is raised here; workers that die (out of memory, or a script without a main guard that every
    spawned worker re-runs) give a MeerbenchError, not a hang."""
    n = min(workers, len(items) // MIN_PER_WORKER)
    if n <= 1:
        yield from map(job, items)
        return
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(job, items, chunksize=CHUNK)
    except BrokenProcessPool:
        raise MeerbenchError(
            "The alignment worker processes stopped unexpectedly (out of memory? a script that "
            "aligns must start its work under `if __name__ == '__main__':`, which spawned "
            "workers do not re-run); workers=1 aligns in this process.") from None
    finally:
        pool.shutdown(cancel_futures=True)


def _align_into(dataset: Dataset, impl: Aligner, folder: Path, workers: int,
                progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    items = [(s.key, s.path) for s in dataset.samples]
    failures: list[str] = []
    found_by: Counter[str] = Counter()
    landmarks: dict[str, dict[str, Any] | None] = {}
    with tqdm(total=len(items), disable=not progress, unit="img",
              desc=f"align {dataset.name}") as bar:
        for (key, _), found in zip(items, run_jobs(AlignJob(impl, folder), items, workers),
                                   strict=True):
            if found is None:
                failures.append(key)
            found_by[found[0] if found else CENTRE_CROP] += 1
            landmarks[key] = {"found_by": found[0], "points": found[1]} if found else None
            bar.set_postfix(dict(sorted(found_by.items())), refresh=False)
            bar.update()
    write_json(folder / LANDMARKS_FILE, landmarks)
    return {"aligner": impl.name, "settings": impl.settings,
            "aligned": len(items) - len(failures), "fallback_centre_crop": len(failures),
            "found_by": {k: v for k, v in sorted(found_by.items()) if k != CENTRE_CROP},
            "failures": failures[:MAX_LISTED_FAILURES]}
