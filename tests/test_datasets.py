from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.data.formats.manifest import read_manifest
from meerbench.data.images import read_rgb
from meerbench.errors import DatasetError


def write_faces(root: Path, ids=("alice", "bob"), per_id=3) -> None:
    rng = np.random.default_rng(0)
    for ident in ids:
        (root / ident).mkdir(parents=True)
        for j in range(per_id):
            img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / ident / f"{ident}_{j:04d}.png")


def test_folder_reader(tmp_path):
    write_faces(tmp_path / "faces")
    ds = open_dataset(DatasetSpec("folder", "faces", {}), tmp_path / "faces")
    assert len(ds.samples) == 6
    assert {s.identity for s in ds.samples} == {"alice", "bob"}
    assert ds.samples[0].key == "alice/alice_0000.png"


def test_missing_dataset_root_names_the_path_and_the_options(tmp_path, monkeypatch):
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("folder", "faces", {}), tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and "--data" in str(err.value)
    with pytest.raises(DatasetError, match=r"MEERBENCH_DATA/faces"):
        open_dataset(DatasetSpec("folder", "faces", {}))
    monkeypatch.setenv("MEERBENCH_DATA", str(tmp_path))
    write_faces(tmp_path / "faces")
    assert len(open_dataset(DatasetSpec("folder", "faces", {})).samples) == 6


def test_corrupt_image_is_named(tmp_path):
    write_faces(tmp_path)
    bad = tmp_path / "alice" / "alice_0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DatasetError, match="alice_0001.png"):
        read_rgb(bad)


def test_manifest_reader_and_its_errors(tmp_path):
    write_faces(tmp_path)
    csv = tmp_path / "manifest.csv"
    csv.write_text("path,identity,masked\nalice/alice_0000.png,alice,0\nbob/bob_0000.png,bob,1\n")
    ds = read_manifest(csv, "m")
    assert [s.masked for s in ds.samples] == [False, True]

    csv.write_text("path,identity,masked\nalice/alice_0000.png,alice,maybe\n")
    with pytest.raises(DatasetError, match=r"manifest.csv, line 2: 'masked'"):
        read_manifest(csv, "m")
    csv.write_text("path,identity,colour\nalice/alice_0000.png,alice,red\n")
    with pytest.raises(DatasetError, match=r"line 1: .*unknown colour"):
        read_manifest(csv, "m")
    csv.write_text("path,identity\nalice/alice_0000.png,alice\nalice/missing.png,alice\n")
    with pytest.raises(DatasetError, match="missing.png"):
        read_manifest(csv, "m")
    csv.write_text("path,identity\nalice/alice_0000.png\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_manifest(csv, "m")
