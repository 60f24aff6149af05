"""Synthetic masking of real faces, reproducible from a seed and each image's key.

Each image gets its own generator, seeded by ``image_seed(seed, key)``, so an image's occluder
does not depend on which other images are processed or in which order. Landmarks come from
dlib's 68-point model when available (``landmarks="auto"`` or ``"dlib68"``) or from the ArcFace
5-point template scaled to the image (``"template"``: right only for aligned faces). Landmarks
are rounded to 1/1000 px before drawing and written to the manifest with the occluder, so the
manifest alone regenerates the exact masked set, whatever dlib version is installed.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.data.align import (
    ARCFACE_112,
    INSTALL_HINT,
    DlibAligner,
    check_unique_outputs,
    png_key,
    save_png,
)
from meerbench.data.dataset import Dataset, Sample
from meerbench.data.images import IMAGE_SUFFIXES, read_rgb
from meerbench.data.render.occluders import (
    SEEN_FAMILIES,
    OccluderSpec,
    render_occluder,
    resolve_families,
    sample_occluder,
)
from meerbench.errors import DatasetError, MeerbenchError, ModelError
from meerbench.io import atomic_folder
from meerbench.store import Artefact

LANDMARK_MODES = ("auto", "template", "dlib68")
MANIFEST = "masking_manifest.csv"
MAPS = "_maps"
DATASET_COLUMNS = ("key", "masked_path", "mask_map", "family", "seed", "landmarks_source",
                   "occluder_json", "landmarks")
FOLDER_COLUMNS = ("image", "masked_path", "mask_map", "family", "colour", "pattern",
                  "texture_seed", "seed", "landmarks_source", "occluder_json", "landmarks")


@dataclass(frozen=True)
class MaskingSpec:
    """How to mask: the master ``seed``, the occluder ``families`` to draw from, and where the
    landmarks come from (``"auto"``: dlib 68 points when dlib is installed and finds a face, else
    the template; ``"template"``; ``"dlib68"``: dlib or an error)."""

    seed: int
    families: tuple[str, ...] = SEEN_FAMILIES
    landmarks: str = "auto"

    def __post_init__(self) -> None:
        resolve_families(self.families)
        if self.landmarks not in LANDMARK_MODES:
            raise MeerbenchError(f"Masking landmarks must be one of {', '.join(LANDMARK_MODES)}; "
                                 f"got {self.landmarks!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "families": list(self.families), "landmarks": self.landmarks}


@dataclass(frozen=True)
class MaskedImage:
    """A masked image, its occluder map, what was drawn and from which landmarks."""

    image: np.ndarray
    mask_map: np.ndarray
    occluder: OccluderSpec
    seed: int
    landmarks_source: str  # "dlib68", "template" or "given"
    landmarks: np.ndarray


def image_seed(seed: int, key: str) -> int:
    """The seed of one image: the first 8 bytes, big-endian, of sha256(f"{seed}/{key}")."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big")


@functools.cache
def _dlib_aligner() -> DlibAligner | None:
    """dlib with its fast HOG detector (template fallback covers its misses), or None."""
    try:
        return DlibAligner(detector="hog")
    except ModelError:
        return None


def template_landmarks(shape: Sequence[int]) -> np.ndarray:
    """The ArcFace 5 points scaled from 112x112 to an (H, W) image, per axis."""
    h, w = shape[0], shape[1]
    return ARCFACE_112 * np.array([w / 112.0, h / 112.0])


def _landmarks(image: np.ndarray, key: str, mode: str) -> tuple[np.ndarray, str]:
    if mode != "template":
        aligner = _dlib_aligner()
        if aligner is None and mode == "dlib68":
            raise ModelError(f"Masking with landmarks 'dlib68' needs dlib: {INSTALL_HINT}")
        pts = aligner.landmarks68(image) if aligner is not None else None
        if pts is not None:
            return pts, "dlib68"
        if mode == "dlib68":
            raise DatasetError(f"dlib found no face in {key}; mask it with landmarks 'auto' or "
                               "'template', or remove it.")
    return template_landmarks(image.shape), "template"


def mask_image(image: np.ndarray, key: str, spec: MaskingSpec,
               landmarks: np.ndarray | None = None) -> MaskedImage:
    """Draw the occluder of image ``key`` (a function of ``spec.seed`` and ``key`` only).

    ``landmarks`` (68 iBUG or 5 ArcFace points, pixels) override ``spec.landmarks``.
    """
    if landmarks is None:
        pts, source = _landmarks(image, key, spec.landmarks)
    else:
        pts, source = np.asarray(landmarks, dtype=np.float64), "given"
    pts = np.round(pts, 3)
    seed = image_seed(spec.seed, key)
    occluder = sample_occluder(np.random.default_rng(seed), spec.families)
    masked, mask_map = render_occluder(image, pts, occluder)
    return MaskedImage(masked, mask_map, occluder, seed, source, pts)


def _record(result: MaskedImage) -> dict[str, Any]:
    """Manifest fields shared by dataset and folder manifests."""
    occ = result.occluder.to_dict()
    return {
        "family": result.occluder.family, "colour": occ["colour"], "pattern": occ["pattern"],
        "texture_seed": occ["texture_seed"], "seed": result.seed,
        "landmarks_source": result.landmarks_source,
        "occluder_json": json.dumps(occ, sort_keys=True, separators=(",", ":")),
        "landmarks": json.dumps(result.landmarks.tolist(), separators=(",", ":")),
    }


def _mask_into(items: Sequence[tuple[str, Path, str]], spec: MaskingSpec, folder: Path,
               progress: bool, desc: str) -> list[dict[str, Any]]:
    """Mask each (key, source image, output relative path) into ``folder``: the image at the
    relative path, its map under ``_maps/``. Returns one manifest record per image."""
    from tqdm.auto import tqdm

    records = []
    for key, path, rel in tqdm(items, disable=not progress, unit="img", desc=desc):
        result = mask_image(read_rgb(path), key, spec)
        save_png(result.image, folder / rel)
        save_png(result.mask_map, folder / MAPS / rel)
        records.append({**_record(result), "masked_path": rel, "mask_map": f"{MAPS}/{rel}"})
    return records


def _write_manifest(path: Path, columns: Sequence[str], records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)


def mask_dataset(dataset: Dataset, spec: MaskingSpec, *,
                 progress: bool = True) -> tuple[Dataset, dict[str, Any]]:
    """Add a masked twin of every unmasked sample; return the extended dataset and its info.

    The twin of ``key`` has key ``masked/<key>.png``, the same identity and split,
    ``mask_type`` = occluder family, ``twin`` = the original image and ``mask_map`` = its map.
    Files and ``masking_manifest.csv`` are the store artefact ``home()/masked/<name>-<key>``, keyed
    by the masking spec and the content of the images. Pairs are unchanged.
    """
    originals = [s for s in dataset.samples if not s.masked]
    check_unique_outputs([s.key for s in originals])
    items = [(s.key, s.path, f"masked/{png_key(s.key)}") for s in originals]
    existing = {s.key for s in dataset.samples}
    clashes = [rel for _, _, rel in items if rel in existing]
    if clashes:
        raise DatasetError(f"{dataset.name} already has samples {clashes[:3]}: it was masked "
                           "before; mask the original dataset instead.")
    artefact = Artefact("masked", {"masking": spec.to_dict(), "content": dataset.content_hash()},
                        label=dataset.name)

    def fill(folder: Path) -> dict[str, Any]:
        records = _mask_into(items, spec, folder, progress, f"mask {dataset.name}")
        _write_manifest(folder / MANIFEST, DATASET_COLUMNS,
                        [{**r, "key": key} for (key, _, _), r in zip(items, records, strict=True)])
        sources = Counter(r["landmarks_source"] for r in records)
        return {"masked_images": len(records),
                "landmarks_sources": dict(sorted(sources.items()))}

    final = artefact.ensure(fill)
    manifest = final / MANIFEST
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    twins = [Sample(key=rows[s.key]["masked_path"], path=final / rows[s.key]["masked_path"],
                    identity=s.identity, masked=True, mask_type=rows[s.key]["family"],
                    twin=s.path, mask_map=final / rows[s.key]["mask_map"], split=s.split,
                    sha256=artefact.sha256(rows[s.key]["masked_path"]))
             for s in originals]
    info = {"masking": spec.to_dict(), "manifest": str(manifest),
            "manifest_sha256": artefact.sha256(MANIFEST), **artefact.info}
    extended = Dataset(dataset.name, dataset.root, [*dataset.samples, *twins], dataset.pairs,
                       info={**dataset.info, "masking": info})
    return extended, info


def _folder_images(src: Path, out: Path) -> list[Path]:
    """Images under ``src`` (recursive, sorted by relative path), skipping hidden entries, the
    output folder and a top-level ``_maps`` folder (so a previous output can be re-masked)."""
    out_abs = out.resolve()
    found = []
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if (path.suffix.lower() not in IMAGE_SUFFIXES or any(p.startswith(".") for p in rel.parts)
                or rel.parts[0] == MAPS or path.resolve().is_relative_to(out_abs)
                or not path.is_file()):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(src).as_posix())


def mask_folder(src: Path, out: Path, spec: MaskingSpec, *, progress: bool = True) -> Path:
    """Mask every image under ``src`` into ``out``; return the manifest path.

    Each image is written, as lossless PNG (suffix changed to ``.png``), at its path relative to
    ``src``; its occluder map at ``out/_maps/<same path>``; one manifest row per image in
    ``out/masking_manifest.csv`` (image, outputs, family, colour, pattern, texture seed, image
    seed, landmarks and the full occluder). The key of an image is its relative path, so the
    same folder and seed give byte-identical outputs. ``out`` must not exist or be empty; it is
    built in a temp folder beside it and renamed at the end, so a failure leaves nothing.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(f"Cannot mask {src}: not a folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MeerbenchError(f"Output folder {out} already exists and is not empty; choose a new "
                             "--out or remove it.")
    images = _folder_images(src, out)
    if not images:
        raise DatasetError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {src}.")
    keys = [p.relative_to(src).as_posix() for p in images]
    check_unique_outputs(keys)
    with atomic_folder(out) as tmp:
        items = [(key, path, png_key(key)) for key, path in zip(keys, images, strict=True)]
        records = _mask_into(items, spec, tmp, progress, f"mask {src.name}")
        _write_manifest(tmp / MANIFEST, FOLDER_COLUMNS,
                        [{**r, "image": key} for key, r in zip(keys, records, strict=True)])
    return out / MANIFEST

