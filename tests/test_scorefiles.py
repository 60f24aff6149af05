"""Score files: CSV and bob 4-column round trips, bob 5-column and gzip reading, format
detection, errors naming file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from meerbench.metrics import scorefiles as sf
from meerbench.metrics.errors import ScoreFileError


def test_side_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    scores = np.array([0.1 + 0.2, -1e-300, 0.75, 1 / 3])
    sf.write_scores_csv(path, scores, [1, 0, 1, 0], refs=["a.jpg", "b, 2.jpg", "c.jpg", "d.jpg"],
                        probes=["e.jpg", "f.jpg", "g.jpg", "h.jpg"],
                        ref_ids=["ann", "bob", "cy", "dee"], probe_ids=["ann", "eve", "cy", "fay"],
                        folds=np.array([0, 0, 1, 1]), conditions=["UMR-MP"] * 4)
    assert path.read_text().splitlines()[0] == ",".join(sf.CSV_COLUMNS)
    table = sf.load_scores(path)
    np.testing.assert_array_equal(table.scores, scores)  # bit-exact through repr
    assert table.labels.tolist() == [True, False, True, False]
    assert table.refs.tolist()[1] == "b, 2.jpg"
    assert table.probe_ids.tolist() == ["ann", "eve", "cy", "fay"]
    assert table.folds.tolist() == [0, 0, 1, 1] and table.folds.dtype == np.int64
    assert table.conditions.tolist() == ["UMR-MP"] * 4
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_minimal_csv_leaves_optional_columns_empty(tmp_path: Path) -> None:
    path = tmp_path / "min.csv"
    path.write_text("label,score,extra\n1,0.9,x\n\n0,0.2,y\n")
    table = sf.load_scores(path)
    assert table.scores.tolist() == [0.9, 0.2] and table.labels.tolist() == [True, False]
    assert table.folds is None and table.ref_ids is None and table.conditions is None
    sf.write_scores_csv(tmp_path / "empty_cols.csv", table.scores, table.labels)
    again = sf.load_scores(tmp_path / "empty_cols.csv")
    assert again.folds is None and again.refs is None


def test_bob_four_column_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "scores-dev"
    sf.write_bob4(path, [0.5, -2.25, 3.0], ["s1", "s1", "s2"], ["s1", "s2", "s2"],
                  probe_keys=["s1/img1", "s2/img4", "s2/img5"])
    assert path.read_text() == "s1 s1 s1/img1 0.5\ns1 s2 s2/img4 -2.25\ns2 s2 s2/img5 3.0\n"
    table = sf.load_scores(path)
    assert table.labels.tolist() == [True, False, True]
    assert table.scores.tolist() == [0.5, -2.25, 3.0]
    assert table.probes.tolist() == ["s1/img1", "s2/img4", "s2/img5"]
    assert table.folds is None


def test_bob_four_column_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "bob.txt"
    path.write_text("# written by bob\n\na a k1 1.5\na b\tk2   -0.5\n")
    assert sf.load_scores(path).labels.tolist() == [True, False]


def test_bob_five_column(tmp_path: Path) -> None:
    path = tmp_path / "scores-eval"
    path.write_text("# claimed model real probe score\n"
                    "ann ann/m1 ann ann/p2 0.8\n"
                    "ann ann/m1 bob bob/p3 -0.125\n\n"
                    "bob bob/m1\tbob bob/p3   1e-3\n")
    table = sf.load_scores(path)
    assert table.labels.tolist() == [True, False, True]
    assert table.scores.tolist() == [0.8, -0.125, 0.001]
    assert table.ref_ids.tolist() == ["ann", "ann", "bob"]
    assert table.refs.tolist() == ["ann/m1", "ann/m1", "bob/m1"]
    assert table.probe_ids.tolist() == ["ann", "bob", "bob"]
    assert table.probes.tolist() == ["ann/p2", "bob/p3", "bob/p3"]
    assert table.folds is None and table.conditions is None


def _same(a: sf.ScoreTable, b: sf.ScoreTable) -> None:
    for name in ("scores", "labels", "ref_ids", "probe_ids", "folds", "conditions", "refs",
                 "probes"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("name", ["pairs.scores.csv.gz", "pairs.scores.csv"])
def test_gzip_reads_as_the_plain_file(tmp_path: Path, name: str) -> None:
    plain = tmp_path / "plain.csv"
    sf.write_scores_csv(plain, [0.1 + 0.2, -0.5, 1 / 3], [1, 0, 0], refs=["a", "b", "c"],
                        probes=["d", "e", "f"], ref_ids=["x", "y", "x"],
                        probe_ids=["x", "x", "z"], folds=[0, 1, 1], conditions=["MR-MP"] * 3)
    (tmp_path / "gz").mkdir()
    packed = tmp_path / "gz" / name
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    _same(sf.load_scores(plain), sf.load_scores(packed))
    bob = tmp_path / "bob.gz"
    bob.write_bytes(gzip.compress(b"a a/1 a a/2 0.5\na a/1 b b/1 0.25\n"))
    assert sf.load_scores(bob).refs.tolist() == ["a/1", "a/1"]
    assert sf.load_scores(bob).labels.tolist() == [True, False]


def test_broken_gzip_is_a_score_file_error(tmp_path: Path) -> None:
    data = gzip.compress(("score,label\n" + "0.5,1\n0.25,0\n" * 500).encode(), mtime=0)
    truncated, corrupt = tmp_path / "truncated.csv.gz", tmp_path / "corrupt.csv.gz"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:])
    for path in (truncated, corrupt):
        with pytest.raises(ScoreFileError, match=f"{path.name}: cannot read score file"):
            sf.load_scores(path)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty score file"),
    ("score;label\n", "first line should be a CSV header with columns score,label or bob's 4 "
                      "whitespace-separated fields .* or 5 whitespace-separated fields"),
    ("a 1 b 2 0.5 x\n", "or 5 whitespace-separated fields \\(ref_subject ref_key probe_subject "
                       "probe_key score\\), got 'a 1 b 2 0.5 x'"),
    ("score,ref\n0.5,a\n", ":1: header lacks column\\(s\\) label"),
    ("score,label\n", "no pairs after the header on line 1"),
    ("score,label,score\n1,1,1\n", ":1: repeated column name"),
    ("score,label\n0.5,1\n0.4,0,7\n", ":3: expected 2 comma-separated fields as in the header, "
                                      "got 3"),
    ("score,label\n0.5,1\n\nhigh,0\n", ":4: score 'high' is not a number"),
    ("score,label\n0.5,1\nnan,0\n", ":3: score 'nan' is not a finite number"),
    ("score,label\n0.5,yes\n", ":2: label 'yes' should be 1 \\(genuine\\) or 0 \\(impostor\\)"),
    ("score,label,fold\n0.5,1,0\n0.4,0,\n", ":3: fold '': give every pair a fold or none"),
    ("score,label,fold\n0.5,1,a\n", ":2: fold 'a': expected an integer"),
    ("a a k 0.5\nb a k\n", ":2: expected 4 whitespace-separated fields \\(ref_subject "
                           "probe_subject probe_key score\\) as on the first line, got 3"),
    ("a r1 a p1 0.5\na r1 b p2 0.1 0.2\n", ":2: expected 5 whitespace-separated fields "
                                          "\\(ref_subject ref_key probe_subject probe_key "
                                          "score\\) as on the first line, got 6"),
    ("# 5 columns\na r1 a p1 0.5\na r1 b p2 low\n", ":3: score 'low' is not a number"),
    ("a a k 0.5\nb a k inf\n", ":2: score 'inf' is not a finite number"),
])
def test_malformed_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "gz").mkdir()
    plain, packed = tmp_path / "bad.txt", tmp_path / "gz" / "bad.txt"  # gzip known by content
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        with pytest.raises(ScoreFileError, match=f"bad.txt{message if message[0] == ':' else ''}"):
            sf.load_scores(path)
        with pytest.raises(ScoreFileError, match=message):
            sf.load_scores(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScoreFileError, match="missing.csv: cannot read score file"):
        sf.load_scores(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00score")
    with pytest.raises(ScoreFileError, match="binary.csv: cannot read score file"):
        sf.load_scores(binary)


def test_writers_reject_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ScoreFileError, match="probe_id 'two words' is empty or holds whitespace"):
        sf.write_bob4(tmp_path / "x", [0.1], ["a"], ["two words"])
    with pytest.raises(ScoreFileError, match="column ref_id has 1 values for 2 scores"):
        sf.write_scores_csv(tmp_path / "y.csv", [0.1, 0.2], [1, 0], ref_ids=["a"])
    assert list(tmp_path.iterdir()) == []


def _line_by_line(path: Path) -> sf.ScoreTable:
    """The reference reader: Python's csv module / str.split, one line at a time."""
    with sf._open_text(path) as handle:
        first = next(line for line in handle if line.strip() and line[0] != "#")
        handle.seek(0)
        if "," in first:
            return sf._read_csv(path, handle)
        return sf._read_bob(path, handle, len(first.split()))


WELL_FORMED = {  # pyarrow reads these itself
    "engine.csv": None,  # written by write_scores_csv below
    "extra_columns.csv": "fold,x,label,score,probe_id\n3,a,1,0.5,ann\n\n4,b,0,-1e-3,bob\n",
    "crlf.csv": "score,label,condition\r\n0.25,0,UMR-MP\r\n1e5,1,MR-MP\r\n",
    "padded_cells.csv": "score,label,probe_id,fold\n 0.5 , 1 , ann ,2\n0.1,0,  bob,3\n",
    "empty_optional.csv": "score,label,ref,fold\n0.5,1,,\n0.4,0,,\n",
    "bob4": "a a a/1 0.5\na b b/2 -0.25\n",
    "bob5": "a a/1 a a/2 0.5\na a/1 b b/1 2.5e-1\n",
}
LINE_BY_LINE = {  # the fallback reads these (odd spacing, comments, quirks Python allows)
    "underscore.csv": "score,label\n1_0,1\n0.5,0\n",
    "blank_cells_row.csv": "score,label\n0.5,1\n , \n0.25,0\n",
    "spaced_header.csv": " score , label\n0.5,1\n0.2,0\n",
    "bob_tabs": "a\ta k1 1.5\na b   k2 -0.5\n",
    "bob_comment": "# a b c\na a k1 1.5\na b k2 -0.5\n",
    "bob_inline_hash": "#x a k1 1.5\na b k2 -0.5\n",
}


@pytest.mark.parametrize("name", [*WELL_FORMED, *LINE_BY_LINE])
@pytest.mark.parametrize("packed", [False, True])
def test_fast_reader_equals_the_line_by_line_reader(tmp_path: Path, name: str,
                                                    packed: bool) -> None:
    path = tmp_path / name
    text = {**WELL_FORMED, **LINE_BY_LINE}[name]
    if text is None:
        sf.write_scores_csv(path, [0.1 + 0.2, -1e-300, 0.75, 1 / 3], [1, 0, 1, 0],
                            refs=["a.jpg", 'b, "2".jpg', "c.jpg", "a.jpg"],
                            probes=["e.jpg", "f.jpg", "g.jpg", "h.jpg"],
                            ref_ids=["ann", "bob", "cy", "ann"], probe_ids=["ann", "é", "cy", "x"],
                            folds=[0, 0, 1, 1], conditions=["UMR-MP", "MR-MP"] * 2)
    else:
        path.write_text(text)
    if packed:
        path.write_bytes(gzip.compress(path.read_bytes()))
    fast = (sf._fast_csv(path, _first_line(path), set(sf.CSV_COLUMNS))
            if name.endswith(".csv") else sf._fast_bob(path, len(_first_line(path).split())))
    assert (fast is not None) == (name in WELL_FORMED)
    _same(sf.load_scores(path), _line_by_line(path))


def _first_line(path: Path) -> str:
    with sf._open_text(path) as handle:
        return next(line for line in handle if line.strip() and line[0] != "#")


def test_large_generated_file_reads_the_same_both_ways(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    path = tmp_path / "big.scores.csv"
    ids = rng.integers(0, 300, n)
    sf.write_scores_csv(path, rng.normal(size=n) * 10.0 ** rng.integers(-5, 5, n),
                        rng.random(n) < 0.1, refs=[f"r{i}.png" for i in rng.integers(0, 3000, n)],
                        probes=[f"p{i}.png" for i in rng.integers(0, 3000, n)],
                        ref_ids=[f"id{i}" for i in ids], probe_ids=[f"id{i}" for i in ids[::-1]],
                        folds=ids % 10, conditions=np.array(["A", "B", "C"])[ids % 3])
    table = sf.load_scores(path)
    _same(table, _line_by_line(path))
    assert table.probe_ids[0] is table.probe_ids[np.flatnonzero(
        table.probe_ids == table.probe_ids[0])[-1]]  # one str per distinct value


def test_columns_keeps_only_what_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    sf.write_scores_csv(path, [0.5, 0.1], [1, 0], refs=["a", "b"], probe_ids=["x", "y"],
                        folds=[0, 1], conditions=["C", "C"])
    table = sf.load_scores(path, columns=("probe_id", "fold"))
    assert table.probe_ids.tolist() == ["x", "y"] and table.folds.tolist() == [0, 1]
    assert table.refs is None and table.conditions is None
    assert table.scores.tolist() == [0.5, 0.1] and table.labels.tolist() == [True, False]


def test_parquet_round_trip_is_exact_and_known_by_content(tmp_path: Path) -> None:
    csv_path, parquet = tmp_path / "pairs.csv", tmp_path / "pairs.scores.csv"  # name says CSV
    scores = np.array([0.1 + 0.2, -1e-300, 0.75, 1 / 3])
    columns = {"refs": ["a.jpg", "b, 2.jpg", "c.jpg", "a.jpg"],
               "ref_ids": ["ann", "bob", "cy", "ann"], "probe_ids": ["ann", "é", "cy", "x"],
               "folds": [0, 0, 1, 1], "conditions": ["UMR-MP"] * 4}
    sf.write_scores_csv(csv_path, scores, [1, 0, 1, 0], **columns)
    sf.write_table_parquet(parquet, sf.load_scores(csv_path))
    assert parquet.read_bytes()[:4] == b"PAR1"
    table = sf.load_scores(parquet)
    _same(table, sf.load_scores(csv_path))
    assert table.probes is None and table.folds.dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv", "pairs.scores.csv"]


def test_parquet_errors_name_file_and_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = {"no_label": ({"score": [0.5]}, "lacks column\\(s\\) label"),
             "nan": ({"score": [0.5, np.nan], "label": [1, 0]}, "row 2: score nan is not"),
             "label": ({"score": [0.5, 0.1], "label": [1, 2]}, "row 2: label 2 should be 1"),
             "text_score": ({"score": ["0.5"], "label": [1]}, "column score should hold a num"),
             "empty": ({"score": pa.array([], pa.float64()), "label": pa.array([], pa.int8())},
                       "empty score file")}
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table(data), path)
        with pytest.raises(ScoreFileError, match=f"{name}.parquet.*{message}"):
            sf.load_scores(path)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 50)
    with pytest.raises(ScoreFileError, match="broken.parquet: cannot read Parquet score file"):
        sf.load_scores(broken)
    with pytest.raises(ScoreFileError, match="column ref_id has 1 values for 2 scores"):
        sf.write_scores_parquet(tmp_path / "y.parquet", [0.1, 0.2], [1, 0], ref_ids=["a"])


SHIPPED = sorted((Path(__file__).parents[1] / "reports" / "results").glob("*.scores.csv.gz"))


@pytest.mark.parametrize("path", SHIPPED[:3], ids=lambda p: p.name)
def test_shipped_score_files_take_the_fast_reader_with_the_same_table(path: Path) -> None:
    assert sf._fast_csv(path, _first_line(path), set(sf.CSV_COLUMNS)) is not None
    _same(sf.load_scores(path), _line_by_line(path))


def test_metrics_command_reads_its_parquet_copy_the_same(capsys, tmp_path: Path) -> None:
    import json

    from meerbench.cli import main

    parquet = tmp_path / "copy.parquet"
    args = ["metrics", "--bootstrap", "50", "--json", "--no-progress"]
    assert main([*args, "--scores", str(SHIPPED[0]), "--save-parquet", str(parquet)]) == 0
    from_csv = json.loads(capsys.readouterr().out)
    assert main([*args, "--scores", str(parquet)]) == 0
    from_parquet = json.loads(capsys.readouterr().out)
    assert from_parquet["verification"] == from_csv["verification"]
    assert parquet.stat().st_size < SHIPPED[0].stat().st_size
