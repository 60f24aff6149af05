"""Issue 12, untrusted datasets: every file stays inside its data root; text and names decode."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.data.formats.manifest import read_manifest
from meerbench.errors import DatasetError

SECRET = "TOP-SECRET-CONTENT"


def png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture()
def outside(tmp_path):
    """A folder beside the data root holding an image and a secret text file."""
    folder = tmp_path / "outside"
    png(folder / "stolen.png")
    (folder / "secret.txt").write_text(f"{SECRET}\n")
    return folder


@pytest.fixture()
def root(tmp_path):
    data = tmp_path / "data"
    for ident in ("a", "b"):
        for n in (1, 2):
            png(data / ident / f"{n}.png", 40 * n)
    return data


def manifest(root, rows, header="path,identity,twin,mask_map"):
    path = root / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(("row", "column", "value"), [
    ("../outside/stolen.png,x,,", "path", "../outside/stolen.png"),
    ("{abs},x,,", "path", "{abs}"),
    ("a/1.png,a,../outside/stolen.png,", "twin", "../outside/stolen.png"),
    ("a/1.png,a,,a/../../outside/stolen.png", "mask_map", "a/../../outside/stolen.png"),
])
def test_manifest_rows_outside_the_root_name_file_line_and_value(root, outside, row, column,
                                                                 value):
    absolute = str(outside / "stolen.png")
    csv = manifest(root, ["a/2.png,a,,", row.format(abs=absolute)])
    with pytest.raises(DatasetError) as err:
        read_manifest(csv, "m")
    msg = str(err.value)
    assert f"{csv}, line 3, column '{column}'" in msg and repr(value.format(abs=absolute)) in msg


def test_manifest_row_through_a_symlink_out_is_refused(root, outside):
    (root / "link.png").symlink_to(outside / "stolen.png")
    manifest(root, ["a/1.png,a,,", "link.png,b,,"])
    with pytest.raises(DatasetError, match=r"line 3, column 'path': 'link\.png' resolves to"):
        open_dataset(DatasetSpec("manifest", "m", {}), root)


def test_manifest_inside_paths_and_inside_symlinks_are_fine(root):
    (root / "b" / "3.png").symlink_to(root / "a" / "1.png")
    csv = manifest(root, ["a/1.png,a,,", "./b/../b/2.png,b,a/1.png,", "b/3.png,b,,"])
    assert len(read_manifest(csv, "m").samples) == 3


@pytest.mark.parametrize("value", ["../outside/m.csv", "{abs}"])
def test_manifest_file_option_outside_the_root(root, outside, value):
    (outside / "m.csv").write_text("path,identity\nstolen.png,x\n")
    value = value.format(abs=outside / "m.csv")
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("manifest", "m", {"file": value}), root)
    assert "dataset.options.file" in str(err.value) and repr(value) in str(err.value)


def test_folder_dataset_symlinked_image_out_is_refused(root, outside):
    (root / "a" / "3.png").symlink_to(outside / "stolen.png")
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("folder", "f", {}), root)
    assert "sample 'a/3.png'" in str(err.value) and str(root) in str(err.value)


def test_folder_dataset_symlinked_identity_folder_out_is_refused(root, outside):
    (root / "c").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match=r"sample 'c/stolen\.png'.*outside the data root"):
        open_dataset(DatasetSpec("folder", "f", {}), root)


def test_data_root_that_is_itself_a_symlink_is_fine(root, tmp_path):
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    assert len(open_dataset(DatasetSpec("folder", "f", {}), tmp_path / "alias").samples) == 4


def test_lfw_pairs_option_cannot_read_a_file_outside(tmp_path, outside):
    root = tmp_path / "lfwroot"
    png(root / "lfw" / "A" / "A_0001.jpg")
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("lfw", "lfw", {"pairs": "../outside/secret.txt"}), root)
    assert "dataset.options.pairs" in str(err.value) and SECRET not in str(err.value)


def test_lfw_pairs_symlink_beside_the_lfw_folder_cannot_point_out(tmp_path, outside):
    root = tmp_path / "lfwroot"
    png(root / "lfw" / "A" / "A_0001.jpg")
    (root / "pairs.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("lfw", "lfw", {}), root / "lfw")
    assert "outside" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize(("fmt", "options"), [
    ("calfw", {"images": "../outside"}),
    ("mlfw", {"pairs": "../outside/secret.txt"}),
    ("mfr2", {"labels": "../../outside/secret.txt"}),
    ("smfrd", {"parts": ["../outside"], "pattern": "{part}/{identity}/{file}"}),
    ("insightface-bin", {"file": "../outside/x.bin"}),
])
def test_reader_options_naming_files_stay_inside(tmp_path, root, outside, fmt, options):
    (outside / "x.bin").write_bytes(pickle.dumps(([b"\xff\xd8"] * 2, [True])))
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec(fmt, "d", options), root)
    assert "dataset.options." in str(err.value) and "outside the data root" in str(err.value)
    assert SECRET not in str(err.value)


def test_manifest_with_bom_is_read(root):
    csv = root / "manifest.csv"
    csv.write_bytes(b"\xef\xbb\xbfpath,identity\r\na/1.png,a\r\nb/1.png,b\r\n")
    assert [s.identity for s in read_manifest(csv, "m").samples] == ["a", "b"]


def test_manifest_not_utf8_names_file_and_line(root):
    csv = root / "manifest.csv"
    csv.write_bytes(b"path,identity\na/1.png,a\nb/1.png,Jos\xe9\n")
    with pytest.raises(DatasetError, match=rf"{csv}, line 3: not UTF-8"):
        read_manifest(csv, "m")


def test_manifest_csv_errors_name_file_and_line(root):
    csv = root / "manifest.csv"
    csv.write_bytes(b"path,identity\na/1.png,a\nb/1.png,\"" + b"x" * 200_000 + b"\"\n")
    with pytest.raises(DatasetError, match=rf"{csv}, line 3"):
        read_manifest(csv, "m")


def test_non_utf8_file_names_are_refused_naming_the_folder(root):
    name = os.fsencode(root / "b") + b"/caf\xe9.png"
    try:
        fd = os.open(name, os.O_CREAT | os.O_WRONLY)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    os.close(fd)
    png(root / "b" / os.fsdecode(b"caf\xe9.png"))
    with pytest.raises(DatasetError) as err:
        open_dataset(DatasetSpec("folder", "f", {}), root)
    assert f"{root / 'b'}: the name 'b/caf\\\\xe9.png' is not valid UTF-8" in str(err.value)


def test_non_utf8_identity_folder_is_refused(root):
    try:
        os.mkdir(os.fsencode(root) + b"/Jos\xe9")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    png(root / os.fsdecode(b"Jos\xe9") / "1.png")
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        open_dataset(DatasetSpec("folder", "f", {}), root)


def test_symlink_loop_in_a_manifest_is_a_dataset_error(root):
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    csv = manifest(root, ["a/1.png,a,,", "loop1,b,,"])
    with pytest.raises(DatasetError, match=rf"{csv}, line 3, column 'path': 'loop1' is not"):
        read_manifest(csv, "m")
