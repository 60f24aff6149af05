"""Streaming training data: unmasked aligned faces read per sample, occluders drawn on the fly.

Sources: an insightface RecordIO set (``train.rec`` or its shards ``train-00000.rec``, ...,
read alike; protocols with format ``insightface-rec``), or the unmasked images of any other
dataset format (folder, CSV manifest, SynthFace split). A source holds only per-image index
arrays (record keys, offsets or paths, labels), never pixels, so memory does not grow with the
images' size or count beyond those arrays.

Every training sample is a pure function of (seed, epoch, index): the stream of per-epoch
seeded permutations of ``data.py`` (``step_indices``) picks the index; the occluder (family,
colours, pattern, geometry) and the flip are drawn from ``default_rng([mask seed, TAG, epoch,
index])``, and the occluder is rendered on the full-size aligned face at the ArcFace five-point
template (or the source's own landmarks). So a batch is the same bytes whatever the number of
DataLoader workers, ranks or restarts. The sample is (masked, unmasked twin = the original,
occluder map, family, identity), resized to the network's input by the contract's resize
(``data.resize_uint8``, as the in-memory cache does).

Validation uses the held-out identities (the last ``holdout_identities`` labels), up to
``mask.validation_images`` images each, masked once with a fixed seed and kept in memory as a
``TrainData`` so the ``Validator`` runs unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from meerbench.data.dataset import Dataset, Sample, labelled_unmasked
from meerbench.data.formats import open_dataset
from meerbench.data.formats.recordio import ABOUT, InsightfaceRecordSet
from meerbench.data.images import read_rgb
from meerbench.data.masking import template_landmarks
from meerbench.data.render.occluders import render_occluder, sample_occluder
from meerbench.engine.distributed import rank_zero_first
from meerbench.errors import DatasetError
from meerbench.models.meer import contract
from meerbench.protocol import load_protocol
from meerbench.settings import data_root
from meerbench.train.config import TrainConfig
from meerbench.train.data import Batch, PairTable, TrainData, epoch_order, resize_uint8

TAG = 0x6D61736B  # separates the occluder draws from every other use of the seed
BANK_TAG = 0x62616E6B  # the bank's own draws
VALIDATION_EPOCH = -1 & 0xFFFFFFFF  # the epoch number of the validation masks


class Source(Protocol):
    """Unmasked aligned faces by index: ``labels[i]`` is image i's identity (0..classes-1)."""

    labels: np.ndarray
    name: str
    image_size: int  # side of the (square) images, 0 when not known to be one square size

    def image(self, i: int) -> np.ndarray: ...

    def landmarks(self, i: int) -> np.ndarray | None: ...


class RecordSource:
    """An insightface RecordIO set; ``landmarks.npy`` beside it ((N, 5, 2) float, pixels, in
    image-record order) gives per-image landmarks, memory-mapped."""

    def __init__(self, root: Path, name: str) -> None:
        self.records = InsightfaceRecordSet(root)
        self.labels = self.records.labels
        self.name = name
        p = self.records.property
        self.image_size = p.height if p.height == p.width else 0
        path = root / "landmarks.npy"
        self._landmarks = np.load(path, mmap_mode="r") if path.is_file() else None
        if self._landmarks is not None and self._landmarks.shape != (len(self.labels), 5, 2):
            raise DatasetError(f"{path}: shape {self._landmarks.shape}, expected "
                               f"({len(self.labels)}, 5, 2) for the image records")

    def image(self, i: int) -> np.ndarray:
        return self.records.image(i)

    def landmarks(self, i: int) -> np.ndarray | None:
        return None if self._landmarks is None else np.asarray(self._landmarks[i], np.float64)


class FileSource:
    """The unmasked images of a ``Dataset`` (folder, manifest, SynthFace): paths and labels."""

    def __init__(self, dataset: Dataset) -> None:
        samples, labels = labelled_unmasked(dataset, "stream")
        self.paths = np.array([str(s.path) for s in samples])
        self.labels = np.array(labels, dtype=np.int32)
        self.name = dataset.name
        first = self.image(0).shape
        self.image_size = first[0] if first[0] == first[1] else 0  # the bank checks each image

    def image(self, i: int) -> np.ndarray:
        return read_rgb(Path(self.paths[i]))

    def landmarks(self, i: int) -> np.ndarray | None:
        return None


def open_source(cfg: TrainConfig, progress: bool) -> Source:
    """The training protocol's images as a ``Source`` (RecordIO sets by their own reader)."""
    proto = load_protocol(cfg.data.protocol)
    spec = proto.dataset
    if spec.format != "insightface-rec":
        with rank_zero_first():
            return FileSource(open_dataset(spec, cfg.data.root, progress=progress))
    root = data_root(spec.name, cfg.data.root)
    if root is None or not root.is_dir():
        where = root or f"data.root or $MEERBENCH_DATA/{spec.name}"
        raise DatasetError(f"Dataset '{spec.name}' ({proto.id}) not found at {where}. {ABOUT}")
    return RecordSource(root, spec.name)


BANK_VERSION = 1


@dataclass(frozen=True)
class OccluderBank:
    """``count`` occluders drawn from (mask seed, families) and rendered once at the template
    landmarks of a ``size`` x ``size`` aligned face, so that a training sample composites one
    instead of rendering it (a 112-px training sample: 0.3-0.4 ms of CPU instead of 1.1 ms).

    Each occluder is kept inside the bounding box of its map as its render on a black face
    (``colour``: the premultiplied paint) and the difference of its renders on a white and a
    black face (``through``: what shows of the face, 0..255 per channel). Compositing
    ``(colour * 255 + face * through + 127) // 255`` reproduces ``render_occluder`` on any face
    to within one grey level (its antialiased blend, read back from two renders), and leaves the
    face exactly unchanged outside the map."""

    size: int
    family: np.ndarray  # (K,) index into the families the bank was drawn from
    boxes: np.ndarray  # (K, 4) y0, y1, x0, x1
    offsets: np.ndarray  # (K + 1,) pixel offsets of each box in the flat buffers
    colour: np.ndarray  # (P, 3) uint8
    through: np.ndarray  # (P, 3) uint8
    cover: np.ndarray  # (P,) bool

    def apply(self, k: int, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masked copy of ``image``, bool occluder map) with occluder ``k``."""
        y0, y1, x0, x1 = (int(v) for v in self.boxes[k])
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        h, w = y1 - y0, x1 - x0
        mixed = image[y0:y1, x0:x1].astype(np.int32)
        mixed *= self.through[a:b].reshape(h, w, 3)
        mixed += self.colour[a:b].reshape(h, w, 3) * np.int32(255)
        mixed += 127
        mixed //= 255
        out = image.copy()
        out[y0:y1, x0:x1] = mixed
        occluder_map = np.zeros(image.shape[:2], bool)
        occluder_map[y0:y1, x0:x1] = self.cover[a:b].reshape(h, w)
        return out, occluder_map


def occluder_bank(seed: int, families: tuple[str, ...], size: int, count: int,
                  progress: bool) -> OccluderBank:
    """The bank of (seed, families, size, count): a store artefact, built once (keyed also by
    the occluder renderer's source, so a changed renderer builds a new bank)."""
    import io

    from meerbench.data.render import occluders
    from meerbench.io import sha256_file
    from meerbench.store import Artefact

    key = {"version": BANK_VERSION, "seed": seed, "families": list(families), "size": size,
           "count": count, "renderer": sha256_file(occluders.__file__)}
    artefact = Artefact("occluder-bank", key, label=f"{size}px-{count}")
    artefact.ensure(lambda folder: _build_bank(folder, seed, families, size, count, progress))
    arrays = np.load(io.BytesIO(artefact.read_bytes("bank.npz")), allow_pickle=False)
    return OccluderBank(size, *(arrays[n] for n in ("family", "boxes", "offsets", "colour",
                                                     "through", "cover")))


def _build_bank(folder: Path, seed: int, families: tuple[str, ...], size: int, count: int,
                progress: bool) -> None:
    from tqdm.auto import tqdm

    points = np.round(template_landmarks((size, size)), 3)
    black, white = np.zeros((size, size, 3), np.uint8), np.full((size, size, 3), 255, np.uint8)
    family, boxes, offsets = [], [], [0]
    colour, through, cover = [], [], []
    for k in tqdm(range(count), disable=not progress, unit="occluder", desc="occluder bank"):
        spec = sample_occluder(np.random.default_rng([seed, TAG, BANK_TAG, k]), families)
        on_black, occluder_map = render_occluder(black, points, spec)
        on_white, _ = render_occluder(white, points, spec)
        ys, xs = np.nonzero(occluder_map)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        family.append(families.index(spec.family))
        boxes.append((y0, y1, x0, x1))
        colour.append(on_black[y0:y1, x0:x1].reshape(-1, 3))
        shown = on_white[y0:y1, x0:x1].astype(np.int16) - on_black[y0:y1, x0:x1]
        through.append(np.clip(shown, 0, 255).astype(np.uint8).reshape(-1, 3))
        cover.append(occluder_map[y0:y1, x0:x1].reshape(-1))
        offsets.append(offsets[-1] + (y1 - y0) * (x1 - x0))
    np.savez(folder / "bank.npz", family=np.asarray(family, np.int16),
             boxes=np.asarray(boxes, np.int32), offsets=np.asarray(offsets, np.int64),
             colour=np.concatenate(colour), through=np.concatenate(through),
             cover=np.concatenate(cover))


@dataclass(frozen=True)
class Sampled:
    """One training sample as uint8 arrays at the network's input size."""

    masked: np.ndarray  # (S, S, 3)
    twin: np.ndarray  # (S, S, 3)
    coverage: np.ndarray  # (S, S) occluder coverage 0..255
    family: int
    label: int
    mirror: bool  # to be flipped left-right (done on the batch, after the transfer)


def draw_sample(source: Source, index: int, *, seed: int, epoch: int, families: tuple[str, ...],
                family_classes: tuple[str, ...], size: int, flip: bool,
                bank: OccluderBank | None = None) -> Sampled:
    """Image ``index`` of ``source`` with its occluder for (seed, epoch): a pure function. With
    a ``bank`` (drawn from the same families) a face at the template takes one of its
    occluders; faces with their own landmarks, or of another size, get a full render."""
    rng = np.random.default_rng([seed, TAG, epoch, index])
    image = source.image(index)
    points = source.landmarks(index)
    if bank is not None and points is None and image.shape[:2] == (bank.size, bank.size):
        k = int(rng.integers(len(bank.family)))
        masked, occluder_map = bank.apply(k, image)
        family = families[int(bank.family[k])]
    else:
        if points is None:
            points = template_landmarks(image.shape)
        occluder = sample_occluder(rng, families)
        masked, occluder_map = render_occluder(image, np.round(points, 3), occluder)
        family = occluder.family
    mirror = flip and bool(rng.random() < 0.5)
    arrays = [masked, image, occluder_map.astype(np.uint8) * 255]
    if image.shape[0] != size or image.shape[1] != size:
        rgb = torch.from_numpy(np.stack(arrays[:2])).permute(0, 3, 1, 2)
        small = resize_uint8(rgb, size).permute(0, 2, 3, 1).numpy()
        cover = resize_uint8(torch.from_numpy(arrays[2])[None, None], size)[0, 0].numpy()
        arrays = [small[0], small[1], cover]
    return Sampled(*arrays, family_classes.index(family), int(source.labels[index]), mirror)


class StreamSet(TorchDataset):
    """Map-style dataset over positions of the training stream (see ``data.step_indices``)."""

    def __init__(self, source: Source, train_index: np.ndarray, cfg: TrainConfig,
                 bank: OccluderBank | None) -> None:
        assert cfg.data.mask is not None
        self.source, self.train_index, self.cfg, self.bank = source, train_index, cfg, bank
        self.mask = cfg.data.mask

    def __len__(self) -> int:
        return len(self.train_index)

    def __getitem__(self, position: int) -> tuple[torch.Tensor | int | bool, ...]:
        cfg = self.cfg
        epoch, offset = divmod(int(position), len(self.train_index))
        index = int(self.train_index[epoch_order(len(self.train_index), cfg.seed, epoch)[offset]])
        s = draw_sample(self.source, index, seed=self.mask.seed, epoch=epoch,
                        families=self.mask.families, family_classes=cfg.arch.families,
                        size=cfg.arch.input_size, flip=cfg.data.flip, bank=self.bank)
        return (torch.from_numpy(s.masked), torch.from_numpy(s.twin),
                torch.from_numpy(s.coverage), s.family, s.label, s.mirror)  # collated as tensors


class StepSampler(Sampler[list[int]]):
    """This rank's micro-batches of stream positions, step after step from ``start``: step s
    covers positions [s*B, (s+1)*B) cut into world x accumulate equal chunks."""

    def __init__(self, cfg: TrainConfig, start: int, rank: int, world: int) -> None:
        self.cfg, self.start, self.rank, self.world = cfg, start, rank, world

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.optim.accumulate

    def __iter__(self) -> Iterator[list[int]]:
        o = self.cfg.optim
        micro = o.batch_pairs // (self.world * o.accumulate)
        for step in range(self.start, self.cfg.steps):
            for a in range(o.accumulate):
                first = step * o.batch_pairs + (self.rank * o.accumulate + a) * micro
                yield list(range(first, first + micro))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class Stream:
    """The streaming pipeline of one run: ``batches(start)`` yields this rank's micro-batches
    as ``Batch`` on the device, and ``wait`` adds up the seconds spent waiting for them."""

    def __init__(self, cfg: TrainConfig, source: Source, train_index: np.ndarray,
                 device: torch.device, rank: int, world: int, bank: OccluderBank | None) -> None:
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.dataset = StreamSet(source, train_index, cfg, bank)
        self.contract = contract(cfg.arch, cfg.flip_fusion)
        self.wait = 0.0

    def loader(self, start: int) -> DataLoader:
        lc = self.cfg.data.loader
        workers = lc.workers
        return DataLoader(
            self.dataset, batch_sampler=StepSampler(self.cfg, start, self.rank, self.world),
            num_workers=workers, pin_memory=lc.pin_memory and self.device.type == "cuda",
            prefetch_factor=lc.prefetch if workers else None, worker_init_fn=_worker_init,
            generator=torch.Generator(),  # the global RNG is left alone (exact resume)
            persistent_workers=False)

    def batches(self, start: int) -> Iterator[Batch]:
        iterator = iter(self.loader(start))
        while True:
            t0 = time.perf_counter()
            try:
                rows = next(iterator)
            except StopIteration:
                return
            batch = self.to_batch(*rows)
            self.wait += time.perf_counter() - t0
            yield batch

    def to_batch(self, masked: torch.Tensor, twin: torch.Tensor, coverage: torch.Tensor,
                 family: torch.Tensor, label: torch.Tensor, mirror: torch.Tensor) -> Batch:
        """uint8 rows -> the network's inputs on the device (normalised and mirrored there)."""
        d = self.device
        pre = self.contract.preprocess
        images = [pre(masked.to(d, non_blocking=True), resize=False),
                  pre(twin.to(d, non_blocking=True), resize=False),
                  coverage.to(d, non_blocking=True).float().div(255).unsqueeze(1)]
        flip = mirror.to(d)
        if bool(mirror.any()):
            for t in images:
                t[flip] = t[flip].flip(3)
        return Batch(*images, family.to(d), label.to(d)).to(d, self.cfg.runtime.channels_last)


def load_stream_data(cfg: TrainConfig, device: torch.device, rank: int, world: int,
                     progress: bool) -> tuple[TrainData, Stream]:
    """The streaming source split into training and held-out identities, the validation data
    of the held-out identities (in memory, small) and the training ``Stream``."""
    mask = cfg.data.mask
    assert mask is not None
    source = open_source(cfg, progress)
    labels = source.labels
    classes = int(labels.max()) + 1
    if cfg.data.identities is not None:
        if cfg.data.identities > classes:
            raise DatasetError(f"{cfg.source}: data.identities={cfg.data.identities} but "
                               f"{source.name} has {classes} identities")
        classes = cfg.data.identities
    n_hold = cfg.data.holdout_identities
    if n_hold >= classes - 1:
        raise DatasetError(f"{cfg.source}: holdout_identities={n_hold} leaves no training "
                           f"identities out of {classes}")
    n_train = classes - n_hold
    train_index = np.flatnonzero(labels < n_train).astype(np.int64)
    holdout = _holdout_data(cfg, source, n_train, classes)
    data = TrainData(holdout[0], holdout[1], holdout[2], PairTable(*(np.zeros(0, np.int64),) * 4),
                     n_train, holdout[3], contract(cfg.arch, cfg.flip_fusion))
    bank = None
    if mask.bank and source.image_size:
        with rank_zero_first():
            bank = occluder_bank(mask.seed, mask.families, source.image_size, mask.bank,
                                 progress)
    return data, Stream(cfg, source, train_index, device, rank, world, bank)


def _holdout_data(cfg: TrainConfig, source: Source, first: int, end: int
                  ) -> tuple[Dataset, torch.Tensor, torch.Tensor, list[str]]:
    """Validation images of labels first..end-1: each unmasked and masked once (fixed seed)."""
    assert cfg.data.mask is not None
    per = cfg.data.mask.validation_images
    root = Path(f"<{source.name}>")
    held = np.flatnonzero((source.labels >= first) & (source.labels < end))
    held = held[np.argsort(source.labels[held], kind="stable")]  # by label, then index
    labels = source.labels[held]
    rank = np.arange(len(held)) - np.searchsorted(labels, labels)  # position within its label
    chosen = held[rank < per].tolist()
    samples, drawn = [], {}
    names = [f"{label:07d}" for label in range(first, end)]
    for index in chosen:
        s = draw_sample(source, index, seed=cfg.validation.seed, epoch=VALIDATION_EPOCH,
                        families=cfg.data.mask.families, family_classes=cfg.arch.families,
                        size=cfg.arch.input_size, flip=False)
        name = names[s.label - first]
        twin_key, masked_key = f"{name}/{index:09d}.png", f"{name}/{index:09d}-masked.png"
        family = cfg.arch.families[s.family]
        samples += [Sample(twin_key, root / twin_key, name),
                    Sample(masked_key, root / masked_key, name, masked=True, mask_type=family,
                           twin=root / twin_key, mask_map=root / f"{masked_key}.map")]
        drawn[twin_key], drawn[masked_key] = (s.twin, None), (s.masked, s.coverage)
    dataset = Dataset(source.name, root, samples)
    size = cfg.arch.input_size
    images = np.zeros((len(samples), size, size, 3), np.uint8)
    maps = np.zeros((len(samples), size, size), np.uint8)
    for i, s in enumerate(dataset.samples):
        image, cover = drawn[s.key]
        images[i] = image
        if cover is not None:
            maps[i] = cover
    return dataset, torch.from_numpy(images), torch.from_numpy(maps), names


def loader_throughput(config_path: str | Path, steps: int, progress: bool = True
                      ) -> dict[str, float]:
    """Images per second of a config's streaming loader alone (no model), over ``steps``
    optimizer steps after the first (workers starting up), in one process: what one GPU
    process's workers deliver."""
    from meerbench.errors import ConfigError
    from meerbench.train.config import load_config

    cfg = load_config(config_path)
    if not cfg.data.streaming:
        raise ConfigError(f"{cfg.source}: no data.mask, so no streaming loader to measure")
    _, stream = load_stream_data(cfg, torch.device("cpu"), 0, 1, progress)
    per_step = cfg.optim.accumulate
    batches = stream.loader(0)
    start = time.perf_counter()
    for n, _ in enumerate(batches, 1):
        if n == per_step:
            start = time.perf_counter()  # after the first step: workers are running
        if n == per_step * (steps + 1):
            break
    seconds = time.perf_counter() - start
    images = steps * cfg.optim.batch_pairs
    workers = max(cfg.data.loader.workers, 1)
    return {"samples": images, "seconds": seconds, "samples_per_s": images / seconds,
            "workers": cfg.data.loader.workers, "samples_per_s_per_worker":
            images / seconds / workers}
