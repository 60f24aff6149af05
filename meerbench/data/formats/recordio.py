"""insightface training sets in MXNet RecordIO, read and written without mxnet.

A set is a folder with ``train.rec`` (the records), ``train.idx`` (one ``key<TAB>offset`` line
per record) and ``property`` (``num_classes,height,width``), as insightface distributes
CASIA-WebFace, MS1MV2/V3 and Glint360K.

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
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from meerbench.data.dataset import Dataset
from meerbench.errors import DatasetError
from meerbench.io import atomic_open, write_text

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
REC, IDX, PROPERTY = "train.rec", "train.idx", "property"
ABOUT = ("Expected layout: <root>/train.rec, train.idx and property ('num_classes,112,112'), "
         "the insightface RecordIO training set (https://github.com/deepinsight/insightface/tree/"
         "master/recognition/_datasets_), or pack a folder of aligned faces with "
         "`meerbench pack SRC --out DIR`.")


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
    """Random access to the records of a ``.rec`` file by key.

    Offsets come from the ``.idx`` file, or from one scan of the ``.rec`` headers when it is
    missing (held in memory: 16 bytes per record). The file handle is opened per process, so
    one object can be handed to DataLoader workers.
    """

    def __init__(self, rec: Path, idx: Path | None = None) -> None:
        self.rec = rec
        if not rec.is_file():
            raise DatasetError(f"{rec} not found. {ABOUT}")
        self.size = rec.stat().st_size
        if idx is not None and idx.is_file():
            self.keys, self.offsets = _read_idx(idx)
            self.index_source = str(idx)
        else:
            self.keys, self.offsets = scan_offsets(rec)
            self.index_source = "scan"
        order = np.argsort(self.keys, kind="stable")
        self.keys, self.offsets = self.keys[order], self.offsets[order]
        self._handle: BinaryIO | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.rec, "rb")  # noqa: SIM115 (held for random reads)
            self._pid = os.getpid()
        return self._handle

    def _position(self, key: int) -> int:
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            raise DatasetError(f"{self.rec}: no record {key} in its index ({self.index_source})")
        return int(self.offsets[i])

    def read(self, key: int) -> bytes:
        """The data of record ``key`` (parts joined)."""
        where = f"{self.rec}: record {key}"
        handle = self._file()
        handle.seek(self._position(key))
        return read_framed(handle, where, self.size)

    def record(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack(self.read(key), f"{self.rec}: record {key}")

    def header(self, key: int) -> tuple[IRHeader, int]:
        """(IRHeader, data length) of record ``key`` from its first bytes only (a record split
        by the dmlc writer is read whole)."""
        where = f"{self.rec}: record {key}"
        handle = self._file()
        start = self._position(key)
        handle.seek(start)
        head = handle.read(8 + IR_SIZE + 8)
        if len(head) >= 8:
            magic, lrec = struct.unpack_from("<II", head)
            length = lrec & _LENGTH_MASK
            if magic == MAGIC and lrec >> 29 == 0 and len(head) >= 8 + min(length, IR_SIZE + 8):
                return unpack(head[8:8 + min(length, IR_SIZE + 8)], where)[0], length
        handle.seek(start)
        data = read_framed(handle, where, self.size)
        return unpack(data, where)[0], len(data)


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


def scan_offsets(rec: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) of every record by walking the framing; key i is the i-th record,
    as ``im2rec`` numbers them when it writes no ``.idx``."""
    size = rec.stat().st_size
    offsets = []
    with open(rec, "rb") as handle:
        while handle.tell() < size:
            offsets.append(handle.tell())
            read_framed(handle, f"{rec}: record {len(offsets) - 1}", size)
    return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)


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
    """Writes ``.rec`` + ``.idx`` as ``MXIndexedRecordIO`` does (atomically, on close)."""

    def __init__(self, rec: Path, idx: Path) -> None:
        self._rec_ctx = atomic_open(rec, "wb")
        self._idx_ctx = atomic_open(idx, "w")
        self._rec = self._rec_ctx.__enter__()
        self._idx = self._idx_ctx.__enter__()

    def write(self, key: int, data: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(frame(data))

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for ctx in (self._rec_ctx, self._idx_ctx):
            ctx.__exit__(*exc)  # type: ignore[arg-type]


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
        for name in (REC, PROPERTY):
            if not (root / name).is_file():
                raise DatasetError(f"{root / name} not found. {ABOUT}")
        self.property = read_property(root / PROPERTY)
        self.file = RecordFile(root / REC, root / IDX)
        self.keys, self.labels = self._image_labels()
        if len(self.keys) == 0:
            raise DatasetError(f"{root / REC}: no image records. {ABOUT}")
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
                    raise DatasetError(f"{f.rec}: record {key}: identity record without a "
                                       f"(first, end) label")
                first, end = int(rng.label[0]), int(rng.label[1])  # type: ignore[index]
                if not 1 <= first <= end <= a:
                    raise DatasetError(f"{f.rec}: record {key}: identity range ({first}, {end}) "
                                       f"outside the image records 1..{a - 1}")
                labels[first - 1:end - 1] = n
            if (labels < 0).any():
                missing = int(keys[np.argmax(labels < 0)])
                raise DatasetError(f"{f.rec}: record {missing} belongs to no identity record")
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
        return decode(payload, f"{self.file.rec}: record {key}")


def decode(payload: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as img:
            return np.array(img.convert("RGB"))  # writable
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"{where}: the image bytes do not decode ({exc})") from None


def write_record_set(out: Path, images: Iterable[tuple[int, bytes]], classes: int,
                     size: tuple[int, int]) -> int:
    """Write insightface's layout into ``out``: record 0 the header, then the images (flag 0,
    float label, id = key) which must come grouped by label 0..classes-1, then one identity
    record per label. Returns the number of images."""
    out.mkdir(parents=True, exist_ok=True)
    starts: list[int] = []
    key = 0
    with RecordWriter(out / REC, out / IDX) as writer:
        placeholder = _header0(0, 0)  # rewritten below: the offsets of later records stay valid
        writer.write(0, placeholder)
        for label, payload in images:
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
        writer._rec.seek(0)
        writer._rec.write(frame(_header0(a, a + classes)))
    write_text(out / PROPERTY, f"{classes},{size[0]},{size[1]}\n")
    return key


def _header0(a: int, b: int) -> bytes:
    # float32 holds integers exactly up to 2**24 (16.7 M records); larger sets need float64
    # labels, which insightface's format does not have
    if b >= 1 << 24:
        raise DatasetError(f"pack: {b} records exceed the float32 labels of the RecordIO header")
    return pack(IRHeader(2, (float(a), float(b)), 0, 0), b"")


def pack_dataset(dataset: Dataset, out: Path, *, progress: bool = True) -> tuple[int, int]:
    """Write the unmasked images of ``dataset`` (aligned faces, all one size) as an insightface
    RecordIO set in ``out``; identities are numbered in sorted order. JPEG and PNG files are
    stored byte for byte (no re-encoding), other formats as PNG. Returns (images, identities).
    Masked samples are left out: the set holds originals, masks are drawn while training."""
    from PIL import Image
    from tqdm.auto import tqdm

    samples = [s for s in dataset.samples if not s.masked]
    if not samples:
        raise DatasetError(f"{dataset.root}: no unmasked images to pack")
    names = sorted({s.identity for s in samples})
    label = {name: i for i, name in enumerate(names)}
    samples.sort(key=lambda s: (label[s.identity], s.key))
    with Image.open(samples[0].path) as first:
        size = (first.height, first.width)

    def payloads() -> Iterable[tuple[int, bytes]]:
        for s in tqdm(samples, disable=not progress, unit="img", desc=f"pack {dataset.name}"):
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
            yield label[s.identity], data

    return write_record_set(out, payloads(), len(names), size), len(names)


class InsightfaceRecFormat:
    """Registry entry of the RecordIO training sets: they are streamed by ``meerbench train``
    (``meerbench.train.stream``), not read as a ``Dataset`` of image files for evaluation."""

    needs_root = True
    about = ABOUT

    def read(self, root: Path | None, options: dict[str, object], name: str) -> Dataset:
        raise DatasetError(f"dataset '{name}' is an insightface RecordIO training set: "
                           "`meerbench train` streams it; evaluation protocols need image files.")
