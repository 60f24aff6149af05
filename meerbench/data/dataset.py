"""Samples and datasets: what a dataset reader produces and the engine consumes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meerbench.errors import DatasetError
from meerbench.io import sha256_file


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``key`` is stable and unique within the dataset (a path relative to the root); ``twin`` is the
    unmasked ground truth of a masked image and ``mask_map`` its binary occluder map, when known.
    ``sha256`` is the image file's content hash when a checked artefact record already holds it
    (otherwise it is computed when the dataset's content is hashed).
    """

    key: str
    path: Path
    identity: str
    masked: bool = False
    mask_type: str | None = None
    twin: Path | None = None
    mask_map: Path | None = None
    split: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Which reader (``format``) reads which dataset (``name``: its data-root folder), how."""

    format: str
    name: str
    options: dict[str, object]


@dataclass(frozen=True)
class Pair:
    """An official verification pair of sample keys (for datasets that ship pair lists)."""

    ref: str
    probe: str
    label: int
    fold: int


@dataclass
class Dataset:
    """Samples in a canonical order, the folder they came from and, optionally, official pairs."""

    name: str
    root: Path
    samples: list[Sample]
    pairs: list[Pair] | None = None
    info: dict[str, object] = field(default_factory=dict)
    unique_content: bool = True  # False where one image may stand in several places by design
    #: content hashes a checked artefact record already holds (twins and maps too), by path (Path
    #: or text; kept as text, ``os.fspath``: Path keys took 0.16 s to build for SynthMask's splits)
    known_sha256: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.known_sha256 = {os.fspath(path): h for path, h in self.known_sha256.items()}
        self.samples.sort(key=lambda s: s.key)
        self._index = {s.key: i for i, s in enumerate(self.samples)}
        self._files: dict[Path, str] | None = None
        self._derived: dict[Hashable, Any] = {}

    def derived(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()``, once per ``key`` for this dataset: what several tasks draw alike (the
        operational task on the verification tasks' pairs) is drawn once."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def index(self, key: str) -> int:
        return self._index[key]

    def by_key(self, key: str) -> Sample:
        return self.samples[self._index[key]]

    def manifest_hash(self, keys: Sequence[str] | None = None) -> str:
        """sha256 over (key, identity, masked) of the given keys (default: all samples)."""
        chosen = self.samples if keys is None else [self.by_key(k) for k in keys]
        digest = hashlib.sha256()
        for s in chosen:
            digest.update(f"{s.key}\t{s.identity}\t{int(s.masked)}\n".encode())
        return digest.hexdigest()

    def content_hash(self, keys: Sequence[str] | None = None) -> str:
        """sha256 over (key, identity, masked, family, and the content of the image, its twin
        and its occluder map) of the given keys (default: all samples). What every cache built
        from these samples is keyed by: other pixels under the same names give another hash.

        The first call hashes every image of the dataset and refuses two samples that are the
        same file (one device and inode: a symlink or hard link to another sample's image) or
        the same bytes, naming both."""
        files = self._file_hashes()
        chosen = self.samples if keys is None else [self.by_key(k) for k in keys]
        digest = hashlib.sha256()
        for s in chosen:
            twin = files.get(s.twin) if s.twin is not None else None
            if s.twin is not None and twin is None:
                twin = files[s.twin] = self._hash(s.twin, s.key)
            mask = files.get(s.mask_map) if s.mask_map is not None else None
            if s.mask_map is not None and mask is None:
                mask = files[s.mask_map] = self._hash(s.mask_map, s.key)
            digest.update(f"{s.key}\t{s.identity}\t{int(s.masked)}\t{s.mask_type or ''}\t"
                          f"{files[s.path]}\t{twin or ''}\t{mask or ''}\n".encode())
        return digest.hexdigest()

    def _file_hashes(self) -> dict[Path, str]:
        if self._files is None:
            files: dict[Path, str] = {}
            by_file: dict[tuple[int, int], Sample] = {}
            by_content: dict[str, Sample] = {}
            for s in self.samples:  # one stat per file (resolving each path took 10x longer)
                try:
                    stat = os.stat(s.path)
                except OSError as exc:
                    raise _unreadable(s.path, s.key, exc) from None
                if (other := by_file.setdefault((stat.st_dev, stat.st_ino), s)) is not s:
                    raise DatasetError(f"{self.name}: samples {other.key!r} ({other.path}) and "
                                       f"{s.key!r} ({s.path}) are the same file "
                                       f"{s.path.resolve()}; each image may appear once.")
                files[s.path] = s.sha256 or self._hash(s.path, s.key)
                other = by_content.setdefault(files[s.path], s)
                if self.unique_content and other is not s:
                    raise DatasetError(f"{self.name}: {other.path} and {s.path} have the same "
                                       "content; each image may appear once (remove the copy).")
            self._files = files
        return self._files

    def _hash(self, path: Path, key: str) -> str:
        """``path``'s sha256: from a checked record when known, else read and hashed."""
        return self.known_sha256.get(os.fspath(path)) or _hash_file(path, key)


def _hash_file(path: Path, key: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise _unreadable(path, key, exc) from None


def _unreadable(path: Path, key: str, exc: OSError) -> DatasetError:
    return DatasetError(f"Cannot read {path} (sample {key!r}): {exc.strerror}.")


def labelled_unmasked(dataset: Dataset, purpose: str) -> tuple[list[Sample], list[int]]:
    """The unmasked samples of ``dataset`` ordered by (label, key), with their labels: identities
    numbered 0.. in sorted order. The order a RecordIO pack writes and the streaming loader reads
    (training sets hold originals; masks are drawn while training). ``purpose`` names the use in
    the error for a dataset without unmasked images."""
    samples = [s for s in dataset.samples if not s.masked]
    if not samples:
        raise DatasetError(f"{dataset.name} ({dataset.root}): no unmasked images to {purpose}")
    label = {name: i for i, name in enumerate(sorted({s.identity for s in samples}))}
    samples.sort(key=lambda s: (label[s.identity], s.key))
    return samples, [label[s.identity] for s in samples]
