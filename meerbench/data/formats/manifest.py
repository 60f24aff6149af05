"""Generic CSV manifest: a row per image, ``path,identity[,masked,mask_type,split,twin,mask_map]``.

Paths are relative to the manifest's folder and must stay inside it (no ``..`` out, no absolute
path, no symlink out). UTF-8, with or without a BOM. Strict: unknown columns, empty identities,
bad ``masked`` values and missing files are errors naming the file and line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from meerbench.data.dataset import Dataset, Sample
from meerbench.data.formats.inputs import RootGuard, option_path, read_text
from meerbench.errors import DatasetError
from meerbench.schema import Fields

REQUIRED = ("path", "identity")
OPTIONAL = ("masked", "mask_type", "split", "twin", "mask_map", "index")


def read_manifest(csv_path: Path, name: str, check_files: bool = True) -> Dataset:
    """Parse a manifest CSV into a ``Dataset`` rooted at the CSV's folder; every path in it must
    stay inside that folder."""
    guard = RootGuard(csv_path.parent)
    reader = csv.DictReader(io.StringIO(read_text(csv_path, "Manifest"), newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        extra = [c for c in header if c not in REQUIRED + OPTIONAL]
        if missing or extra:
            raise DatasetError(
                f"{csv_path}, line 1: header must have columns {', '.join(REQUIRED)} "
                f"(optional: {', '.join(OPTIONAL)}); "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}")
            )
        samples = [_row(row, guard, f"{csv_path}, line {reader.line_num}") for row in reader]
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}, line {reader.reader.line_num}: {exc}") from None
    if not samples:
        raise DatasetError(f"{csv_path}: the manifest lists no images.")
    if check_files:
        for s in samples:
            for p in (s.path, s.twin, s.mask_map):
                if p is not None and not p.is_file():
                    raise DatasetError(f"{csv_path}: image listed for '{s.key}' is missing: {p}")
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DatasetError(f"{csv_path}: image '{dup}' is listed more than once.")
    return Dataset(name=name, root=guard.root, samples=samples)


def _row(row: dict[str, str], guard: RootGuard, where: str) -> Sample:
    def fail(msg: str) -> DatasetError:
        return DatasetError(f"{where}: {msg}")

    if None in row or any(v is None for v in row.values()):
        raise fail("wrong number of columns")
    path, identity = row["path"].strip(), row["identity"].strip()
    if not path or not identity:
        raise fail("'path' and 'identity' must not be empty")
    masked_text = row.get("masked", "0").strip().lower() or "0"
    if masked_text not in ("0", "1", "true", "false"):
        raise fail(f"'masked' must be 0/1/true/false, got {row['masked']!r}")
    masked = masked_text in ("1", "true")

    def inside(column: str, value: str) -> Path:
        return guard.check(guard.root / value, f"{where}, column '{column}'", value)

    def optional(column: str) -> Path | None:
        value = (row.get(column) or "").strip()
        return inside(column, value) if value else None

    return Sample(
        key=path, path=inside("path", path), identity=identity, masked=masked,
        mask_type=(row.get("mask_type") or "").strip() or None,
        twin=optional("twin"), mask_map=optional("mask_map"),
        split=(row.get("split") or "").strip() or None,
    )


class ManifestFormat:
    """Any dataset described by a CSV manifest (option ``file``, default ``manifest.csv``)."""

    needs_root = True
    about = "A folder with a manifest CSV (path,identity[,masked,mask_type,split,...])."

    def read(self, root: Path | None, options: dict[str, Any], name: str) -> Dataset:
        fields = Fields(options, f"dataset '{name}'", "dataset.options")
        file = fields.get("file", str, "manifest.csv")
        fields.finish()
        assert root is not None
        return read_manifest(option_path(root, file, name, "file"), name)
