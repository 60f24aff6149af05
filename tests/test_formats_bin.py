"""insightface ``.bin`` reader: restricted unpickling, validation and the image cache."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures_build import FIXTURES

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.errors import DatasetError
from meerbench.settings import home

JPEG = b"\xff\xd8\xff\xe0 tiny jpeg stand-in"


def read(root: Path, **options):
    return open_dataset(DatasetSpec("insightface-bin", "lfw", options), root)


def write_bin(path: Path, payload: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    return path


def cached_folders() -> set[str]:
    folder = home() / "bins"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_fixture_bin_pairs_folds_placeholders_and_cache():
    ds = read(FIXTURES / "bins")
    assert len(ds.samples) == 40 and len(ds.pairs) == 20
    assert [p.label for p in ds.pairs] == [1, 0] * 10
    assert [p.fold for p in ds.pairs] == [i // 2 for i in range(20)]
    assert (ds.pairs[1].ref, ds.pairs[1].probe) == ("000002.jpg", "000003.jpg")
    assert ds.by_key("000000.jpg").identity == ds.by_key("000001.jpg").identity == "pair000000"
    assert (ds.by_key("000002.jpg").identity, ds.by_key("000003.jpg").identity) == (
        "pair000001a", "pair000001b")
    assert "identification is impossible" in ds.info["identities"]
    # the JPEG bytes are written unchanged into the store artefact <home>/bins/<key>/
    with (FIXTURES / "bins" / "lfw.bin").open("rb") as handle:
        bins, _ = pickle.load(handle)  # our own fixture: safe to unpickle plainly here
    assert ds.root.parent == home() / "bins"
    assert json.loads((ds.root / "record.json").read_text())["key"]["bin_sha256"] == ds.info[
        "sha256"]
    assert all(ds.by_key(f"{i:06d}.jpg").path.read_bytes() == b for i, b in enumerate(bins))
    # a second read reuses the cache and leaves no temporary folder behind
    stamp = ds.by_key("000000.jpg").path.stat().st_mtime_ns
    assert read(FIXTURES / "bins" / "lfw.bin").root == ds.root
    assert ds.by_key("000000.jpg").path.stat().st_mtime_ns == stamp
    assert not any(name.startswith(".") for name in cached_folders())


class Evil:
    """A pickle payload that would create a marker file if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_evil_bin_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = write_bin(tmp_path / "evil.bin", ([JPEG, JPEG], [Evil(marker)]))
    before = cached_folders()
    with pytest.raises(DatasetError, match=r"refused to unpickle (posix|nt|os)\.system from "
                                           r".*evil.bin"):
        read(evil)
    assert not marker.exists()
    assert cached_folders() == before  # nothing written on error
    # the same pickle through the ordinary unpickler does run: the test payload is real
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(("module", "name"), [("builtins", "eval"), ("subprocess", "Popen"),
                                              ("builtins", "getattr"), ("numpy", "load")])
def test_other_globals_are_refused(tmp_path, module, name):
    # protocol-0 text pickle of: GLOBAL module.name, then call it with ('x',)
    data = f"c{module}\n{name}\n(S'x'\ntR.".encode()
    (tmp_path / "g.bin").write_bytes(data)
    with pytest.raises(DatasetError, match=rf"refused to unpickle {module}\.{name}"):
        read(tmp_path / "g.bin")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("issame", [[True, False], (True, False), np.array([True, False])],
                         ids=["list", "tuple", "ndarray"])
def test_genuine_shapes_load_for_every_protocol(tmp_path, protocol, issame):
    path = write_bin(tmp_path / "ok.bin", ([JPEG, JPEG, JPEG + b"2", JPEG], issame), protocol)
    ds = read(path)
    assert [p.label for p in ds.pairs] == [1, 0]
    assert ds.by_key("000002.jpg").path.read_bytes() == JPEG + b"2"


def test_python2_bins_load(tmp_path):
    """Hand-assembled protocol-2 pickles as Python 2 wrote them (str images, numpy 1.x names)."""
    images = b"]q\x00(U\x06\xff\xd8\xff\xe0abU\x03\xff\xd8xU\x03\xff\xd8yU\x03\xff\xd8ze"
    bool_list = b"]q\x01(\x88\x89e"
    bool_array = (  # numpy.core.multiarray._reconstruct(ndarray, (0,), 'b') + state
        b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87R"
        b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02b1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x01\x00tb")
    for issame in (bool_list, bool_array):
        (tmp_path / "py2.bin").write_bytes(b"\x80\x02" + images + issame + b"\x86.")
        ds = read(tmp_path / "py2.bin")
        assert [p.label for p in ds.pairs] == [1, 0]
        assert ds.by_key("000000.jpg").path.read_bytes() == b"\xff\xd8\xff\xe0ab"


@pytest.mark.parametrize(("payload", "message"), [
    ({"bins": [JPEG, JPEG]}, r"top level is dict, not a pair"),
    ((JPEG, [True]), r"bins is bytes, not a list"),
    (([JPEG, JPEG, JPEG], [True]), r"3 images for 1 pairs"),
    (([JPEG, JPEG], []), r"2 images for 0 pairs"),
    (([JPEG, b"\x89PNG...."], [True]), r"image 1 is not JPEG data"),
    (([JPEG, "text"], [True]), r"image 1 is str, not bytes"),
    (([JPEG, JPEG], [1]), r"issame holds int 1, not only booleans"),
    (([JPEG, JPEG], np.array([1])), r"issame is a int64 array"),
    (([JPEG, JPEG], {"same": True}), r"issame is dict"),
])
def test_malformed_structures_are_named(tmp_path, payload, message):
    path = write_bin(tmp_path / "bad.bin", payload)
    with pytest.raises(DatasetError, match=message) as err:
        read(path)
    assert "bad.bin" in str(err.value)


def test_truncated_or_garbage_files_and_codecs_abuse(tmp_path):
    good = (FIXTURES / "bins" / "lfw.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"cut.bin: not a readable insightface .bin"):
        read(tmp_path / "cut.bin")
    # _codecs.encode is only honoured as the latin-1 bytes constructor of protocol 2
    (tmp_path / "zip.bin").write_bytes(b"c_codecs\nencode\n(Vx\nVzlib\ntR.")
    with pytest.raises(DatasetError, match=r"zip.bin: not a readable .*latin1"):
        read(tmp_path / "zip.bin")


def test_which_bin_is_read(tmp_path):
    with pytest.raises(DatasetError, match=r"Cannot tell which .bin to read .*found: none"):
        read(tmp_path)
    write_bin(tmp_path / "a.bin", ([JPEG, JPEG], [True]))
    write_bin(tmp_path / "b.bin", ([JPEG, JPEG], [False]))
    with pytest.raises(DatasetError, match=r"found: a.bin, b.bin\); set dataset.options.file"):
        read(tmp_path)
    assert read(tmp_path, file="b.bin").pairs[0].label == 0
    write_bin(tmp_path / "lfw.bin", ([JPEG, JPEG], [True]))  # <dataset name>.bin wins
    assert read(tmp_path).info["file"] == str(tmp_path / "lfw.bin")
    assert all(s.masked for s in read(tmp_path, masked=True).samples)
