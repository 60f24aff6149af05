"""The embedding cache: an artefact of the store (``meerbench.store``), resumable by row ranges.

The key covers everything the numbers depend on: model name, weights sha256, preprocessing
contract, the resolved precision and device type, the batch size (batch composition can change
reduced-precision results), the protocol's lists and the content hash of the exact images
embedded. Chunks saved while a run goes on are pieces named by the rows they hold, so a resumed
run with another chunk size reuses exactly the rows it can prove, and recomputes the rest.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.store import Artefact

FINAL = "embeddings.npy"
_ROWS = re.compile(r"rows-(\d{9})-(\d{9})\.npy")


def _to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class EmbeddingCache:
    """Embeddings of one (model, samples, settings) under ``home()/embeddings/<model>-<key>``."""

    def __init__(self, key: dict[str, Any], label: str = "") -> None:
        self.key = key
        self.artefact = Artefact("embeddings", key, label=label)

    def load(self) -> np.ndarray | None:
        """The finished embeddings, checked; None when never completed (or discarded as bad)."""
        if self.artefact.open() is None:
            return None
        return _from_bytes(self.artefact.read_bytes(FINAL))

    def saved_rows(self) -> dict[tuple[int, int], np.ndarray]:
        """Rows saved by earlier (interrupted) runs: (start, stop) -> float32 (stop-start, D)."""
        out = {}
        for name, data in self.artefact.pieces().items():
            match = _ROWS.fullmatch(name)
            if match is None:
                continue
            start, stop = int(match[1]), int(match[2])
            try:
                array = _from_bytes(data)
            except ValueError:
                continue
            if array.dtype == np.float32 and array.ndim == 2 and len(array) == stop - start:
                out[(start, stop)] = array
        return out

    def save_rows(self, start: int, array: np.ndarray) -> None:
        self.artefact.put_piece(f"rows-{start:09d}-{start + len(array):09d}.npy",
                                _to_bytes(array))

    def finish(self, array: np.ndarray, info: dict[str, Any]) -> None:
        """Record the full array (and ``info``: what produced it), then drop the pieces."""
        def fill(folder: Path) -> dict[str, Any]:
            (folder / FINAL).write_bytes(_to_bytes(array))
            return info

        self.artefact.build(fill)


def rows_from(saved: dict[tuple[int, int], np.ndarray], start: int, stop: int
              ) -> np.ndarray | None:
    """Rows ``start:stop`` assembled from saved row ranges, or None when any row is missing."""
    parts, at = [], start
    while at < stop:
        span = next(((a, b) for (a, b) in saved if a <= at < b), None)
        if span is None:
            return None
        end = min(span[1], stop)
        parts.append(saved[span][at - span[0]:end - span[0]])
        at = end
    return np.concatenate(parts) if parts else None
