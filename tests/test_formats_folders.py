"""RMFRD and SMFRD readers: identity-folder trees without official pairs."""

import shutil

import pytest
from fixtures_build import FIXTURES, fixture_copy
from fixtures_build import read_fixture as read

from meerbench.errors import DatasetError, ProtocolError

SELF_BUILT = "self-built-masked-face-recognition-dataset"




def summary(ds) -> dict:
    return {k: ds.info[k] for k in ("identities_unmasked", "identities_masked", "identities_both",
                                    "images_unmasked", "images_masked")}


EXPECTED = {"identities_unmasked": 24, "identities_masked": 24, "identities_both": 23,
            "images_unmasked": 49, "images_masked": 48}


# --------------------------------------------------------------------------- RMFRD


def test_rmfrd_fixture_trees_and_one_tree_identities():
    ds = read("rmfrd", FIXTURES / "rmfrd")
    assert summary(ds) == EXPECTED
    assert ds.pairs is None
    by_identity = {}
    for s in ds.samples:
        by_identity.setdefault(s.identity, set()).add(s.masked)
    # chenhao only has unmasked images, baibaihe only masked ones: both are kept
    assert by_identity["chenhao"] == {False} and by_identity["baibaihe"] == {True}
    assert by_identity["aidai"] == by_identity["anhu"] == {False, True}
    masked = ds.by_key(f"{SELF_BUILT}/AFDB_masked_face_dataset/baibaihe/0001.jpg")
    assert masked.masked and masked.identity == "baibaihe"


def test_rmfrd_kaggle_double_nesting(tmp_path):
    source = FIXTURES / "rmfrd" / SELF_BUILT
    root = tmp_path / "kaggle"
    for tree in ("AFDB_face_dataset", "AFDB_masked_face_dataset"):
        shutil.copytree(source / tree, root / tree / tree)
    ds = read("rmfrd", root)
    assert summary(ds) == EXPECTED
    assert ds.by_key("AFDB_face_dataset/AFDB_face_dataset/chenhao/0000.jpg").identity == "chenhao"
    assert len({s.identity for s in ds.samples}) == 25


def test_rmfrd_trees_directly_under_the_root_and_a_missing_tree(tmp_path):
    root = fixture_copy("rmfrd", tmp_path) / SELF_BUILT
    shutil.rmtree(root / "AFDB_masked_face_dataset")
    ds = read("rmfrd", root)
    assert ds.info["identities_masked"] == 0 and ds.info["masked_tree"] is None
    assert ds.info["identities_unmasked"] == 24 and not any(s.masked for s in ds.samples)
    shutil.rmtree(root / "AFDB_face_dataset")
    with pytest.raises(DatasetError, match=r"Neither AFDB_face_dataset nor "
                                           r"AFDB_masked_face_dataset found under"):
        read("rmfrd", root)


def test_rmfrd_takes_no_options():
    with pytest.raises(ProtocolError, match="unknown field 'dataset.options.masked'"):
        read("rmfrd", FIXTURES / "rmfrd", masked=True)


# --------------------------------------------------------------------------- SMFRD


def test_smfrd_fixture_parts_all_masked():
    ds = read("smfrd", FIXTURES / "smfrd")
    assert len(ds.samples) == 8 and all(s.masked for s in ds.samples)
    sample = ds.by_key("webface/0000045/001.jpg")
    assert (sample.identity, sample.split) == ("0000045", "webface")
    assert ds.by_key("lfw/Zico/Zico_0002.jpg").split == "lfw"
    assert ds.info["pattern"] == "{part}/{identity}/{file}"
    assert ds.info["images_per_part"] == {"lfw": 4, "webface": 4}


def test_smfrd_parts_and_pattern_options(tmp_path):
    ds = read("smfrd", FIXTURES / "smfrd", parts=["lfw"])
    assert {s.identity for s in ds.samples} == {"Aaron_Eckhart", "Zico"}
    with pytest.raises(DatasetError, match=r"SMFRD part folder not found: .*smfrd/webfaces"):
        read("smfrd", FIXTURES / "smfrd", parts=["webfaces"])
    # a layout with the part in a longer folder name and a literal sub-folder
    root = tmp_path / "archive"
    shutil.copytree(FIXTURES / "smfrd" / "lfw", root / "lfw_masked" / "faces")
    ds = read("smfrd", root, pattern="{part}_masked/faces/{identity}/{file}")
    assert {(s.split, s.identity) for s in ds.samples} == {("lfw", "Aaron_Eckhart"),
                                                           ("lfw", "Zico")}
    ds = read("smfrd", FIXTURES / "smfrd" / "lfw", pattern="{identity}/{file}")
    assert len(ds.samples) == 4 and {s.split for s in ds.samples} == {None}


@pytest.mark.parametrize("pattern", ["{identity}", "{part}/{who}/{file}", "{identity}/*/{file}",
                                     "../{identity}/{file}", "{part}/{file}",
                                     "{identity}/{identity}/{file}"])
def test_smfrd_bad_patterns_are_refused(pattern):
    with pytest.raises(ProtocolError, match="dataset.options.pattern"):
        read("smfrd", FIXTURES / "smfrd", pattern=pattern)


def test_smfrd_nothing_matching_is_an_error():
    with pytest.raises(DatasetError, match=r"No images matching '\{part\}/\{identity\}/\{file\}'"):
        read("smfrd", FIXTURES / "smfrd" / "lfw" / "Zico")
