"""torchrun support: process-group set-up from the environment and gathering of embedding chunks.

Each rank embeds the chunks ``c`` with ``c % world == rank``; chunks are gathered to every rank in
sample order, so nothing is padded or duplicated, and only rank 0 writes cache and result files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generating data into the cache), then the others."""
    rank, size = world()
    if size > 1 and rank != 0:
        dist.barrier()
    yield
    if size > 1 and rank == 0:
        dist.barrier()


def gather_chunks(mine: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Union of every rank's ``{chunk index: embeddings}``."""
    _, size = world()
    if size == 1:
        return mine
    parts: list[dict[int, np.ndarray] | None] = [None] * size
    dist.all_gather_object(parts, mine)
    merged: dict[int, np.ndarray] = {}
    for part in parts:
        merged.update(part or {})
    return merged
