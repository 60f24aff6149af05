"""Cross-process accumulation for streaming metric states (torchmetrics-style "cat" sync).

Each process keeps its own list of updates; at ``compute`` time the lists of all ranks are
gathered in rank order and concatenated, so a state fed contiguous shards gives exactly the
one-shot numbers. Outside ``torch.distributed`` this is the identity.
"""

from __future__ import annotations

import sys
from typing import Any


def gather_updates(parts: list[Any]) -> list[Any]:
    """Every rank's ``parts``, rank 0 first (only when a process group is initialised)."""
    dist = _initialised_dist()
    if dist is None:
        return parts
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, parts)
    return [part for rank_parts in gathered for part in (rank_parts or [])]


def _initialised_dist() -> Any:
    if "torch" not in sys.modules:  # never import torch just to learn it is not in use
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None
