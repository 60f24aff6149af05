"""insightface RecordIO without mxnet: the exact byte layout, reading, index scan, corruption,
shards, ``meerbench pack`` and ``prepare`` on a RecordIO folder."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.cli import main
from meerbench.data.formats.recordio import (
    MAGIC,
    InsightfaceRecordSet,
    RecordFile,
    frame,
    scan_offsets,
    write_record_set,
)
from meerbench.errors import DatasetError


def png(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def by_hand(labels: list[int]) -> tuple[bytes, str, list[bytes]]:
    """An insightface set written from the format's description with struct alone (not with
    meerbench's writer): record 0 header (flag 2, label [a, b]), images (flag 0, float label,
    id = key), one identity record per label (flag 2, [first, end]); framing magic, lrec,
    data, zero padding; .idx 'key\\toffset'. Returns (rec bytes, idx text, image payloads)."""
    payloads = [png(i) for i in range(len(labels))]
    # the third image is followed by the magic at a 4-aligned offset of its record (bytes
    # after a PNG's end are ignored by decoders): dmlc splits the record there
    tail = b"\0" * (-(24 + len(payloads[2])) % 4) + struct.pack("<I", MAGIC) + b"tail"
    payloads[2] += tail
    classes = max(labels) + 1
    a = len(labels) + 1
    records = [struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", a, a + classes)]
    for key, (label, data) in enumerate(zip(labels, payloads, strict=True), 1):
        records.append(struct.pack("<IfQQ", 0, float(label), key, 0) + data)
    for c in range(classes):
        keys = [k for k, lab in enumerate(labels, 1) if lab == c]
        records.append(struct.pack("<IfQQ", 2, 0.0, a + c, 0)
                       + struct.pack("<2f", keys[0], keys[-1] + 1))
    rec, idx = bytearray(), []
    for key, data in enumerate(records):
        idx.append(f"{key}\t{len(rec)}\n")
        cut = [p for p in range(0, len(data) - 3, 4) if data[p:p + 4] == struct.pack("<I", MAGIC)]
        bounds = [0, *[p + 4 for p in cut]]
        ends = [*cut, len(data)]
        for n, (s, e) in enumerate(zip(bounds, ends, strict=True)):
            flag = 0 if not cut else (1 if n == 0 else 3 if n == len(cut) else 2)
            rec += struct.pack("<II", MAGIC, (flag << 29) | (e - s)) + data[s:e]
            rec += b"\0" * (-(e - s) % 4)
    return bytes(rec), "".join(idx), payloads


LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]


@pytest.fixture
def hand_set(tmp_path: Path) -> tuple[Path, list[bytes]]:
    rec, idx, payloads = by_hand(LABELS)
    (tmp_path / "train.rec").write_bytes(rec)
    (tmp_path / "train.idx").write_text(idx)
    (tmp_path / "property").write_text("3,16,16")
    return tmp_path, payloads


def test_reads_a_hand_written_insightface_set(hand_set):
    root, payloads = hand_set
    rs = InsightfaceRecordSet(root)
    assert len(rs) == len(LABELS) and rs.labels.tolist() == LABELS
    assert rs.keys.tolist() == list(range(1, len(LABELS) + 1))
    for i, data in enumerate(payloads):
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.array_equal(rs.image(i), expected)
    assert rs.file.record(3)[1] == payloads[2]  # the split record is joined with its magic


def test_the_writer_writes_the_same_bytes(hand_set, tmp_path):
    root, payloads = hand_set
    out = tmp_path / "written"
    n = write_record_set(out, list(zip(LABELS, payloads, strict=True)), 3, (16, 16))
    assert n == len(LABELS)
    assert (out / "train.rec").read_bytes() == (root / "train.rec").read_bytes()
    assert (out / "train.idx").read_text() == (root / "train.idx").read_text()
    assert (out / "property").read_text().strip() == "3,16,16"


def test_missing_idx_is_built_by_scanning(hand_set):
    root, _ = hand_set
    with_idx = RecordFile([(root / "train.rec", root / "train.idx")])
    (root / "train.idx").unlink()
    rs = InsightfaceRecordSet(root)
    assert rs.file.index_source == "scan"
    assert np.array_equal(rs.file.offsets, with_idx.offsets)
    assert rs.labels.tolist() == LABELS
    keys, _ = scan_offsets(root / "train.rec")
    assert len(keys) == 1 + len(LABELS) + 3


def test_labels_without_the_header_record_come_from_each_record(tmp_path):
    recs = [struct.pack("<IfQQ", 1, 0.0, k, 0) + struct.pack("<f", lab) + png(k)
            for k, lab in enumerate([1, 0, 1])]  # label arrays, label[0] is the class
    (tmp_path / "train.rec").write_bytes(b"".join(frame(r) for r in recs))
    (tmp_path / "property").write_text("2,16,16")
    rs = InsightfaceRecordSet(tmp_path)
    assert rs.keys.tolist() == [0, 1, 2] and rs.labels.tolist() == [1, 0, 1]


def test_inexact_float32_header_counts_fall_back_to_each_records_label(hand_set):
    """At 2^24 records and more (Glint360K) the header's float32 counts are rounded: the image
    records and their labels are then read from every record's own header."""
    root, _ = hand_set
    data = bytearray((root / "train.rec").read_bytes())
    data[8 + 24:8 + 32] = struct.pack("<2f", 2 ** 24, 2 ** 24 + 4)  # record 0's two labels
    (root / "train.rec").write_bytes(bytes(data))
    rs = InsightfaceRecordSet(root)
    assert rs.keys.tolist() == list(range(1, len(LABELS) + 1)) and rs.labels.tolist() == LABELS


def test_a_corrupted_record_names_the_file_and_record(hand_set):
    root, _ = hand_set
    data = bytearray((root / "train.rec").read_bytes())
    offset = int((root / "train.idx").read_text().splitlines()[5].split("\t")[1])
    data[offset:offset + 4] = b"\0\0\0\0"
    (root / "train.rec").write_bytes(bytes(data))
    rs = InsightfaceRecordSet(root)  # the identity index is intact
    with pytest.raises(DatasetError, match=r"train\.rec: record 5: corrupted, no RecordIO magic"):
        rs.image(4)
    data[offset:offset + 4] = struct.pack("<I", MAGIC)
    data[offset + 4:offset + 8] = struct.pack("<I", 1 << 28)
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"record 5: corrupted, length .* runs past the end"):
        InsightfaceRecordSet(root).image(4)
    (root / "train.idx").unlink()
    with pytest.raises(DatasetError, match=r"record 5: corrupted"):
        InsightfaceRecordSet(root)


def test_a_malformed_index_line_is_named(hand_set):
    root, _ = hand_set
    lines = (root / "train.idx").read_text().splitlines()
    lines[3] = lines[3].replace("\t", " ")
    (root / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train\.idx:4: expected 'key<TAB>offset'"):
        InsightfaceRecordSet(root)


def test_undecodable_image_bytes_name_the_record(tmp_path):
    write_record_set(tmp_path, [(0, b"not an image at all")], 1, (16, 16))
    with pytest.raises(DatasetError, match=r"record 1: the image bytes do not decode"):
        InsightfaceRecordSet(tmp_path).image(0)


def test_pack_a_folder_then_prepare_recognises_it(tmp_path, capsys):
    src = tmp_path / "faces"
    for ident, count in (("bob", 2), ("alice", 3)):
        (src / ident).mkdir(parents=True)
        for j in range(count):
            (src / ident / f"{j}.png").write_bytes(png(hash((ident, j)) % 1000))
    assert main(["pack", str(src), "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    assert "5 images of 2 identities" in capsys.readouterr().out
    rs = InsightfaceRecordSet(tmp_path / "rec")
    assert rs.labels.tolist() == [0, 0, 0, 1, 1]  # alice (sorted first), then bob
    original = np.asarray(Image.open(src / "bob" / "1.png").convert("RGB"))
    assert np.array_equal(rs.image(4), original)  # PNG bytes are stored as they are
    code = main(["prepare", "casia-webface", "--data", str(tmp_path / "rec"),
                 "--out", str(tmp_path / "lists"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "insightface RecordIO" in out and "5 images, 2 identities" in out


def test_pack_a_csv_manifest_leaves_masked_images_out(tmp_path, capsys):
    for name, seed in (("a0.png", 1), ("a1.png", 2), ("b0.png", 3), ("b0m.png", 4)):
        (tmp_path / name).write_bytes(png(seed))
    (tmp_path / "faces.csv").write_text("path,identity,masked\na0.png,ann,0\na1.png,ann,0\n"
                                        "b0.png,ben,0\nb0m.png,ben,1\n")
    assert main(["pack", str(tmp_path / "faces.csv"), "--out", str(tmp_path / "rec"),
                 "--no-progress"]) == 0
    assert "3 images of 2 identities" in capsys.readouterr().out
    rs = InsightfaceRecordSet(tmp_path / "rec")
    assert rs.labels.tolist() == [0, 0, 1]
    assert np.array_equal(rs.image(2), np.asarray(Image.open(tmp_path / "b0.png").convert("RGB")))


def test_pack_refuses_mixed_sizes_and_missing_sets_explain_the_layout(tmp_path, capsys):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    (tmp_path / "faces" / "a" / "0.png").write_bytes(png(0, 16))
    (tmp_path / "faces" / "a" / "1.png").write_bytes(png(1, 20))
    assert main(["pack", str(tmp_path / "faces"), "--out", str(tmp_path / "o")]) == 2
    assert "20x20, but the set is 16x16" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train.rec").exists()
    code = main(["prepare", "ms1mv3", "--data", str(tmp_path / "nothing"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "train.rec" in err and "insightface" in err


def shard_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("train"))


@pytest.mark.parametrize("shard_size", [1, 3, 4, 9, 100])
def test_shards_are_the_single_file_cut_into_runs(hand_set, tmp_path, shard_size):
    """Shards of N images: the header record in the first, the identity records in the last,
    global keys; their .rec files concatenated are train.rec and they read the same."""
    root, payloads = hand_set
    out = tmp_path / f"shards{shard_size}"
    write_record_set(out, list(zip(LABELS, payloads, strict=True)), 3, (16, 16), shard_size)
    count = -(-len(LABELS) // shard_size)
    assert shard_files(out) == sorted(f"train-{n:05d}.{ext}" for n in range(count)
                                      for ext in ("rec", "idx"))
    assert (out / "property").read_text().strip() == "3,16,16"
    recs = [(out / f"train-{n:05d}.rec").read_bytes() for n in range(count)]
    assert b"".join(recs) == (root / "train.rec").read_bytes()
    lines, base = [], 0
    for n, rec in enumerate(recs):
        for line in (out / f"train-{n:05d}.idx").read_text().splitlines():
            key, offset = line.split("\t")
            lines.append(f"{key}\t{int(offset) + base}")
        base += len(rec)
    assert lines == (root / "train.idx").read_text().splitlines()
    single, sharded = InsightfaceRecordSet(root), InsightfaceRecordSet(out)
    assert sharded.keys.tolist() == single.keys.tolist()
    assert sharded.labels.tolist() == single.labels.tolist()
    assert all(np.array_equal(sharded.image(i), single.image(i)) for i in range(len(LABELS)))
    (out / "train-00000.idx").unlink()  # a missing index is scanned, keys numbered on
    (out / f"train-{count - 1:05d}.idx").unlink(missing_ok=count == 1)
    scanned = InsightfaceRecordSet(out)
    assert scanned.labels.tolist() == LABELS and "scan" in scanned.file.index_source
    assert np.array_equal(scanned.file.keys, sharded.file.keys)
    assert np.array_equal(scanned.file.offsets, sharded.file.offsets)


def test_shard_errors_name_the_shard_file_and_record(hand_set, tmp_path):
    _, payloads = hand_set
    out = tmp_path / "shards"
    write_record_set(out, list(zip(LABELS, payloads, strict=True)), 3, (16, 16), 4)
    offset = int((out / "train-00001.idx").read_text().splitlines()[1].split("\t")[1])
    data = bytearray((out / "train-00001.rec").read_bytes())
    data[offset:offset + 4] = b"\0\0\0\0"  # record 6 = image 5
    (out / "train-00001.rec").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train-00001\.rec: record 6: corrupted, no RecordIO"):
        InsightfaceRecordSet(out).image(5)
    (out / "train-00001.idx").unlink()
    with pytest.raises(DatasetError, match=r"train-00001\.rec: record 6: corrupted"):
        InsightfaceRecordSet(out)  # the scan of the shard finds it
    shutil.copy(out / "train-00002.rec", out / "train-00001.rec")
    shutil.copy(out / "train-00002.idx", out / "train-00001.idx")
    with pytest.raises(DatasetError, match=r"record 9 is indexed twice: in .*train-00001\.rec "
                                           r"and .*train-00002\.rec"):
        InsightfaceRecordSet(out)
    (out / "train-00001.rec").unlink()
    with pytest.raises(DatasetError, match=r"train-00001\.rec not found: the shards must be "
                                           r"numbered from 0 without gaps"):
        InsightfaceRecordSet(out)
    (out / "train.rec").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"both train\.rec and shards"):
        InsightfaceRecordSet(out)


def test_pack_shards_and_repacking_replaces_the_earlier_layout(tmp_path, capsys):
    src = tmp_path / "faces"
    for ident in range(3):
        (src / f"p{ident}").mkdir(parents=True)
        for j in range(3):
            (src / f"p{ident}" / f"{j}.png").write_bytes(png(10 * ident + j))
    out = tmp_path / "rec"
    single = tmp_path / "single"
    assert main(["pack", str(src), "--out", str(single), "--no-progress"]) == 0
    assert main(["pack", str(src), "--out", str(out), "--shard-size", "2", "--no-progress"]) == 0
    assert "9 images of 3 identities" in capsys.readouterr().out.splitlines()[-1]
    assert shard_files(out) == [f"train-{n:05d}.{e}" for n in range(5) for e in ("idx", "rec")]
    a, b = InsightfaceRecordSet(single), InsightfaceRecordSet(out)
    assert b.labels.tolist() == a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(np.array_equal(a.image(i), b.image(i)) for i in range(9))
    assert main(["pack", str(src), "--out", str(out), "--shard-size", "4", "--no-progress"]) == 0
    assert "(3 shards)" in capsys.readouterr().out  # the surplus shards of the last pack go
    assert shard_files(out) == [f"train-{n:05d}.{e}" for n in range(3) for e in ("idx", "rec")]
    assert main(["pack", str(src), "--out", str(out), "--no-progress"]) == 0
    assert shard_files(out) == ["train.idx", "train.rec"]
    assert (out / "train.rec").read_bytes() == (single / "train.rec").read_bytes()
    (src / "p2" / "3.png").write_bytes(png(99, 20))  # a failed pack leaves the folder as it was
    assert main(["pack", str(src), "--out", str(out), "--shard-size", "2"]) == 2
    assert "20x20, but the set is 16x16" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["property", "train.idx", "train.rec"]
    assert main(["pack", str(src), "--out", str(out), "--shard-size", "0"]) == 2
