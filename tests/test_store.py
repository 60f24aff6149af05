"""The artefact store: completion records, checks on read, repair, partial folders, pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meerbench.errors import MeerbenchError
from meerbench.store import Artefact, ArtefactRepaired, check_name, clean_partials, key_digest


def fill_two(folder: Path) -> dict:
    (folder / "a.txt").write_text("alpha")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    return {"made": "here"}


def test_key_is_canonical_and_names_the_folder(tmp_path: Path) -> None:
    assert key_digest({"b": 1, "a": [1, 2]}) == key_digest({"a": [1, 2], "b": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 1.5})
    art = Artefact("demo", {"x": 1}, label="my model+v2", root=tmp_path)
    assert art.dir.parent == tmp_path / "demo"
    assert art.dir.name == f"my_model_v2-{key_digest({'x': 1})[:32]}"


def test_build_records_every_file_and_open_checks_them(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    assert art.open() is None
    folder = art.build(fill_two)
    record = json.loads((folder / "record.json").read_text())
    assert record["key"] == {"x": 1} and record["info"] == {"made": "here"}
    assert set(record["files"]) == {"a.txt", "sub/b.bin"}
    again = Artefact("demo", {"x": 1}, root=tmp_path)
    assert again.open() == folder and again.info == {"made": "here"}
    assert again.read_bytes("a.txt") == b"alpha"
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [folder.name]  # nothing partial


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "fifo", "folder"])
def test_a_damaged_file_is_named_and_the_artefact_rebuilt(tmp_path: Path, damage: str) -> None:
    """Also a FIFO or a folder in a file's place: refused at once (a FIFO is never opened to
    block on a read)."""
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    folder = art.build(fill_two)
    target = folder / "sub" / "b.bin"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[100] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    else:
        target.unlink()
        if damage == "fifo":
            os.mkfifo(target)
        elif damage == "folder":
            target.mkdir()
    calls = []
    with pytest.warns(ArtefactRepaired, match=r"sub/b\.bin"):
        Artefact("demo", {"x": 1}, root=tmp_path).ensure(lambda f: calls.append(f) or fill_two(f))
    assert len(calls) == 1 and (folder / "sub" / "b.bin").read_bytes() == bytes(range(256))


def test_repair_rebuilds_only_the_bad_files_when_it_reproduces_them(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    folder = art.build(fill_two)
    (folder / "a.txt").write_text("alphA")
    repaired = []

    def repair(into: Path, names: list[str]) -> None:
        repaired.extend(names)
        (into / "a.txt").write_text("alpha")

    with pytest.warns(ArtefactRepaired, match="a.txt"):
        assert Artefact("demo", {"x": 1}, root=tmp_path).open(repair) == folder
    assert repaired == ["a.txt"] and (folder / "a.txt").read_text() == "alpha"


def test_a_repair_that_does_not_reproduce_the_record_rebuilds_everything(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    folder = art.build(fill_two)
    (folder / "a.txt").write_text("alphA")
    with pytest.warns(ArtefactRepaired, match="discarding"):
        assert Artefact("demo", {"x": 1}, root=tmp_path).open(
            lambda into, names: (into / "a.txt").write_text("other")) is None
    assert not folder.exists()


def test_a_record_for_another_key_or_a_folder_without_record_is_never_used(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    folder = art.build(fill_two)
    record = json.loads((folder / "record.json").read_text())
    record["key"] = {"x": 2}
    (folder / "record.json").write_text(json.dumps(record))
    with pytest.warns(ArtefactRepaired, match="does not match its key"):
        assert Artefact("demo", {"x": 1}, root=tmp_path).open() is None
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")  # e.g. copied in by hand, no record
    with pytest.warns(ArtefactRepaired, match="no completion record"):
        assert Artefact("demo", {"x": 1}, root=tmp_path).open() is None


def test_an_interrupted_build_leaves_nothing_and_dead_partials_are_cleaned(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)

    def boom(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        art.build(boom)
    assert list((tmp_path / "demo").iterdir()) == []
    # a process killed by SIGKILL/SIGTERM cannot clean up: its partial folder stays ...
    code = ("import os, sys; from pathlib import Path; from meerbench.store import Artefact\n"
            f"a = Artefact('demo', {{'x': 2}}, root=Path({str(tmp_path)!r}))\n"
            "a.build(lambda f: ((f / 'half').write_text('x'), os.kill(os.getpid(), 9)))")
    subprocess.run([sys.executable, "-c", code], check=False)
    left = [p.name for p in (tmp_path / "demo").iterdir()]
    assert len(left) == 1 and ".partial-" in left[0]
    # ... until the next build of that kind, which removes it (its process is gone)
    art.build(fill_two)
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [art.dir.name]
    assert clean_partials(tmp_path / "demo") == []


def test_pieces_are_checked_and_bad_ones_dropped(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    art.put_piece("p1", b"one")
    art.put_piece("p2", b"two")
    assert art.pieces() == {"p1": b"one", "p2": b"two"}
    p2 = next(art.pieces_dir.glob("p2.*"))
    p2.write_bytes(b"tw")
    with pytest.warns(ArtefactRepaired, match=p2.name):
        assert art.pieces() == {"p1": b"one"}
    assert not p2.exists()
    art.build(fill_two)
    assert not art.pieces_dir.exists()  # finished: pieces dropped


def test_unwritable_home_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a folder under a file cannot be made, even by root
    art = Artefact("demo", {"x": 1}, root=blocker / "home")
    with pytest.raises(MeerbenchError, match="MEERBENCH_HOME"):
        art.build(fill_two)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a\\b", "x" * 200, "/abs"])
def test_names_that_would_leave_their_folder_are_refused(bad: str) -> None:
    with pytest.raises(MeerbenchError, match="not a valid name"):
        check_name(bad, "protocol id")
    assert check_name("lfw-masked_v2.1", "protocol id") == "lfw-masked_v2.1"


def test_read_bytes_refuses_a_file_changed_after_open(tmp_path: Path) -> None:
    art = Artefact("demo", {"x": 1}, root=tmp_path)
    art.build(fill_two)
    os.chmod(art.dir / "a.txt", 0o644)
    (art.dir / "a.txt").write_text("beta!")
    with pytest.raises(MeerbenchError, match="changed while in use"):
        art.read_bytes("a.txt")


def test_a_failed_write_leaves_nothing_and_a_concurrent_build_wins(tmp_path: Path,
                                                                   monkeypatch) -> None:
    import meerbench.io as io_module

    art = Artefact("demo", {"x": 1}, root=tmp_path)

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_module.os, "rename", no_space)
    with pytest.raises(MeerbenchError, match="No space left on device"):
        art.build(fill_two)
    assert list((tmp_path / "demo").iterdir()) == []

    def concurrent(src, dst):  # another process published the same artefact first
        monkeypatch.undo()
        Artefact("demo", {"x": 1}, root=tmp_path).build(lambda f: (f / "a.txt").write_text("o"))
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(io_module.os, "rename", concurrent)
    assert art.build(fill_two) == art.dir
    assert art.read_bytes("a.txt") == b"o" and [p.name for p in (tmp_path / "demo").iterdir()] \
        == [art.dir.name]
