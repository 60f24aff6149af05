"""LFW and MFR2 readers (LFW-style pair lines) on the fixture copies of their real layouts."""

from collections import Counter

import pytest
from fixtures_build import FIXTURES, fixture_copy, set_line
from fixtures_build import read_fixture as read

from meerbench.errors import DatasetError, ProtocolError

# --------------------------------------------------------------------------- LFW


def test_lfw_fixture_samples_pairs_and_folds():
    ds = read("lfw", FIXTURES / "lfw")
    assert len(ds.samples) == 29 and len({s.identity for s in ds.samples}) == 12
    assert not any(s.masked for s in ds.samples)
    assert ds.by_key("lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg").identity == "Abel_Pacheco"
    assert len(ds.pairs) == 60
    assert Counter(p.fold for p in ds.pairs) == {k: 6 for k in range(10)}
    # each set: 3 matched lines then 3 mismatched lines
    assert [p.label for p in ds.pairs[:6]] == [1, 1, 1, 0, 0, 0]
    first = ds.pairs[0]  # line 2: 'Carl_Reiner\t2\t3'
    assert (first.ref, first.probe, first.label, first.fold) == (
        "lfw/Carl_Reiner/Carl_Reiner_0002.jpg", "lfw/Carl_Reiner/Carl_Reiner_0003.jpg", 1, 0)
    for p in ds.pairs:
        same = ds.by_key(p.ref).identity == ds.by_key(p.probe).identity
        assert same == bool(p.label)
    assert ds.info["sets"] == 10 and ds.info["pairs_per_set"] == 6


def test_lfw_root_may_be_the_lfw_folder_itself():
    ds = read("lfw", FIXTURES / "lfw" / "lfw")  # pairs.txt is found beside it
    assert len(ds.samples) == 29
    assert ds.pairs[0].ref == "Carl_Reiner/Carl_Reiner_0002.jpg"


def test_lfw_tolerates_spaces_crlf_and_trailing_blank_lines(tmp_path):
    root = fixture_copy("lfw", tmp_path)
    pairs = root / "pairs.txt"
    text = pairs.read_text().replace("\t", "  ").replace("\n", "\r\n")
    pairs.write_bytes((text + "\r\n\r\n").encode())
    assert read("lfw", root).pairs == read("lfw", FIXTURES / "lfw").pairs


@pytest.mark.parametrize(("line", "text", "message"), [
    (1, "10 three", r"pairs.txt, line 1: expected the header 'sets pairs_per_set'"),
    (2, "Carl_Reiner 2 Zico 1", r"pairs.txt, line 2: expected a matched pair .*set 1, pair 1 of 3"),
    (5, "Aaron_Eckhart 1 1", r"pairs.txt, line 5: expected a mismatched .*set 1, pair 1 of 3"),
    (3, "Abel_Pacheco two 4", r"pairs.txt, line 3: expected a positive image number, got 'two'"),
    (3, "Abel_Pacheco 0 4", r"pairs.txt, line 3: expected a positive image number, got '0'"),
    (4, "", r"pairs.txt, line 4: unexpected blank line"),
    (6, "Ian_Smith 3 Ian_Smith 2", r"pairs.txt, line 6: mismatched pair names one identity"),
])
def test_lfw_malformed_lines_name_file_and_line(tmp_path, line, text, message):
    root = fixture_copy("lfw", tmp_path)
    set_line(root / "pairs.txt", line, text)
    with pytest.raises(DatasetError, match=message):
        read("lfw", root)


def test_lfw_pair_counts_must_match_the_header(tmp_path):
    root = fixture_copy("lfw", tmp_path)
    pairs = root / "pairs.txt"
    set_line(pairs, 61, None)
    with pytest.raises(DatasetError, match=r"pairs.txt: the header promises 10 sets of 3 .* "
                                           r"ends after 59 pair lines"):
        read("lfw", root)
    pairs.write_text(pairs.read_text() + "Zico\t1\tDean_Barker\t1\nZico\t1\tGray_Davis\t1\n")
    with pytest.raises(DatasetError, match=r"pairs.txt, line 62: more pair lines than the 60"):
        read("lfw", root)


def test_lfw_missing_image_is_named(tmp_path):
    root = fixture_copy("lfw", tmp_path)
    gone = root / "lfw" / "Carl_Reiner" / "Carl_Reiner_0003.jpg"
    gone.unlink()
    with pytest.raises(DatasetError, match=r"pairs.txt, line 2: image 3 of 'Carl_Reiner' is "
                                           r"missing") as err:
        read("lfw", root)
    assert str(gone) in str(err.value)


def test_lfw_unknown_identity_is_named(tmp_path):
    root = fixture_copy("lfw", tmp_path)
    set_line(root / "pairs.txt", 2, "Nobody_Known\t1\t2")
    with pytest.raises(DatasetError, match=r"line 2: unknown identity 'Nobody_Known'"):
        read("lfw", root)


def test_lfw_missing_pairs_file_and_unknown_option(tmp_path):
    root = fixture_copy("lfw", tmp_path)
    (root / "pairs.txt").unlink()
    with pytest.raises(DatasetError, match=r"LFW pairs file not found: .*pairs.txt"):
        read("lfw", root)
    with pytest.raises(ProtocolError, match=r"unknown field 'dataset.options.pair'"):
        read("lfw", FIXTURES / "lfw", pair="pairs.txt")


# --------------------------------------------------------------------------- MFR2


def test_mfr2_fixture_labels_masks_and_folds():
    ds = read("mfr2", FIXTURES / "mfr2")
    assert len(ds.samples) == 18 and len({s.identity for s in ds.samples}) == 6
    unmasked = ds.by_key("mfr2/AdrianDunbar/AdrianDunbar_0001.png")
    masked = ds.by_key("mfr2/AdrianDunbar/AdrianDunbar_0002.png")
    assert (unmasked.masked, unmasked.mask_type) == (False, None)
    assert (masked.masked, masked.mask_type) == (True, "surgical_blue")
    assert ds.info["images_masked"] == 12 and ds.info["images_unmasked"] == 6
    assert ds.info["unlabelled_images"] == 0
    # 20 header-less lines: 3 tokens genuine, 4 impostor; fold of line i = i * 10 // 20
    assert len(ds.pairs) == 20 and Counter(p.label for p in ds.pairs) == {0: 10, 1: 10}
    assert [p.fold for p in ds.pairs] == [i * 10 // 20 for i in range(20)]
    assert "i*10//n" in ds.info["fold_rule"]
    assert ds.pairs[0].ref == "mfr2/AdrianDunbar/AdrianDunbar_0001.png"  # 'AdrianDunbar 1 3'
    assert read("mfr2", FIXTURES / "mfr2" / "mfr2").pairs[0].ref == (
        "AdrianDunbar/AdrianDunbar_0001.png")


@pytest.mark.parametrize(("line", "text", "message"), [
    (1, "AdrianDunbar 1 no-mask", r"mfr2_labels.txt, line 1: expected 'Name, n, masktype'"),
    (2, "AdrianDunbar, two, cloth", r"mfr2_labels.txt, line 2: expected a positive image number"),
    (3, "AdrianDunbar, 1, cloth", r"mfr2_labels.txt, line 3: AdrianDunbar_0001.png is already "
                                  r"labelled on line 1"),
    (4, "Nobody, 1, no-mask", r"mfr2_labels.txt, line 4: unknown identity 'Nobody'"),
    (5, "NancyPelosi, 7, cloth", r"mfr2_labels.txt, line 5: image is missing: .*"
                                 r"NancyPelosi_0007.png"),
])
def test_mfr2_bad_label_lines(tmp_path, line, text, message):
    root = fixture_copy("mfr2", tmp_path)
    set_line(root / "mfr2" / "mfr2_labels.txt", line, text)
    with pytest.raises(DatasetError, match=message):
        read("mfr2", root)


@pytest.mark.parametrize(("text", "message"), [
    ("AdrianDunbar 1 3 4 5", r"pairs.txt, line 1: expected 'name n1 n2' or 'name1 n1 name2 n2'"),
    ("AdrianDunbar 1 9", r"pairs.txt, line 1: image 9 of 'AdrianDunbar' is missing: .*"
                         r"AdrianDunbar_0009.png"),
    ("Nobody 1 SimonCowell 2", r"pairs.txt, line 1: unknown identity 'Nobody'"),
])
def test_mfr2_bad_pair_lines(tmp_path, text, message):
    root = fixture_copy("mfr2", tmp_path)
    set_line(root / "mfr2" / "pairs.txt", 1, text)
    with pytest.raises(DatasetError, match=message):
        read("mfr2", root)


def test_mfr2_unlabelled_images_are_left_out_and_counted(tmp_path):
    root = fixture_copy("mfr2", tmp_path)
    extra = root / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0004.png"
    extra.write_bytes((root / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0001.png").read_bytes())
    ds = read("mfr2", root)
    assert ds.info["unlabelled_images"] == 1 and len(ds.samples) == 18
    set_line(root / "mfr2" / "pairs.txt", 1, "AdrianDunbar 1 4")
    with pytest.raises(DatasetError, match=r"line 1: image 4 of 'AdrianDunbar' is not a sample"):
        read("mfr2", root)
