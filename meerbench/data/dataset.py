"""Samples and datasets: what a dataset reader produces and the engine consumes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``key`` is stable and unique within the dataset (a path relative to the root); ``twin`` is the
    unmasked ground truth of a masked image and ``mask_map`` its binary occluder map, when known.
    """

    key: str
    path: Path
    identity: str
    masked: bool = False
    mask_type: str | None = None
    twin: Path | None = None
    mask_map: Path | None = None
    split: str | None = None


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

    def __post_init__(self) -> None:
        self.samples.sort(key=lambda s: s.key)
        self._index = {s.key: i for i, s in enumerate(self.samples)}

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
