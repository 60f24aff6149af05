"""CALFW, CPLFW and MLFW readers: flat image folders, identities from file names."""

from collections import Counter

import pytest
from fixtures_build import FIXTURES, fixture_copy, set_line
from fixtures_build import read_fixture as read

from meerbench.errors import DatasetError, ProtocolError

# --------------------------------------------------------------------------- CALFW / CPLFW


@pytest.mark.parametrize(("fmt", "first"), [("calfw", "Ian_Smith_0001.jpg"),
                                            ("cplfw", "Ian_Smith_1.jpg")])
def test_cross_lfw_fixture_pairs_and_folds(fmt, first):
    ds = read(fmt, FIXTURES / fmt)
    assert len(ds.samples) == 24 and len({s.identity for s in ds.samples}) == 8
    assert ds.by_key(f"aligned images/{first}").identity == "Ian_Smith"
    assert not any(s.masked for s in ds.samples)
    # 20 positives (blocks of 2 per fold) then 20 negatives (blocks of 2 per fold)
    assert [p.label for p in ds.pairs] == [1] * 20 + [0] * 20
    assert [p.fold for p in ds.pairs] == [i // 2 for i in range(20)] * 2
    assert Counter(p.fold for p in ds.pairs) == {k: 4 for k in range(10)}
    assert ds.pairs[0].ref == f"aligned images/{first}"
    for p in ds.pairs:
        assert (ds.by_key(p.ref).identity == ds.by_key(p.probe).identity) == bool(p.label)


def test_cross_lfw_accepts_aligned_images_with_underscore_and_a_masked_copy(tmp_path):
    root = fixture_copy("calfw", tmp_path)
    (root / "aligned images").rename(root / "aligned_images")
    ds = read("calfw", root, masked=True)
    assert ds.pairs[0].ref == "aligned_images/Ian_Smith_0001.jpg"
    assert all(s.masked for s in ds.samples)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[:-1], r"pairs_CALFW.txt, line 79: odd number of lines"),
    (lambda lines: ["Ian_Smith_0001.jpg 1 extra"] + lines[1:],
     r"pairs_CALFW.txt, line 1: expected 'file label'"),
    (lambda lines: ["Ian_Smith_0001.jpg one"] + lines[1:],
     r"pairs_CALFW.txt, line 1: expected 'file label'"),
    (lambda lines: lines[:1] + ["Ian_Smith_0003.jpg 2"] + lines[2:],
     r"pairs_CALFW.txt, line 2: label 2 differs from label 1 on line 1"),
    (lambda lines: lines[40:42] + lines[:40] + lines[42:],  # a negative pair first
     r"pairs_CALFW.txt, line 3: positive pair after the negative ones began"),
    (lambda lines: lines[:-2], r"pairs_CALFW.txt: expected as many negative as positive pairs.* "
                               r"got 20 \+ 19"),
    (lambda lines: ["Ian_Smith_0001.jpg 1", "Laura_Bush_0002.jpg 1"] + lines[2:],
     r"pairs_CALFW.txt, line 1: the pair is labelled same identity but its images belong to "
     r"'Ian_Smith' and 'Laura_Bush'"),
])
def test_calfw_malformed_pair_files(tmp_path, edit, message):
    root = fixture_copy("calfw", tmp_path)
    pairs = root / "pairs_CALFW.txt"
    pairs.write_text("\n".join(edit(pairs.read_text().splitlines())) + "\n")
    with pytest.raises(DatasetError, match=message):
        read("calfw", root)


def test_cplfw_missing_image_and_unknown_identity(tmp_path):
    root = fixture_copy("cplfw", tmp_path)
    gone = root / "aligned images" / "Ian_Smith_3.jpg"
    gone.unlink()
    with pytest.raises(DatasetError, match=r"pairs_CPLFW.txt, line 2: image is missing") as err:
        read("cplfw", root)
    assert str(gone) in str(err.value)
    set_line(root / "pairs_CPLFW.txt", 2, "Nobody_Known_3.jpg 1")
    with pytest.raises(DatasetError, match=r"line 2: unknown identity 'Nobody_Known'"):
        read("cplfw", root)
    set_line(root / "pairs_CPLFW.txt", 2, "no-number.jpg 1")
    with pytest.raises(DatasetError, match=r"line 2: cannot derive an identity from "
                                           r"'no-number.jpg'"):
        read("cplfw", root)


def test_image_whose_name_gives_no_identity_is_named(tmp_path):
    root = fixture_copy("calfw", tmp_path)
    stray = root / "aligned images" / "README.jpg"
    stray.write_bytes(b"")
    with pytest.raises(DatasetError, match="README.jpg: cannot derive an identity"):
        read("calfw", root)


def test_identity_regex_option_is_validated():
    with pytest.raises(ProtocolError, match=r"identity_regex.*group \(\?P<identity>"):
        read("calfw", FIXTURES / "calfw", identity_regex=r"(.+)_\d+\.jpg")
    with pytest.raises(ProtocolError, match=r"identity_regex.*valid regular expression"):
        read("calfw", FIXTURES / "calfw", identity_regex=r"(?P<identity>.+")


# --------------------------------------------------------------------------- MLFW


def test_mlfw_fixture_masked_flat_folder_and_contiguous_folds():
    ds = read("mlfw", FIXTURES / "mlfw")
    assert len(ds.samples) == 32 and all(s.masked for s in ds.samples)
    assert ds.by_key("aligned/Aaron_Eckhart_0002_0001.jpg").identity == "Aaron_Eckhart"
    assert len({s.identity for s in ds.samples}) == 8
    assert [p.label for p in ds.pairs[:4]] == [1, 0, 1, 0]
    assert [p.fold for p in ds.pairs] == [i // 4 for i in range(40)]
    assert ds.info["folds_with_one_label"] == 0
    assert ds.info["identity_regex"] == r"(?P<identity>.+)_\d{4}_\d{4}\.jpg"
    assert not any(s.masked for s in read("mlfw", FIXTURES / "mlfw", masked=False).samples)


def test_mlfw_root_may_hold_an_mlfw_folder(tmp_path):
    fixture_copy("mlfw", tmp_path).rename(tmp_path / "MLFW")
    ds = read("mlfw", tmp_path)
    assert ds.pairs[0].ref == "MLFW/aligned/Ian_Smith_0002_0000.jpg"


def test_mlfw_counts_folds_holding_a_single_label(tmp_path):
    root = fixture_copy("mlfw", tmp_path)
    pairs = root / "pairs.txt"
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[0::2] + lines[1::2]) + "\n")  # positives first
    assert read("mlfw", root).info["folds_with_one_label"] == 10


@pytest.mark.parametrize(("text", "message"), [
    ("Ian_Smith_0002_0000.jpg\tIan_Smith_0001_0000.jpg\t2", r"pairs.txt, line 3: expected "
                                                            r"'img1 img2 label'"),
    ("Ian_Smith_0002_0000.jpg\t1", r"pairs.txt, line 3: expected 'img1 img2 label'"),
    ("Ian_Smith_0002_0000.jpg\tIan_Smith_0009_0000.jpg\t1", r"pairs.txt, line 3: image is "
                                                            r"missing: .*Ian_Smith_0009_0000.jpg"),
    ("Nobody_0001_0000.jpg\tIan_Smith_0001_0000.jpg\t0", r"pairs.txt, line 3: unknown identity "
                                                         r"'Nobody'"),
    ("Ian_Smith_0002_0000.jpg\tZico_0001_0000.jpg\t1", r"line 3: unknown identity 'Zico'"),
    ("Ian_Smith_0002_0000.jpg\tIan_Smith_0001_0000.jpg\t0", r"line 3: the pair is labelled "
                                                            r"different identities"),
])
def test_mlfw_bad_pair_lines(tmp_path, text, message):
    root = fixture_copy("mlfw", tmp_path)
    set_line(root / "pairs.txt", 3, text)
    with pytest.raises(DatasetError, match=message):
        read("mlfw", root)
