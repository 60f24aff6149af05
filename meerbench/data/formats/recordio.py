"""insightface training sets in MXNet RecordIO, read and written without mxnet.

A set is a folder with ``train.rec`` (the records), ``train.idx`` (one ``key<TAB>offset`` line
per record) and ``property`` (``num_classes,height,width``), as insightface distributes
CASIA-WebFace, MS1MV2/V3 and Glint360K. A sharded set holds the same records cut into
consecutive runs, ``train-00000.rec``/``.idx``, ``train-00001.rec``/``.idx``, ... (numbered from
0, no gaps), with one ``property``: keys are global (shard 0 starts with record 0), each
``.idx`` lists its own records' keys with offsets into its own ``.rec``, so the shards' ``.rec``
files concatenated are the single ``train.rec``. It reads exactly as the single file does.

Framing (dmlc-core ``RecordIOWriter``): each record is the little-endian uint32 magic
``0xced7230a``, a uint32 ``lrec`` whose top 3 bits are the continuation flag and low 29 bits the
length, the data, and zero padding to a multiple of 4 bytes. Where the data holds the magic at a
4-byte-aligned offset the writer cuts it there (dropping those 4 bytes) into parts flagged
1 (first), 2 (middle), 3 (last); a whole record has flag 0. The reader joins the parts with the
magic between them.

Payload (``mxnet.recordio.pack``): an ``IRHeader`` packed as ``<IfQQ`` (flag, label, id, id2,
24 bytes); when ``flag > 0`` the label is instead ``flag`` float32 values following the header.
Then the image bytes (JPEG in insightface's sets; PNG decodes the same way).

insightface's identity index: record 0 is a header whose label is ``(a, b)``: the images are
records ``1 .. a-1`` and records ``a .. b-1`` are one per identity, each labelled
``(first, end)``, the image records of that identity. Sets without that header are supported by
reading every image record's label.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from meerbench.data.dataset import Dataset, labelled_unmasked
from meerbench.errors import DatasetError
from meerbench.io import write_text

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
REC, IDX, PROPERTY = "train.rec", "train.idx", "property"
_SHARD = re.compile(r"train-([0-9]{5,})\.rec")
OPEN_SHARDS = 32  # file handles a process keeps open at most (a set may have thousands of shards)
ABOUT = ("Expected layout: <root>/train.rec, train.idx and property ('num_classes,112,112'), "
         "the insightface RecordIO training set (https://github.com/deepinsight/insightface/tree/"
         "master/recognition/_datasets_), or shards train-00000.rec/.idx, train-00001.rec/.idx, "
         "... with one property; or pack a folder of aligned faces with "
         "`meerbench pack SRC --out DIR [--shard-size N]`.")


def shard_name(n: int, suffix: str = ".rec") -> str:
    """File name of shard ``n`` of a sharded set (``.rec`` or ``.idx``)."""
    return f"train-{n:05d}{suffix}"


def record_files(root: Path) -> list[tuple[Path, Path]]:
    """The (``.rec``, ``.idx``) pairs of the set in ``root``: ``train.rec`` alone, or its shards
    in order (a missing shard, or both layouts in one folder, is an error)."""
    shards = sorted((int(m.group(1)), p) for p in root.glob("train-*.rec")
                    if (m := _SHARD.fullmatch(p.name)))
    if (root / REC).is_file():
        if shards:
            raise DatasetError(f"{root}: both {REC} and shards ({shards[0][1].name}, ...); "
                               f"keep one layout per folder")
        return [(root / REC, root / IDX)]
    if not shards:
        raise DatasetError(f"{root / REC} not found, nor shards {shard_name(0)}, ... {ABOUT}")
    for n, (number, path) in enumerate(shards):
        if number != n:
            raise DatasetError(f"{root / shard_name(n)} not found: the shards must be numbered "
                               f"from 0 without gaps (next found: {path.name})")
    return [(path, path.with_suffix(".idx")) for _, path in shards]


@dataclass(frozen=True)
class IRHeader:
    """mxnet's image-record header: ``label`` is a float if ``flag`` is 0, else ``flag`` floats."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int

    @property
    def first_label(self) -> float:
        return self.label if isinstance(self.label, float) else self.label[0]


def pack(header: IRHeader, payload: bytes) -> bytes:
    """Header (+ label array) + payload, as ``mxnet.recordio.pack``."""
    if isinstance(header.label, float):
        return struct.pack(IR_FORMAT, 0, header.label, header.id, header.id2) + payload
    labels = np.asarray(header.label, dtype="<f4")
    return (struct.pack(IR_FORMAT, len(labels), 0.0, header.id, header.id2) + labels.tobytes()
            + payload)


def unpack(data: bytes, where: str) -> tuple[IRHeader, bytes]:
    """Inverse of ``pack``; ``where`` (file and record) names a malformed record."""
    if len(data) < IR_SIZE:
        raise DatasetError(f"{where}: {len(data)} bytes, shorter than its {IR_SIZE}-byte header")
    flag, label, rid, rid2 = struct.unpack_from(IR_FORMAT, data)
    if flag == 0:
        return IRHeader(0, float(label), rid, rid2), data[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if end > len(data):
        raise DatasetError(f"{where}: header says {flag} labels but the record holds "
                           f"{len(data)} bytes")
    labels = tuple(float(x) for x in np.frombuffer(data, "<f4", flag, IR_SIZE))
    return IRHeader(flag, labels, rid, rid2), data[end:]


def frame(data: bytes) -> bytes:
    """One record as the dmlc writer frames it (split where the magic occurs, padded)."""
    parts, start = [], 0
    pos = data.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:  # the dmlc writer looks at 4-byte-aligned words only
            parts.append((1 if start == 0 else 2, data[start:pos]))
            start = pos + 4
            pos = data.find(_MAGIC_BYTES, start)
        else:
            pos = data.find(_MAGIC_BYTES, pos + 1)
    parts.append((0 if start == 0 else 3, data[start:]))
    out = bytearray()
    for flag, part in parts:
        out += struct.pack("<II", MAGIC, (flag << 29) | len(part))
        out += part + b"\0" * (-len(part) % 4)
    return bytes(out)


class RecordFile:
    """Random access by key to the records of one ``.rec`` file or of a set's shards.

    Offsets come from each ``.idx`` file, or from one scan of its ``.rec`` when it is missing
    (keys then numbered on from the previous shards' records, as the writer numbers them); held
    in memory, 18 bytes per record. File handles are opened per process (at most
    ``OPEN_SHARDS`` at once), so one object can be handed to DataLoader workers.
    """

    def __init__(self, files: list[tuple[Path, Path | None]]) -> None:
        self.recs = [rec for rec, _ in files]
        keys, offsets, shards, scanned = [], [], [], 0
        for n, (rec, idx) in enumerate(files):
            if not rec.is_file():
                raise DatasetError(f"{rec} not found. {ABOUT}")
            if idx is not None and idx.is_file():
                k, o = _read_idx(idx)
            else:
                k, o = scan_offsets(rec, sum(len(x) for x in keys))
                scanned += 1
            keys.append(k)
            offsets.append(o)
            shards.append(np.full(len(k), n, np.uint16 if len(files) < 1 << 16 else np.uint32))
        self.keys, self.offsets, self.shards = (np.concatenate(a) for a in (keys, offsets, shards))
        order = np.argsort(self.keys, kind="stable")
        self.keys, self.offsets, self.shards = (a[order] for a in (self.keys, self.offsets,
                                                                     self.shards))
        if len(self.keys) and (twice := np.flatnonzero(self.keys[1:] == self.keys[:-1])).size:
            i = int(twice[0])
            raise DatasetError(f"record {int(self.keys[i])} is indexed twice: in "
                               f"{self.recs[self.shards[i]]} and {self.recs[self.shards[i + 1]]}")
        self.sizes = [rec.stat().st_size for rec in self.recs]
        self.name = str(self.recs[0] if len(files) == 1 else self.recs[0].parent)
        if len(files) == 1:
            self.index_source = "scan" if scanned else str(files[0][1])
        else:
            self.index_source = f"{len(files)} shards' .idx files, {scanned} shards scanned"
        self._handles: dict[int, BinaryIO] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_handles": {}, "_pid": -1}

    def where(self, key: int) -> str:
        """``<its .rec file>: record <key>``, for messages."""
        i = int(np.searchsorted(self.keys, key))
        found = i < len(self.keys) and self.keys[i] == key
        return f"{self.recs[self.shards[i]] if found else self.name}: record {key}"

    def _seek(self, key: int) -> tuple[BinaryIO, int]:
        """The handle of ``key``'s file, at the record; and that file's size."""
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            raise DatasetError(f"{self.name}: no record {key} in its index "
                               f"({self.index_source})")
        shard = int(self.shards[i])
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.pop(shard, None)
        if handle is None:
            if len(self._handles) >= OPEN_SHARDS:
                self._handles.pop(next(iter(self._handles))).close()  # least recently used
            handle = open(self.recs[shard], "rb")  # noqa: SIM115 (held for random reads)
        self._handles[shard] = handle  # most recently used last
        handle.seek(int(self.offsets[i]))
        return handle, self.sizes[shard]

    def read(self, key: int) -> bytes:
        """The data of record ``key`` (parts joined)."""
        handle, size = self._seek(key)
        return read_framed(handle, self.where(key), size)

    def record(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack(self.read(key), self.where(key))

    def header(self, key: int) -> tuple[IRHeader, int]:
        """(IRHeader, data length) of record ``key`` from its first bytes only (a record split
        by the dmlc writer is read whole)."""
        handle, size = self._seek(key)
        start = handle.tell()
        head = handle.read(8 + IR_SIZE + 8)
        if len(head) >= 8:
            magic, lrec = struct.unpack_from("<II", head)
            length = lrec & _LENGTH_MASK
            if magic == MAGIC and lrec >> 29 == 0 and len(head) >= 8 + min(length, IR_SIZE + 8):
                return unpack(head[8:8 + min(length, IR_SIZE + 8)], self.where(key))[0], length
        handle.seek(start)
        data = read_framed(handle, self.where(key), size)
        return unpack(data, self.where(key))[0], len(data)


def read_framed(handle: BinaryIO, where: str, size: int) -> bytes:
    """Read one framed record at the handle's position; errors name ``where``."""
    out = bytearray()
    while True:
        start = handle.tell()
        head = handle.read(8)
        if len(head) < 8:
            raise DatasetError(f"{where}: truncated at byte {start} (file size {size})")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DatasetError(f"{where}: corrupted, no RecordIO magic at byte {start} "
                               f"(found {magic:#010x})")
        flag, length = lrec >> 29, lrec & _LENGTH_MASK
        if flag not in ((2, 3) if out else (0, 1)):
            raise DatasetError(f"{where}: corrupted, continuation flag {flag} at byte {start}")
        if start + 8 + length > size:
            raise DatasetError(f"{where}: corrupted, length {length} at byte {start} runs past "
                               f"the end of the file ({size} bytes)")
        if flag in (2, 3):
            out += _MAGIC_BYTES
        out += handle.read(length)
        handle.seek(-length % 4, io.SEEK_CUR)
        if flag in (0, 3):
            return bytes(out)


def scan_offsets(rec: Path, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) of every record by walking the framing; key ``first + i`` is the i-th
    record, as ``im2rec`` numbers them when it writes no ``.idx`` (``first``: the records of
    the shards before this one)."""
    size = rec.stat().st_size
    offsets = []
    with open(rec, "rb") as handle:
        while handle.tell() < size:
            offsets.append(handle.tell())
            read_framed(handle, f"{rec}: record {first + len(offsets) - 1}", size)
    return np.arange(first, first + len(offsets), dtype=np.int64), np.asarray(offsets, np.int64)


_IDX_LINES = re.compile(rb"(?:[0-9]+\t[0-9]+\r?\n)*(?:[0-9]+\t[0-9]+\r?\n?)?")


def _read_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) of a ``key<TAB>offset`` file, checked by one regular expression and
    parsed by numpy (no Python object per line: MS1M's index has 5 M lines); a malformed line
    is named by number."""
    data = path.read_bytes()
    if _IDX_LINES.fullmatch(data):
        pairs = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ").reshape(-1, 2)
        return pairs[:, 0].copy(), pairs[:, 1].copy()
    for n, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        if not _IDX_LINES.fullmatch(line.encode() + b"\n"):
            raise DatasetError(f"{path}:{n}: expected 'key<TAB>offset', got {line[:60]!r}")
    raise DatasetError(f"{path}: expected 'key<TAB>offset' lines")


class RecordWriter:
    """Writes records into ``.rec`` + ``.idx`` pairs as ``MXIndexedRecordIO`` does: ``train.rec``
    or, after each ``next_shard``, the next shard. The files are written in a staging folder
    inside ``out`` and moved into place when the block succeeds, replacing the files of an
    earlier set there (its other layout and surplus shards are removed); a failed block leaves
    ``out`` as it was."""

    def __init__(self, out: Path, sharded: bool) -> None:
        self.out, self.sharded = out, sharded
        self.stage = Path(tempfile.mkdtemp(prefix=".pack-", dir=out))
        self.names: list[str] = []
        self._rec: BinaryIO | None = None
        self._idx: TextIO | None = None
        self.next_shard()

    def next_shard(self) -> None:
        """Close the current pair and start the next shard (or ``train.rec``, the first time
        for an unsharded set)."""
        assert self.sharded or not self.names, "an unsharded set has one file"
        self._close()
        n = len(self.names) // 2
        names = [shard_name(n), shard_name(n, ".idx")] if self.sharded else [REC, IDX]
        self.names += names
        self._rec = open(self.stage / names[0], "wb")  # noqa: SIM115 (closed in _close)
        self._idx = open(self.stage / names[1], "w", encoding="ascii")  # noqa: SIM115

    def write(self, key: int, data: bytes) -> None:
        assert self._rec is not None and self._idx is not None
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(frame(data))

    def rewrite_first(self, data: bytes) -> None:
        """Replace record 0 (at the start of the first file) by ``data`` of the same framed
        length: the header record, once the counts are known."""
        self._close()
        with open(self.stage / self.names[0], "r+b") as handle:
            handle.write(frame(data))

    def _close(self) -> None:
        for handle in (self._rec, self._idx):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
        self._rec = self._idx = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            self._close()
            if kind is None:
                for name in self.names:
                    os.replace(self.stage / name, self.out / name)
                for old in list(_any_layout_files(self.out)):
                    if old.name not in self.names:
                        old.unlink()
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)


def _any_layout_files(root: Path) -> Iterator[Path]:
    """The record files of either layout in ``root``."""
    for path in root.iterdir():
        if path.name in (REC, IDX) or (path.suffix in (".rec", ".idx")
                                       and _SHARD.fullmatch(path.with_suffix(".rec").name)):
            yield path


@dataclass(frozen=True)
class Property:
    classes: int
    height: int
    width: int


def read_property(path: Path) -> Property:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc.strerror}. {ABOUT}") from None
    try:
        classes, height, width = (int(x) for x in text.split(","))
    except ValueError:
        raise DatasetError(f"{path}: expected 'num_classes,height,width', got {text[:60]!r}"
                           ) from None
    return Property(classes, height, width)


class InsightfaceRecordSet:
    """One insightface RecordIO training set: image records, their identity labels, decoding."""

    def __init__(self, root: Path) -> None:
        self.root = root
        files = record_files(root)
        if not (root / PROPERTY).is_file():
            raise DatasetError(f"{root / PROPERTY} not found. {ABOUT}")
        self.property = read_property(root / PROPERTY)
        self.file = RecordFile(files)  # type: ignore[arg-type]
        self.keys, self.labels = self._image_labels()
        if len(self.keys) == 0:
            raise DatasetError(f"{self.file.name}: no image records. {ABOUT}")
        top = int(self.labels.max())
        if self.labels.min() < 0 or top >= self.property.classes:
            raise DatasetError(f"{root / PROPERTY}: {self.property.classes} classes but image "
                               f"labels run from {int(self.labels.min())} to {top}")

    def __len__(self) -> int:
        return len(self.keys)

    def _image_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(image record keys, int32 identity label of each), from the identity index when
        record 0 is insightface's header (two labels, no image), else from every record's own
        label (also when the header's float32 counts are inexact: 2^24 records or more)."""
        f = self.file
        head, length = f.header(0) if len(f) and f.keys[0] == 0 else (None, 0)
        exact = head is not None and head.flag >= 2 and head.label[1] < 1 << 24  # type: ignore
        if head is not None and exact and length == IR_SIZE + 4 * head.flag:
            a, b = int(head.label[0]), int(head.label[1])  # type: ignore[index]
            keys = np.arange(1, a, dtype=np.int64)
            labels = np.full(len(keys), -1, np.int32)
            for n, key in enumerate(range(a, b)):
                rng = f.header(key)[0]
                if rng.flag < 2:
                    raise DatasetError(f"{f.where(key)}: identity record without a "
                                       f"(first, end) label")
                first, end = int(rng.label[0]), int(rng.label[1])  # type: ignore[index]
                if not 1 <= first <= end <= a:
                    raise DatasetError(f"{f.where(key)}: identity range ({first}, {end}) "
                                       f"outside the image records 1..{a - 1}")
                labels[first - 1:end - 1] = n
            if (labels < 0).any():
                missing = int(keys[np.argmax(labels < 0)])
                raise DatasetError(f"{f.where(missing)} belongs to no identity record")
            return keys, labels
        keys, labels = [], []
        for k in f.keys.tolist():
            header, length = f.header(k)
            if header.flag >= 2 and length == IR_SIZE + 4 * header.flag:
                continue  # the header record or an identity record: labels, no image
            keys.append(k)
            labels.append(int(header.first_label))
        return np.asarray(keys, np.int64), np.asarray(labels, np.int32)

    def image(self, i: int) -> np.ndarray:
        """Decoded RGB uint8 (H, W, 3) of image ``i`` (0-based over the image records)."""
        key = int(self.keys[i])
        _, payload = self.file.record(key)
        return decode(payload, self.file.where(key))


def decode(payload: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as img:
            return np.array(img.convert("RGB"))  # writable
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"{where}: the image bytes do not decode ({exc})") from None


def write_record_set(out: Path, images: Iterable[tuple[int, bytes]], classes: int,
                     size: tuple[int, int], shard_size: int | None = None) -> int:
    """Write insightface's layout into ``out``: record 0 the header, then the images (flag 0,
    float label, id = key) which must come grouped by label 0..classes-1, then one identity
    record per label. In ``train.rec``, or with ``shard_size`` in shards of that many images
    (the first also holds the header, the last the identity records). Returns the number of
    images."""
    if shard_size is not None and shard_size < 1:
        raise DatasetError(f"pack: shard size must be at least 1 image, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    starts: list[int] = []
    key = 0
    with RecordWriter(out, shard_size is not None) as writer:
        placeholder = _header0(0, 0)  # rewritten below: the offsets of later records stay valid
        writer.write(0, placeholder)
        for label, payload in images:
            if shard_size is not None and key and key % shard_size == 0:
                writer.next_shard()
            key += 1
            if label != len(starts) - 1:
                if label != len(starts):
                    raise DatasetError(f"pack: images must come grouped by label in order; "
                                       f"label {label} after {len(starts) - 1}")
                starts.append(key)
            writer.write(key, pack(IRHeader(0, float(label), key, 0), b"") + payload)
        if len(starts) != classes:
            raise DatasetError(f"pack: {len(starts)} identities written, {classes} declared")
        a = key + 1
        ends = [*starts[1:], a]
        for n, (first, end) in enumerate(zip(starts, ends, strict=True)):
            writer.write(a + n, pack(IRHeader(2, (float(first), float(end)), a + n, 0), b""))
        writer.rewrite_first(_header0(a, a + classes))
    write_text(out / PROPERTY, f"{classes},{size[0]},{size[1]}\n")
    return key


def _header0(a: int, b: int) -> bytes:
    # float32 holds integers exactly up to 2**24 (16.7 M records); larger sets need float64
    # labels, which insightface's format does not have
    if b >= 1 << 24:
        raise DatasetError(f"pack: {b} records exceed the float32 labels of the RecordIO header")
    return pack(IRHeader(2, (float(a), float(b)), 0, 0), b"")


def pack_dataset(dataset: Dataset, out: Path, *, shard_size: int | None = None,
                 progress: bool = True) -> tuple[int, int]:
    """Write the unmasked images of ``dataset`` (aligned faces, all one size) as an insightface
    RecordIO set in ``out`` (``train.rec``, or shards of ``shard_size`` images); identities are
    numbered in sorted order. JPEG and PNG files are
    stored byte for byte (no re-encoding), other formats as PNG. Returns (images, identities).
    Masked samples are left out: the set holds originals, masks are drawn while training."""
    from PIL import Image
    from tqdm.auto import tqdm

    samples, labels = labelled_unmasked(dataset, "pack")
    identities = labels[-1] + 1
    with Image.open(samples[0].path) as first:
        size = (first.height, first.width)

    def payloads() -> Iterable[tuple[int, bytes]]:
        for s, label in tqdm(zip(samples, labels, strict=True), total=len(samples),
                             disable=not progress, unit="img", desc=f"pack {dataset.name}"):
            data = s.path.read_bytes()
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if (img.height, img.width) != size:
                        raise DatasetError(f"{s.path}: {img.width}x{img.height}, but the set is "
                                           f"{size[1]}x{size[0]} (pack aligned faces of one size)")
                    if img.format not in ("JPEG", "PNG"):
                        buffer = io.BytesIO()
                        img.convert("RGB").save(buffer, "PNG")
                        data = buffer.getvalue()
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{s.path}: not a readable image ({exc})") from None
            yield label, data

    return write_record_set(out, payloads(), identities, size, shard_size), identities


class InsightfaceRecFormat:
    """Registry entry of the RecordIO training sets: they are streamed by ``meerbench train``
    (``meerbench.train.stream``), not read as a ``Dataset`` of image files for evaluation."""

    needs_root = True
    about = ABOUT

    def read(self, root: Path | None, options: dict[str, object], name: str) -> Dataset:
        raise DatasetError(f"dataset '{name}' is an insightface RecordIO training set: "
                           "`meerbench train` streams it; evaluation protocols need image files.")
