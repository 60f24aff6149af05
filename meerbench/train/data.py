"""Training data: (masked, unmasked twin, occluder map) pairs held in memory as uint8 tensors.

The training protocol's images are decoded once, resized to the model's input size by the
FaceModel contract's own resize (``contract.resize_to``), rounded to uint8 and kept in an on-disk
cache (``$MEERBENCH_HOME/train-cache``) shared by every run with that input size. At 64x64 the
2,000-identity ``synthmask-train`` split (40,000 masked images and their 40,000 twins) is about
1 GB of images plus 0.16 GB of maps; the 112x112 originals would be 3 GB.

Batches are a pure function of (seed, step): each epoch is a seeded permutation of the training
pairs and a step takes the next ``batch_pairs`` positions of that stream, and flips are drawn from
a generator seeded by (seed, step). Resuming at step N therefore continues the same data order
with no sampler state to save. Batches are normalised by the trained network's contract
(``FaceModelCfg.preprocess``), the function every evaluation applies.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meerbench.data.dataset import Dataset
from meerbench.data.formats import open_dataset
from meerbench.data.images import read_mask, read_rgb
from meerbench.engine.distributed import rank_zero_first
from meerbench.errors import DatasetError
from meerbench.models.contract import FaceModelCfg, resize_to
from meerbench.models.meer import contract
from meerbench.protocol import load_protocol
from meerbench.store import Artefact
from meerbench.train.config import TrainConfig

CACHE_VERSION = 1


@dataclass
class PairTable:
    """Row i is one masked image, its unmasked twin and its map, with labels."""

    masked: np.ndarray  # (P,) index into images
    twin: np.ndarray  # (P,) index into images
    family: np.ndarray  # (P,) occluder-family class
    identity: np.ndarray  # (P,) identity index (0..I-1 over the sorted identities used)


@dataclass
class TrainData:
    dataset: Dataset  # the samples used (first ``identities`` identities)
    images: torch.Tensor  # (N, S, S, 3) uint8, row i = dataset.samples[i]
    maps: torch.Tensor  # (N, S, S) uint8 occluder coverage 0..255 (0 for unmasked samples)
    pairs: PairTable  # training pairs (held-out identities removed)
    classes: int  # training identities
    holdout: list[str]  # held-out identity names (validation only)
    contract: FaceModelCfg  # the trained network's preprocessing contract

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Cached uint8 (N, S, S, 3) rows -> the network's input (already at its size)."""
        return self.contract.preprocess(images, resize=False)


def load_train_data(cfg: TrainConfig, progress: bool = True) -> TrainData:
    """Open (generating if needed) the training protocol's data and build the pair tables."""
    proto = load_protocol(cfg.data.protocol)
    with rank_zero_first():
        dataset = open_dataset(proto.dataset, progress=progress)
    identities = sorted({s.identity for s in dataset.samples})
    if cfg.data.identities is not None:
        if cfg.data.identities > len(identities):
            raise DatasetError(f"{cfg.source}: data.identities={cfg.data.identities} but "
                               f"{proto.id} has {len(identities)} identities")
        identities = identities[:cfg.data.identities]
        keep = set(identities)
        dataset = Dataset(dataset.name, dataset.root,
                          [s for s in dataset.samples if s.identity in keep])
    n_hold = cfg.data.holdout_identities
    if n_hold >= len(identities) - 1:
        raise DatasetError(f"{cfg.source}: holdout_identities={n_hold} leaves no training "
                           f"identities out of {len(identities)}")
    train_ids, holdout = identities[:-n_hold], identities[-n_hold:]
    with rank_zero_first():
        images, maps = cached_arrays(dataset, cfg.arch.input_size, progress)
    label = {name: i for i, name in enumerate(train_ids)}
    families = {name: i for i, name in enumerate(cfg.arch.families)}
    rows = []
    for i, s in enumerate(dataset.samples):
        if s.masked and s.identity in label:
            if s.twin is None or s.mask_map is None:
                raise DatasetError(f"{s.path}: masked training images need a twin and a mask map")
            if s.mask_type not in families:
                raise DatasetError(f"{s.path}: occluder family {s.mask_type!r} is not one of "
                                   f"{', '.join(cfg.arch.families)}")
            twin_key = str(s.twin.relative_to(dataset.root))
            rows.append((i, dataset.index(twin_key), families[s.mask_type], label[s.identity]))
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    pairs = PairTable(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
    return TrainData(dataset, torch.from_numpy(images), torch.from_numpy(maps), pairs,
                     len(train_ids), holdout, contract(cfg.arch, cfg.flip_fusion))


def cached_arrays(dataset: Dataset, size: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images, maps) at ``size`` for every sample: a store artefact keyed by the content of the
    images, decoded and resized once."""
    artefact = Artefact("train-cache", {"version": CACHE_VERSION, "size": size,
                                        "content": dataset.content_hash()},
                        label=f"{dataset.name}-{size}")
    artefact.ensure(lambda folder: _decode_resized(dataset, size, progress, folder))
    return tuple(np.load(io.BytesIO(artefact.read_bytes(f"{name}.npy")), allow_pickle=False)
                 for name in ("images", "maps"))


def _decode_resized(dataset: Dataset, size: int, progress: bool, folder: Path) -> None:
    images = np.zeros((len(dataset.samples), size, size, 3), np.uint8)
    maps = np.zeros((len(dataset.samples), size, size), np.uint8)
    from tqdm.auto import tqdm

    block = 256
    for start in tqdm(range(0, len(dataset.samples), block), disable=not progress, unit="block",
                      desc=f"cache {dataset.name} at {size}px", leave=False):
        chunk = dataset.samples[start:start + block]
        rgb = torch.from_numpy(np.stack([read_rgb(s.path) for s in chunk]))
        images[start:start + len(chunk)] = resize_uint8(rgb.permute(0, 3, 1, 2), size).permute(
            0, 2, 3, 1).numpy()
        for j, s in enumerate(chunk):
            if s.masked and s.mask_map is not None:
                m = torch.from_numpy(read_mask(s.mask_map).astype(np.float32))[None, None] * 255
                maps[start + j] = resize_uint8(m, size)[0, 0].numpy()
    np.save(folder / "images.npy", images)
    np.save(folder / "maps.npy", maps)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) values 0..255 -> uint8 at size x size, by the contract's resize."""
    return resize_to(x.float(), (size, size)).round().clamp(0, 255).to(torch.uint8)


def step_indices(n_pairs: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Pair rows of optimizer step ``step``: positions [step*batch, (step+1)*batch) of a stream
    of per-epoch seeded permutations."""
    positions = np.arange(step * batch, (step + 1) * batch, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n_pairs)
    out = np.empty(batch, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = epoch_order(n_pairs, seed, int(epoch))[offsets[sel]]
    return out


@functools.lru_cache(maxsize=2)
def epoch_order(n_pairs: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's permutation, kept while its steps run (a batch spans at most two epochs)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_pairs)
    order.flags.writeable = False
    return order


@dataclass
class Batch:
    masked: torch.Tensor  # (B, 3, S, S) float, normalised to [-1, 1]
    unmasked: torch.Tensor  # (B, 3, S, S)
    maps: torch.Tensor  # (B, 1, S, S) float coverage in [0, 1]
    family: torch.Tensor  # (B,)
    label: torch.Tensor  # (B,)

    def to(self, device: torch.device, channels_last: bool) -> Batch:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return Batch(*(t.to(device, non_blocking=True).contiguous(memory_format=fmt)
                       if t.ndim == 4 else t.to(device, non_blocking=True)
                       for t in (self.masked, self.unmasked, self.maps, self.family, self.label)))


def make_batch(data: TrainData, rows: np.ndarray, flips: np.ndarray) -> Batch:
    """Gather pair ``rows``; ``flips`` (bool per row) mirrors image, twin and map together."""
    p = data.pairs
    masked = data.preprocess(data.images[p.masked[rows]])
    unmasked = data.preprocess(data.images[p.twin[rows]])
    maps = data.maps[p.masked[rows]].float().div(255).unsqueeze(1)
    flip = torch.from_numpy(flips)
    if flip.any():
        for t in (masked, unmasked, maps):
            t[flip] = t[flip].flip(3)
    return Batch(masked, unmasked, maps, torch.from_numpy(p.family[rows]),
                 torch.from_numpy(p.identity[rows]))


def step_flips(count: int, step: int, seed: int, enabled: bool) -> np.ndarray:
    if not enabled:
        return np.zeros(count, bool)
    return np.random.default_rng([seed, 1_000_003, step]).random(count) < 0.5


def holdout_dataset(data: TrainData) -> Dataset:
    """The held-out identities' samples (masked and twins), for validation pairs."""
    keep = set(data.holdout)
    return Dataset(f"{data.dataset.name}-holdout", data.dataset.root,
                   [s for s in data.dataset.samples if s.identity in keep])


def rows_of(data: TrainData, dataset: Dataset) -> np.ndarray:
    """Row of each sample of ``dataset`` (a subset) in ``data.images``."""
    return np.array([data.dataset.index(s.key) for s in dataset.samples], dtype=np.int64)
