"""Batched embedding: decode, preprocess per contract, forward, flip-fuse, normalise, cache.

On CPU, convolutional models run channels_last under bf16 autocast (``precision="auto"``); the
precision used is returned so the Result can record it. Work is cut into chunks that are saved
atomically, so an interrupted run resumes from the last finished chunk. Under torchrun each rank
embeds every ``world``-th chunk and all ranks end with the full array (see ``distributed``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from meerbench.data.dataset import Sample
from meerbench.data.images import read_mask, read_rgb
from meerbench.engine.cache import EmbeddingCache, rows_from
from meerbench.engine.distributed import gather_chunks, world
from meerbench.errors import ConfigError, ModelError
from meerbench.models.base import FaceModel
from meerbench.settings import PRECISIONS


class FileImages(torch.utils.data.Dataset):
    """Decoded uint8 RGB images of samples, resized to ``frame`` when they differ."""

    def __init__(self, samples: Sequence[Sample], frame: tuple[int, int]) -> None:
        self.samples = samples
        self.frame = frame

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = read_rgb(self.samples[index].path)
        if image.shape[:2] != self.frame:
            resized = Image.fromarray(image).resize(self.frame[::-1], Image.Resampling.BILINEAR)
            image = np.asarray(resized)
        return torch.from_numpy(np.ascontiguousarray(image))


class RestoredImages(FileImages):
    """Masked samples restored by ``model.restore`` (with their occluder map when known) before
    they are embedded: the input side of a restore-then-recognize model."""

    def __init__(self, samples: Sequence[Sample], frame: tuple[int, int], model: FaceModel) -> None:
        super().__init__(samples, frame)
        self.model = model

    def __getitem__(self, index: int) -> torch.Tensor:
        image = super().__getitem__(index)
        sample = self.samples[index]
        if not sample.masked:
            return image
        mask = read_mask(sample.mask_map)[None] if sample.mask_map is not None else None
        return torch.from_numpy(self.model.restore(image.numpy()[None], mask)[0])


class ArrayImages(torch.utils.data.Dataset):
    """Images already in memory as a uint8 (N, H, W, 3) tensor."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


@dataclass(frozen=True)
class EmbedOutput:
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    seconds: float
    cache_hit: bool
    precision: str
    device: str


def auto_precision(device: torch.device) -> str:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16.

    Not bf16 on CPU: its kernels round differently on different processors, so the same model
    gave numbers up to 0.2 points apart on two machines (an AMD EPYC and an Intel Xeon with
    AMX-BF16; docs/protocols.md), and a benchmark's CPU numbers must not depend on the machine.
    ``--precision bf16`` still asks for it."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_precision(model: FaceModel, device: torch.device, precision: str) -> str:
    """``precision`` as given; "auto" is fp32 for models that opt out of reduced precision."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return auto_precision(device) if model.accelerate else "fp32"


def forward_batch(model: FaceModel, images: torch.Tensor, device: torch.device, precision: str
                  ) -> torch.Tensor:
    """One preprocessed, flip-fused, L2-normalised embedding batch (float32 on CPU)."""
    x = model.cfg.preprocess(images.to(device, non_blocking=True))
    if model.accelerate:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        emb = model.forward(x).float()
        if model.cfg.flip_fusion != "none":
            flipped = model.forward(x.flip(3)).float()
            emb = emb + flipped if model.cfg.flip_fusion == "sum" else torch.cat([emb, flipped], 1)
    return torch.nn.functional.normalize(emb, dim=1).cpu()


def embed(
    model: FaceModel,
    images: torch.utils.data.Dataset,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    chunk_size: int = 2048,
    progress: bool = True,
) -> EmbedOutput:
    """Embed every image of ``images`` in order; resume from rows ``cache`` saved earlier.

    ``cache`` must be keyed by the resolved precision, the device type and ``batch_size`` (see
    ``embedding_key``). Batches are always rows ``[k * batch_size, (k + 1) * batch_size)``, whatever
    the chunk size, so rows saved under another chunk size are the same numbers and are reused.
    """
    device = torch.device(device)
    precision = resolve_precision(model, device, precision)
    start = time.perf_counter()
    if cache is not None and (done := cache.load()) is not None:
        return EmbedOutput(done, time.perf_counter() - start, True, precision, str(device))
    model.to(device)
    if model.accelerate and device.type == "cuda":
        getattr(model, "net", torch.nn.Identity()).to(memory_format=torch.channels_last)
    n = len(images)
    chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    n_chunks = -(-n // chunk_size)
    rank, size = world()
    saved = cache.saved_rows() if cache is not None else {}
    done = {c: arr for c in range(n_chunks)
            if (arr := rows_from(saved, c * chunk_size, min((c + 1) * chunk_size, n))) is not None}
    mine = [c for c in range(n_chunks) if c not in done and c % size == rank]
    batches = [
        list(range(b, min(b + batch_size, (c + 1) * chunk_size, n)))
        for c in mine for b in range(c * chunk_size, min((c + 1) * chunk_size, n), batch_size)
    ]
    loader = DataLoader(images, batch_sampler=batches, num_workers=workers,
                        pin_memory=device.type == "cuda")
    bar = _progress(sum(len(b) for b in batches), progress and rank == 0, model.name)
    computed: dict[int, np.ndarray] = {}
    pending: list[torch.Tensor] = []
    for batch_indices, batch in zip(batches, loader, strict=True):
        pending.append(check_width(model, forward_batch(model, batch, device, precision)))
        bar.update(len(batch_indices))
        end = batch_indices[-1] + 1
        if end % chunk_size == 0 or end == n:
            c = batch_indices[-1] // chunk_size
            computed[c] = torch.cat(pending).numpy()
            pending = []
            if cache is not None and size == 1:
                cache.save_rows(c * chunk_size, computed[c])
    bar.close()
    computed = gather_chunks(computed)
    if cache is not None and size > 1 and rank == 0:
        for c, arr in computed.items():
            cache.save_rows(c * chunk_size, arr)
    done.update(computed)
    out = (np.concatenate([done[c] for c in range(n_chunks)]) if n
           else np.zeros((0, 0), np.float32))
    if cache is not None and rank == 0:
        cache.finish(out, {"rows": n, "precision": precision, "device": str(device)})
    return EmbedOutput(out, time.perf_counter() - start, False, precision, str(device))


def embedding_width(model: FaceModel) -> int:
    """The width the contract promises: ``embedding_dim``, doubled by concatenated flips."""
    return model.cfg.embedding_dim * (2 if model.cfg.flip_fusion == "concat" else 1)


def check_width(model: FaceModel, emb: torch.Tensor) -> torch.Tensor:
    """``emb`` when its width is the contract's; a ModelError naming both otherwise."""
    if emb.ndim != 2 or emb.shape[1] != embedding_width(model):
        raise ModelError(
            f"Model {model.name} produced embeddings of shape {tuple(emb.shape)}, but its card "
            f"promises {embedding_width(model)}-d (embedding_dim={model.cfg.embedding_dim}, "
            f"flip_fusion={model.cfg.flip_fusion}); fix the card's embedding_dim.")
    return emb


def _progress(total: int, enabled: bool, name: str):  # noqa: ANN202 - tqdm type is private
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled or total == 0, unit="img", desc=f"embed {name}",
                leave=False)
