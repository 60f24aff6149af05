"""Per-pair score files, so every metric can be recomputed without the model.

Two formats are read, told apart by the first non-blank line:

- CSV with a header holding at least ``score,label`` and optionally ``ref,probe`` (image names),
  ``ref_id,probe_id`` (identities), ``fold`` and ``condition``; other columns are ignored. This
  is the side file the engine writes (:data:`CSV_COLUMNS`).
- bob's text formats, whitespace-separated, no header, told apart by the number of fields:
  4 columns ``ref_subject probe_subject probe_key score`` or 5 columns
  ``ref_subject ref_key probe_subject probe_key score``; a pair is genuine when the two subjects
  are equal. Lines starting with # are skipped.

Either may be gzip-compressed (``*.scores.csv.gz``, as the shipped reference Results carry them):
gzip is recognised by its magic bytes, whatever the file's name. pyarrow parses both; a file it
does not take as well-formed goes through the line-by-line reader, which names the bad line.

- Parquet (:func:`write_scores_parquet`), the binary form of the CSV for large runs, recognised
  by its magic bytes.

Writes are atomic (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from meerbench.io import atomic_open
from meerbench.metrics.errors import ScoreFileError

CSV_COLUMNS = ("ref", "probe", "ref_id", "probe_id", "label", "score", "fold", "condition")
_TEXT_COLUMNS = ("ref_ids", "probe_ids", "conditions", "refs", "probes")
#: ScoreTable's optional fields and their CSV column.
_FIELD_COLUMN = {"ref_ids": "ref_id", "probe_ids": "probe_id", "conditions": "condition",
                 "refs": "ref", "probes": "probe", "folds": "fold"}
#: bob's formats by field count: the name of each field; a name's ScoreTable column in _BOB_FIELD.
BOB_COLUMNS = {4: ("ref_subject", "probe_subject", "probe_key", "score"),
               5: ("ref_subject", "ref_key", "probe_subject", "probe_key", "score")}
_BOB_FIELD = {"ref_subject": "ref_ids", "ref_key": "refs", "probe_subject": "probe_ids",
              "probe_key": "probes"}
_BOB_CSV = {"ref_subject": "ref_id", "ref_key": "ref", "probe_subject": "probe_id",
            "probe_key": "probe"}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """Scores (float64) and labels (bool, True = genuine) with optional per-pair columns.

    ``ref_ids``/``probe_ids`` name identities, ``refs``/``probes`` name images; an optional
    column is None when the file does not carry it (or leaves it empty on every row).
    """

    scores: np.ndarray
    labels: np.ndarray
    ref_ids: np.ndarray | None = None
    probe_ids: np.ndarray | None = None
    folds: np.ndarray | None = None
    conditions: np.ndarray | None = None
    refs: np.ndarray | None = None
    probes: np.ndarray | None = None

    def of_condition(self, condition: str) -> ScoreTable | None:
        """The pairs of one condition (UMR-MP, ...); None without a condition column or pairs."""
        if self.conditions is None:
            return None
        sel = self.conditions == condition
        if not sel.any():
            return None
        return ScoreTable(**{f.name: None if (v := getattr(self, f.name)) is None else v[sel]
                             for f in fields(self)})


def load_scores(path: str | os.PathLike[str],
                columns: Collection[str] | None = None) -> ScoreTable:
    """Read a score file: CSV or bob 4- or 5-column text, plain or gzip-compressed, or Parquet
    (:func:`write_scores_parquet`); ScoreFileError names the file, line and problem.

    ``columns`` (CSV names, :data:`CSV_COLUMNS`) keeps only those optional columns (the others
    are None), which saves time and memory on large files. Text is parsed by pyarrow's
    multithreaded reader; a file it does not take as well-formed (a bad cell, a comment, odd
    spacing) is read again line by line, which reads what the format allows and names the first
    bad line, so both ways give the same table.
    """
    path = Path(path)
    keep = set(CSV_COLUMNS if columns is None else columns) | {"score", "label"}
    try:
        with path.open("rb") as raw:
            magic = raw.read(len(_PARQUET_MAGIC))
        if magic == _PARQUET_MAGIC:
            return _only(_read_parquet(path, keep), keep)
        with _open_text(path) as handle:
            first = next((line for line in handle if line.strip() and line[0] != "#"), None)
            if first is None:
                raise ScoreFileError(f"{path}: empty score file (no pairs)")
            handle.seek(0)
            if "," in first:
                table = _fast_csv(path, first, keep)
                pa.default_memory_pool().release_unused()  # the parser's blocks, now converted
                return _only(table or _read_csv(path, handle), keep)
            if len(first.split()) in BOB_COLUMNS:
                n = len(first.split())
                return _only(_fast_bob(path, n) or _read_bob(path, handle, n), keep)
            raise ScoreFileError(
                f"{path}: first line should be a CSV header with columns score,label or bob's "
                f"{' or '.join(_bob_layout(n) for n in BOB_COLUMNS)}, "
                f"got {first.strip()[:80]!r}"
            )
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:  # EOF, zlib: broken gzip
        raise ScoreFileError(f"{path}: cannot read score file: {exc}") from None


def _only(table: ScoreTable, keep: set[str]) -> ScoreTable:
    """``table`` without the optional columns not in ``keep`` (CSV names)."""
    dropped = {field: None for field, name in _FIELD_COLUMN.items() if name not in keep}
    return replace(table, **dropped) if dropped else table


def _fast_csv(path: Path, first: str, keep: set[str]) -> ScoreTable | None:
    """The CSV by pyarrow, or None where the line-by-line reader must decide (see
    :func:`load_scores`)."""
    header = next(csv.reader([first]))
    wanted = [name for name in CSV_COLUMNS if name in header and name in keep]
    if ([name.strip() for name in header] != header or len(set(header)) != len(header)
            or "score" not in wanted or "label" not in wanted):
        return None
    types = {name: pa.float64() if name == "score" else _DICTIONARY for name in wanted}
    table = _arrow_text(path, pcsv.ReadOptions(), pcsv.ParseOptions(),
                        pcsv.ConvertOptions(column_types=types, include_columns=wanted))
    return None if table is None else _from_arrow(table, {name: name for name in wanted})


def _fast_bob(path: Path, n: int) -> ScoreTable | None:
    """bob's text by pyarrow when fields are split by single spaces and no line is a comment;
    else None (see :func:`load_scores`)."""
    names = list(BOB_COLUMNS[n])
    types = {name: pa.float64() if name == "score" else _DICTIONARY for name in names}
    table = _arrow_text(path, pcsv.ReadOptions(column_names=names),
                        pcsv.ParseOptions(delimiter=" ", quote_char=False),
                        pcsv.ConvertOptions(column_types=types))
    if table is None:
        return None
    columns = {"score": "score", **{_BOB_CSV[name]: name for name in names[:-1]}}
    return _from_arrow(table, columns)


def _arrow_text(path: Path, read: Any, parse: Any, convert: Any) -> Any:
    """A pyarrow Table of the text file (gzip by content), or None if pyarrow rejects it."""
    with path.open("rb") as raw:
        compressed = raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    try:  # pyarrow reads several blocks at once: a list of Python rows never exists
        with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
            return pcsv.read_csv(stream, read_options=read, parse_options=parse,
                                 convert_options=convert)
    except (pa.ArrowException, KeyError):
        return None


def _from_arrow(table: Any, columns: dict[str, str]) -> ScoreTable | None:
    """ScoreTable from an Arrow table with CSV column names ``columns`` (CSV name: table
    column), or None when a value needs the line-by-line reader (to read it or name its line).
    """
    if table.num_rows == 0 or any(table[c].null_count for c in columns.values()):
        return None
    scores = table[columns["score"]].to_numpy()
    if not np.isfinite(scores).all():
        return None
    table = table.unify_dictionaries()
    coded = {name: _coded(table[column]) for name, column in columns.items() if name != "score"}
    if "label" in coded:
        values, codes = coded.pop("label")
        if not set(values.tolist()) <= {"0", "1"}:
            return None
        labels = (values == "1")[codes]
    else:  # bob: genuine when the subjects agree; no field holds whitespace, no line is a comment
        if (any(v.split() != [v] for values, _ in coded.values() for v in values.tolist())
                or any(v.startswith("#") for v in coded["ref_id"][0].tolist())):
            return None
        (ref_values, ref_codes), (probe_values, probe_codes) = coded["ref_id"], coded["probe_id"]
        where = {v: i for i, v in enumerate(ref_values.tolist())}
        in_ref = np.asarray([where.get(v, -1) for v in probe_values.tolist()], dtype=np.int64)
        labels = ref_codes == in_ref[probe_codes]
    folds = None
    if "fold" in coded:
        values, codes = coded.pop("fold")
        if any(values.tolist()):  # a fold on some pair: every pair needs an integer one
            try:
                folds = np.asarray([int(v) for v in values.tolist()], dtype=np.int64)[codes]
            except ValueError:
                return None
    text = {name: _shared(*value) for name, value in coded.items()}
    return ScoreTable(scores, labels, folds=folds,
                      **{field: text.get(name) for field, name in
                         zip(_TEXT_COLUMNS, ("ref_id", "probe_id", "condition", "ref", "probe"),
                             strict=True)})


def _coded(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary column (one dictionary) as its distinct values, stripped, in an object
    array, and each row's index into them."""
    combined = column.combine_chunks()
    values = np.asarray([v.strip() for v in combined.dictionary.to_pylist()], dtype=object)
    return values, combined.indices.to_numpy(zero_copy_only=False)


def _shared(values: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """Rows as an object array whose equal cells share one str (8 bytes a row, not a str a
    row), or None when every cell is empty (as :func:`_text`)."""
    return values[codes] if any(values.tolist()) else None


def _open_text(path: Path) -> IO[str]:
    """The file as text, decompressed when it starts with gzip's magic bytes (a BOM is not a
    name: utf-8-sig)."""
    with path.open("rb") as raw:
        compressed = raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _bob_layout(n: int) -> str:
    return f"{n} whitespace-separated fields ({' '.join(BOB_COLUMNS[n])})"


def _read_csv(path: Path, handle: Any) -> ScoreTable:
    reader = csv.reader(handle)
    header = [name.strip() for name in next(row for row in reader if row)]
    line = reader.line_num
    if len(set(header)) != len(header):
        raise ScoreFileError(f"{path}:{line}: repeated column name in header {header}")
    missing = [name for name in ("score", "label") if name not in header]
    if missing:
        raise ScoreFileError(f"{path}:{line}: header lacks column(s) {', '.join(missing)}; "
                             f"expected at least score,label, got {','.join(header)}")
    where = {name: header.index(name) for name in CSV_COLUMNS if name in header}
    columns: dict[str, list[str]] = {name: [] for name in where}
    numbers = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ScoreFileError(f"{path}:{reader.line_num}: expected {len(header)} "
                                 f"comma-separated fields as in the header, got {len(row)}")
        for name, i in where.items():
            columns[name].append(row[i].strip())
        numbers.append(reader.line_num)
    if not numbers:
        raise ScoreFileError(f"{path}: no pairs after the header on line {line}")
    lines = np.asarray(numbers)
    scores = _floats(path, columns["score"], lines)
    labels = _labels(path, columns["label"], lines)
    folds = _folds(path, columns.get("fold"), lines)
    text = {field: _text(columns.get(name)) for field, name in
            zip(_TEXT_COLUMNS, ("ref_id", "probe_id", "condition", "ref", "probe"), strict=True)}
    return ScoreTable(scores, labels, folds=folds, **text)


def _read_bob(path: Path, handle: Any, n: int) -> ScoreTable:
    """bob's ``n``-column text (:data:`BOB_COLUMNS`); every line has the first line's fields."""
    names = BOB_COLUMNS[n]
    columns: list[list[str]] = [[] for _ in names]
    lines = []
    for number, line in enumerate(handle, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != n:
            raise ScoreFileError(f"{path}:{number}: expected {_bob_layout(n)} as on the first "
                                 f"line, got {len(fields)}")
        for column, value in zip(columns, fields, strict=True):
            column.append(value)
        lines.append(number)
    text = {_BOB_FIELD[name]: np.asarray(column, dtype=object)
            for name, column in zip(names[:-1], columns, strict=False)}
    return ScoreTable(_floats(path, columns[-1], np.asarray(lines)),
                      text["ref_ids"] == text["probe_ids"], **text)


def _floats(path: Path, cells: list[str], lines: np.ndarray) -> np.ndarray:
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        try:
            out[i] = float(cell)
        except ValueError:
            raise ScoreFileError(f"{path}:{lines[i]}: score {cell!r} is not a number") from None
        if not math.isfinite(out[i]):
            raise ScoreFileError(f"{path}:{lines[i]}: score {cell!r} is not a finite number")
    return out


def _labels(path: Path, cells: list[str], lines: np.ndarray) -> np.ndarray:
    labels = np.asarray(cells)
    bad = np.flatnonzero((labels != "0") & (labels != "1"))
    if bad.size:
        raise ScoreFileError(f"{path}:{lines[bad[0]]}: label {cells[bad[0]]!r} should be "
                             f"1 (genuine) or 0 (impostor)")
    return labels == "1"


def _folds(path: Path, cells: list[str] | None, lines: np.ndarray) -> np.ndarray | None:
    if cells is None or not any(cells):
        return None
    out = np.empty(len(cells), dtype=np.int64)
    for i, cell in enumerate(cells):
        try:
            out[i] = int(cell)
        except ValueError:
            expected = "give every pair a fold or none" if not cell else "expected an integer"
            raise ScoreFileError(f"{path}:{lines[i]}: fold {cell!r}: {expected}") from None
    return out


def _text(cells: list[str] | None) -> np.ndarray | None:
    return None if cells is None or not any(cells) else np.asarray(cells, dtype=object)


def write_scores_csv(
    path: str | os.PathLike[str],
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    refs: Sequence[Any] | None = None,
    probes: Sequence[Any] | None = None,
    ref_ids: Sequence[Any] | None = None,
    probe_ids: Sequence[Any] | None = None,
    folds: ArrayLike | None = None,
    conditions: Sequence[Any] | None = None,
) -> None:
    """Write the per-pair CSV (columns :data:`CSV_COLUMNS`; missing columns stay empty)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    given = (refs, probes, ref_ids, probe_ids, y, s, folds, conditions)
    columns = [_column(path, name, values, s.size) for name, values in
               zip(CSV_COLUMNS, given, strict=True)]
    with atomic_open(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(zip(*columns, strict=True))


def _column(path: Any, name: str, values: Any, n: int) -> list[str]:
    if values is None:
        return [""] * n
    _check_length(path, name, values, n)
    if name == "score":
        return [repr(float(v)) for v in values]
    if name in ("label", "fold"):
        return [str(int(v)) for v in values]
    return [str(v) for v in values]


def _check_length(path: Any, name: str, values: Any, n: int) -> None:
    if len(values) != n:
        raise ScoreFileError(f"cannot write {path}: column {name} has {len(values)} values "
                             f"for {n} scores")


def write_scores_parquet(
    path: str | os.PathLike[str],
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    refs: Sequence[Any] | None = None,
    probes: Sequence[Any] | None = None,
    ref_ids: Sequence[Any] | None = None,
    probe_ids: Sequence[Any] | None = None,
    folds: ArrayLike | None = None,
    conditions: Sequence[Any] | None = None,
) -> None:
    """Write the per-pair table as Parquet: the binary form of the CSV for large runs (columns
    :data:`CSV_COLUMNS`, text dictionary-encoded, missing columns left out, zstd), read back
    exactly by :func:`load_scores`."""
    s = np.asarray(scores, dtype=np.float64)
    given = dict(zip(CSV_COLUMNS, (refs, probes, ref_ids, probe_ids, labels, s, folds,
                                   conditions), strict=True))
    columns = {}
    for name, values in given.items():
        if values is None:
            continue
        _check_length(path, name, values, s.size)
        if name == "score":
            columns[name] = pa.array(s)
        elif name in ("label", "fold"):
            columns[name] = pa.array(np.asarray(values, dtype=np.int64).astype(
                np.int8 if name == "label" else np.int64))
        else:
            text = pa.array(np.asarray(values, dtype=object), from_pandas=False)
            columns[name] = text.cast(pa.string()).dictionary_encode()
    with atomic_open(path, "wb") as handle:
        pq.write_table(pa.table(columns), handle, compression="zstd")


def write_table_parquet(path: str | os.PathLike[str], table: ScoreTable) -> None:
    """:func:`write_scores_parquet` of a loaded table (e.g. a large CSV, to read it faster)."""
    write_scores_parquet(path, table.scores, table.labels, refs=table.refs, probes=table.probes,
                         ref_ids=table.ref_ids, probe_ids=table.probe_ids, folds=table.folds,
                         conditions=table.conditions)


def _read_parquet(path: Path, keep: set[str]) -> ScoreTable:
    """A file of :func:`write_scores_parquet` (or any Parquet with score and label columns);
    errors name the file and the row (1 = first pair)."""
    try:
        schema = pq.read_schema(path)
        table = pq.read_table(path, columns=[n for n in schema.names if n in keep])
        table = table.unify_dictionaries()
    except pa.ArrowException as exc:
        raise ScoreFileError(f"{path}: cannot read Parquet score file: {exc}") from None
    names = table.column_names
    missing = [name for name in ("score", "label") if name not in names]
    if missing:
        raise ScoreFileError(f"{path}: Parquet score file lacks column(s) {', '.join(missing)}; "
                             f"has {', '.join(names)}")
    if table.num_rows == 0:
        raise ScoreFileError(f"{path}: empty score file (no pairs)")
    for name in ("score", "label", "fold"):
        kinds = "fiu" if name == "score" else "biu"
        if name in names and (table[name].null_count or _numpy_kind(table[name]) not in kinds):
            raise ScoreFileError(f"{path}: Parquet column {name} should hold a number on every "
                                 f"row, got type {table[name].type} with "
                                 f"{table[name].null_count} empty row(s)")
    scores, labels = (table[name].to_numpy() for name in ("score", "label"))
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ScoreFileError(f"{path}: row {bad[0] + 1}: score {scores[bad[0]].item()!r} is not a "
                             f"finite number")
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise ScoreFileError(f"{path}: row {bad[0] + 1}: label {labels[bad[0]].item()!r} should be "
                             f"1 (genuine) or 0 (impostor)")
    text = {}
    for field, name in zip(_TEXT_COLUMNS, ("ref_id", "probe_id", "condition", "ref", "probe"),
                           strict=True):
        if name in names:
            column = table[name]
            if not pa.types.is_dictionary(column.type):
                column = column.cast(pa.string()).dictionary_encode()
            text[field] = _shared(*_coded(column))
    folds = table["fold"].to_numpy().astype(np.int64) if "fold" in names else None
    return ScoreTable(scores.astype(np.float64), labels.astype(bool), folds=folds, **text)


def _numpy_kind(column: Any) -> str:
    return np.dtype(column.type.to_pandas_dtype()).kind if not pa.types.is_dictionary(
        column.type) else "O"


def write_bob4(
    path: str | os.PathLike[str],
    scores: ArrayLike,
    ref_ids: Sequence[Any],
    probe_ids: Sequence[Any],
    probe_keys: Sequence[Any] | None = None,
) -> None:
    """Write bob's 4-column format (``ref_subject probe_subject probe_key score``).

    ``probe_keys`` (the probe image) defaults to the probe identity. Fields must be non-empty and
    free of whitespace, which the format cannot hold.
    """
    s = np.asarray(scores, dtype=np.float64)
    keys = probe_ids if probe_keys is None else probe_keys
    rows = [_column(path, name, values, s.size) for name, values in
            (("ref_id", ref_ids), ("probe_id", probe_ids), ("probe_key", keys), ("score", s))]
    for name, column in zip(("ref_id", "probe_id", "probe_key"), rows, strict=False):
        for value in column:
            if not value or value.split() != [value]:
                raise ScoreFileError(f"cannot write {path}: {name} {value!r} is empty or holds "
                                     f"whitespace, which bob's 4-column format cannot hold")
    with atomic_open(path) as handle:
        handle.writelines(" ".join(fields) + "\n" for fields in zip(*rows, strict=True))
