"""Results as one tidy pandas DataFrame: one row per reported number, for analysis and export.

The rows are the cells each task type's :meth:`~meerbench.tasks.Task.cells` reads from its
typed section (:func:`meerbench.report.grid.run_cells`), so a new task type appears here without
a line of this module. The report tables are pivots of this frame (:mod:`meerbench.report.tables`).
Values are raw, as the Result stores them: rates are fractions, not percent; ``scale`` is what
the tables multiply a value by to show it in ``unit`` (100 for ``%``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from meerbench.errors import ConfigError, MeerbenchError
from meerbench.io import atomic_open
from meerbench.report.grid import Cell, Column, Run, load_runs, run_cells

__all__ = ["COLUMNS", "FORMATS", "export_results", "load_results", "tidy_frame"]

#: The frame's columns, in order, with their dtypes (``None``: text).
COLUMNS: dict[str, str | None] = {
    "model": None,  # the Result's model name
    "protocol": None,  # protocol id
    "version": "int64",  # protocol version
    "protocol_sha256": None,  # sha256 of the protocol definition (two definitions never mix)
    "task": None,  # task type: verification, identification, restoration, ...
    "condition": None,  # verification's UMR-MP, ...; the task's name for tasks without conditions
    "metric": None,  # metric key: acc, auc, eer, tar@0.001, rank1, map, dir@0.01, psnr, ...
    "label": None,  # how the tables head it: Accuracy, TAR@FAR=1e-3, ...
    "unit": None,  # unit of value: 'fraction' (shown as %), 'dB' or ''
    "scale": "float64",  # tables show value * scale (100: a fraction shown as %)
    "rule": None,  # the rule behind the number (threshold rule, tie rule, ...); NA when none
    "value": "float64",  # NaN when not measured (see note)
    "ci_low": "float64",  # 95% bootstrap interval; NaN when the Result has none
    "ci_high": "float64",
    "reliable": "bool",  # False: the operating point allows no error (shown with a dagger)
    "n": "Int64",  # how many pairs, probes or images the number rests on; NA when unknown
    "higher_is_better": "bool",
    "note": None,  # why a value is missing or coarse; NA when nothing to say
    "file": None,  # the Result file the row came from, as given
}

#: Formats :func:`export_results` writes.
FORMATS = ("csv", "parquet")


def load_results(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                 ) -> pd.DataFrame:
    """Every reported number of the Results in ``paths`` (Result JSON files, or folders of them,
    read validated by :func:`meerbench.results.read_results`) as a tidy frame of
    :data:`COLUMNS`, one row per (Result, condition, metric), in file then report order.

    >>> frame = load_results("reports/results")  # doctest: +SKIP
    >>> frame.query("protocol == 'synthmask' and metric == 'acc'").pivot(
        index="model", columns="condition", values="value")
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return tidy_frame((run, column, cell) for run in load_runs(paths)
                      for column, cell in run_cells(run).items())


def tidy_frame(cells: Iterable[tuple[Run, Column, Cell]]) -> pd.DataFrame:
    """The frame of :data:`COLUMNS` with one row per (Result, column, cell), in the given
    order: what :func:`load_results` returns and what the report tables pivot."""
    rows = [_row(run, column, cell) for run, column, cell in cells]
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {k: t for k, t in COLUMNS.items() if t is not None})


def _row(run: Run, column: Column, cell: Cell) -> dict[str, object]:
    metric, protocol = column.metric, column.protocol
    return {
        "model": run.model, "protocol": protocol.id, "version": protocol.version,
        "protocol_sha256": protocol.sha256, "task": metric.task, "condition": column.condition,
        "metric": metric.key, "label": metric.label, "unit": metric.value_unit,
        "scale": metric.scale, "rule": cell.rule, "value": cell.value,
        "ci_low": None if cell.ci95 is None else cell.ci95[0],
        "ci_high": None if cell.ci95 is None else cell.ci95[1],
        "reliable": cell.reliable, "n": cell.n, "higher_is_better": metric.higher_is_better,
        "note": cell.note, "file": str(run.path)}


def export_results(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   out: Path, fmt: str) -> Path:
    """Write :func:`load_results` of ``paths`` to ``out`` as ``csv`` or ``parquet``, atomically;
    returns ``out``. This is ``meerbench export RESULTS... --format parquet|csv --out FILE``.

    CSV: UTF-8, a header row, no index, NA as an empty field. Parquet: written by pyarrow and
    read back by ``pandas.read_parquet`` with the same dtypes. An unknown format is a
    :class:`ConfigError`; a missing pyarrow a :class:`MeerbenchError` saying what to install.
    Nothing is written when the Results cannot be read.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MeerbenchError("Writing parquet needs pyarrow, which is not installed: "
                                 "pip install pyarrow (or export with --format csv).") from None
    frame = load_results(paths)
    out = Path(out)
    if fmt == "csv":
        with atomic_open(out, "w") as handle:
            frame.to_csv(handle, index=False, lineterminator="\n")
    else:
        with atomic_open(out, "wb") as handle:
            frame.to_parquet(handle, engine="pyarrow", index=False)
    return out
