"""SynthFace splits: rendered identities written once into the artefact store, with a manifest,
landmarks and the occluder of every masked image (the renderer is ``data.render.face``)."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import multiprocessing
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from meerbench.data.render.face import render_face
from meerbench.data.render.occluders import FAMILIES
from meerbench.errors import ConfigError
from meerbench.store import Artefact

MANIFEST_HEADER = ("path", "identity", "masked", "mask_type", "split", "twin", "mask_map", "index")


#: Bump when any rendered pixel changes: it keys the cached splits.
RENDERER_VERSION = 1
MAX_IDENTITIES = 1_000_000


@dataclass(frozen=True)
class SplitSpec:
    """A SynthFace split: identities first_identity.. (+n_identities), per identity images
    0..n_unmasked-1 unmasked, then n_masked masked images with occluders from ``families``."""

    name: str  # e.g. "test", "train"
    seed: int
    first_identity: int  # global identity numbers; keep test and train ranges disjoint
    n_identities: int
    n_unmasked: int
    n_masked: int
    families: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        if not self.name or any(c in self.name for c in "/\\\0"):
            raise ConfigError(f"split name must be a plain non-empty name, got {self.name!r}")
        if self.seed < 0 or self.first_identity < 0:
            raise ConfigError("seed and first_identity must be >= 0")
        if self.n_identities < 1:
            raise ConfigError(f"n_identities must be >= 1, got {self.n_identities}")
        if self.n_identities > MAX_IDENTITIES:
            raise ConfigError(f"n_identities must be at most {MAX_IDENTITIES:,} (about 20 GB of "
                              f"images per million), got {self.n_identities:,}")
        if self.n_unmasked < 0 or self.n_masked < 0 or self.n_unmasked + self.n_masked < 1:
            raise ConfigError("n_unmasked and n_masked must be >= 0 with at least one image")
        if self.n_unmasked + self.n_masked > 1000:
            raise ConfigError("at most 1000 images per identity (3-digit file names)")
        unknown = [f for f in self.families if f not in FAMILIES]
        if not self.families or unknown:
            raise ConfigError(f"families must be known occluder families, got {self.families}")


def _identity_files(spec: SplitSpec, root: Path, identity: int
                    ) -> list[tuple[list[str], np.ndarray, dict[str, object] | None]]:
    """Render and write one identity's images; returns (manifest row, landmarks, occluder)."""
    out = []
    for folder in ("images", "twins", "maps")[:1 if spec.n_masked == 0 else 3]:
        (root / folder / f"{identity:06d}").mkdir(parents=True, exist_ok=True)
    for index in range(spec.n_unmasked + spec.n_masked):
        masked = index >= spec.n_unmasked
        r = render_face(spec.seed, identity, index, masked=masked, families=spec.families)
        name = f"{identity:06d}/{index:03d}.png"
        _save(root / "images" / name, r.image)
        twin = mask_map = mask_type = ""
        occluder = None
        if r.mask_map is not None and r.occluder is not None:
            twin, mask_map, mask_type = f"twins/{name}", f"maps/{name}", r.occluder.family
            _save(root / twin, r.unmasked)
            _save(root / mask_map, r.mask_map.astype(np.uint8) * 255)
            occluder = {"path": f"images/{name}", **r.occluder.to_dict()}
        row = [f"images/{name}", f"id{identity:06d}", str(int(masked)), mask_type, spec.name,
               twin, mask_map, str(index)]
        out.append((row, r.landmarks, occluder))
    return out


def _save(path: Path, array: np.ndarray) -> None:
    # Noisy faces: level 1 compresses as well as 9; run-length matching (zlib Z_RLE) is ~17%
    # faster than the default strategy and ~5% smaller. Pixels are the same either way.
    Image.fromarray(array).save(path, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)


def split_artefact(spec: SplitSpec, root: Path | None = None) -> Artefact:
    """The store artefact of a split (``<home>/synthface/<name>-<key>``), keyed by its full spec
    and the renderer version."""
    return Artefact("synthface", {"renderer": RENDERER_VERSION, "spec": asdict(spec)},
                    label=spec.name, root=root)


#: Images per worker process below which a pool costs more (start-up, imports) than it saves.
IMAGES_PER_WORKER = 1000


def default_workers(spec: SplitSpec) -> int:
    """Every core this process may use, one per :data:`IMAGES_PER_WORKER` images of the split
    (a small split renders in this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    images = spec.n_identities * (spec.n_unmasked + spec.n_masked)
    return max(1, min(cores or 1, images // IMAGES_PER_WORKER))


def generate_split(spec: SplitSpec, *, progress: bool = True, workers: int | None = None,
                   root: Path | None = None) -> Artefact:
    """The split's checked artefact (images, twins, maps, manifest.csv, landmarks.npy,
    occluders.csv, spec.json), rendered first when missing, by ``workers`` processes (None:
    :func:`default_workers`; the files are the same for any number). A damaged image file is
    re-rendered (with its identity's other files) and must come out byte-identical to its
    record."""
    artefact = split_artefact(spec, root)
    n = default_workers(spec) if workers is None else workers
    artefact.ensure(lambda folder: _generate(spec, folder, progress, n),
                    repair=lambda folder, bad: _rerender(spec, folder, bad))
    return artefact


def _rerender(spec: SplitSpec, folder: Path, names: list[str]) -> None:
    """Render again the identities that ``names`` (``images|twins|maps/<identity>/...``) belong
    to; other names (manifest, landmarks) are left for a full rebuild."""
    identities = {int(parts[1]) for name in names
                  if len(parts := name.split("/")) == 3 and parts[0] in ("images", "twins", "maps")
                  and parts[1].isdigit()}
    for identity in sorted(identities):
        _identity_files(spec, folder, identity)


def _generate(spec: SplitSpec, root: Path, progress: bool, workers: int) -> None:
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        tqdm = None
    ids = range(spec.first_identity, spec.first_identity + spec.n_identities)
    total = spec.n_identities * (spec.n_unmasked + spec.n_masked)
    processes = f", {workers} processes" if workers > 1 else ""
    bar = tqdm(total=total, unit="img", desc=f"SynthFace {spec.name}{processes}",
               disable=not progress) if tqdm is not None else None  # its rate: images written/s
    job = functools.partial(_identity_files, spec, root)
    rows, landmarks, occluders = [], [], []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results: Iterator = pool.imap(job, ids)
        else:
            results = map(job, ids)
        for files in results:
            for row, lm, occluder in files:
                rows.append(row)
                landmarks.append(lm)
                if occluder is not None:
                    occluders.append(occluder)
            if bar is not None:
                bar.update(len(files))
    if bar is not None:
        bar.close()
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    if occluders:
        with open(root / "occluders.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(occluders[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(occluders)
    np.save(root / "landmarks.npy", np.stack(landmarks).astype(np.float32))
    (root / "spec.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
