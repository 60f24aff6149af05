"""Content-addressed embedding store with atomic, resumable chunked writes.

The key covers model id, weights sha256, preprocessing contract, protocol id and version, and the
hash of the exact sample list embedded. A cache that ignored any of these would return wrong
numbers silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.io import atomic_open, write_json


class EmbeddingCache:
    """Embeddings of one (model, sample list) under ``root/embeddings/<key hash>/``."""

    def __init__(self, root: Path, key: dict[str, Any]) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.dir = root / "embeddings" / digest[:32]
        self.final = self.dir / "embeddings.npy"

    def load(self) -> np.ndarray | None:
        """The finished embeddings, or None when this key was never completed."""
        return np.load(self.final) if self.final.is_file() else None

    def chunk_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.npy"

    def load_chunk(self, index: int) -> np.ndarray | None:
        path = self.chunk_path(index)
        return np.load(path) if path.is_file() else None

    def save_chunk(self, index: int, array: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.chunk_path(index), "wb") as handle:
            np.save(handle, array)

    def finish(self, array: np.ndarray) -> None:
        """Write the full array and key, then drop the chunks."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "key.json", self.key)
        with atomic_open(self.final, "wb") as handle:
            np.save(handle, array)
        for chunk in self.dir.glob("chunk-*.npy"):
            chunk.unlink()
