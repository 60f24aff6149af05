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
gzip is recognised by its magic bytes, whatever the file's name. Writes are atomic (temp file in
the same folder, then ``os.replace``).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike

from meerbench.io import atomic_open
from meerbench.metrics.errors import ScoreFileError

CSV_COLUMNS = ("ref", "probe", "ref_id", "probe_id", "label", "score", "fold", "condition")
_TEXT_COLUMNS = ("ref_ids", "probe_ids", "conditions", "refs", "probes")
#: bob's formats by field count: the name of each field; a name's ScoreTable column in _BOB_FIELD.
BOB_COLUMNS = {4: ("ref_subject", "probe_subject", "probe_key", "score"),
               5: ("ref_subject", "ref_key", "probe_subject", "probe_key", "score")}
_BOB_FIELD = {"ref_subject": "ref_ids", "ref_key": "refs", "probe_subject": "probe_ids",
              "probe_key": "probes"}
_GZIP_MAGIC = b"\x1f\x8b"


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


def load_scores(path: str | os.PathLike[str]) -> ScoreTable:
    """Read a CSV or bob 4- or 5-column score file, plain or gzip-compressed; ScoreFileError
    names the file, line and problem."""
    path = Path(path)
    try:
        with _open_text(path) as handle:
            first = next((line for line in handle if line.strip() and line[0] != "#"), None)
            if first is None:
                raise ScoreFileError(f"{path}: empty score file (no pairs)")
            handle.seek(0)
            if "," in first:
                return _read_csv(path, handle)
            if len(first.split()) in BOB_COLUMNS:
                return _read_bob(path, handle, len(first.split()))
            raise ScoreFileError(
                f"{path}: first line should be a CSV header with columns score,label or bob's "
                f"{' or '.join(_bob_layout(n) for n in BOB_COLUMNS)}, "
                f"got {first.strip()[:80]!r}"
            )
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:  # EOF, zlib: broken gzip
        raise ScoreFileError(f"{path}: cannot read score file: {exc}") from None


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
    if len(values) != n:
        raise ScoreFileError(f"cannot write {path}: column {name} has {len(values)} values "
                             f"for {n} scores")
    if name == "score":
        return [repr(float(v)) for v in values]
    if name in ("label", "fold"):
        return [str(int(v)) for v in values]
    return [str(v) for v in values]


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
