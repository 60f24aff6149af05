"""Result files as a grid: one cell (value, 95% interval, rule) per model and column.

A column is (protocol id, version, protocol sha256, condition, metric). The sha256 is part of the
key, so numbers from different protocol definitions never share a column; when one id and version
come with two definitions, their labels show the sha256 prefix. Two columns of different
protocols can still be one measurement (synthmask and synthmask-unseen render the same unmasked
faces, so their UMR-UMP columns are equal): :meth:`Grid.same_measurement` says when.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.errors import ConfigError, DatasetError, MeerbenchError
from meerbench.metrics.scorefiles import ScoreTable, load_scores
from meerbench.protocol import task_types
from meerbench.protocol.sampling import CONDITIONS
from meerbench.results import read_results, result_file
from meerbench.tasks import Cell, Metric, sections
from meerbench.tasks.verification_dense import DenseScores, read_dense_scores

__all__ = ["Cell", "Column", "Grid", "Metric", "ProtocolKey", "Run", "load_runs", "matches",
           "run_cells"]


@dataclass(frozen=True, order=True)
class ProtocolKey:
    """One protocol definition: id, version and the sha256 of its canonical content."""

    id: str
    version: int
    sha256: str


#: Arrays of a restoration-samples archive: image keys, then images (n, height, width, 3).
SAMPLE_ARRAYS = ("keys", "masked", "restored", "truth")
MAX_SAMPLES, MAX_SAMPLE_BYTES = 64, 64 << 20


@dataclass(frozen=True)
class Column:
    """One number per model: a metric under a condition of a protocol definition.

    ``condition`` is the task's condition (verification's UMR-MP, ...), or the task's name for a
    task without conditions.
    """

    protocol: ProtocolKey
    condition: str
    metric: Metric

    @property
    def key(self) -> str:
        """``<protocol>/v<N>/<sha8>/<task>/<condition>/<metric>``: two task types may share a
        metric key and a condition (verification and verification_dense: ``UMR-MP``,
        ``tar@0.001``), so the task is part of it."""
        p, m = self.protocol, self.metric
        return f"{p.id}/v{p.version}/{p.sha256[:8]}/{m.task}/{self.condition}/{m.key}"


@dataclass(frozen=True)
class Run:
    """One Result file and where it lies (score files are found next to it)."""

    result: dict[str, Any]
    path: Path

    @property
    def model(self) -> str:
        return str(self.result["model"]["name"])

    @property
    def protocol(self) -> ProtocolKey:
        p = self.result["protocol"]
        return ProtocolKey(str(p["id"]), int(p["version"]), str(p["sha256"]))

    @property
    def restorer_given(self) -> str:
        """What the restorer was given (``metrics.restoration.given``, one of
        :data:`meerbench.results.RESTORER_GIVEN`), as restoration-grid headers show it; "not
        recorded" for Results written before the field."""
        section = self.result.get("metrics", {}).get("restoration")
        given = section.get("given") if isinstance(section, dict) else None
        return f"given: {given or 'not recorded'}"

    def scores(self) -> ScoreTable | None:
        """The per-pair score file, read once per process."""
        path = self.file("scores")
        return None if path is None else _load_scores(path)

    def samples(self) -> dict[str, np.ndarray] | None:
        """The restoration samples (:data:`SAMPLE_ARRAYS`), read once per process."""
        path = self.file("restoration_samples")
        return None if path is None else _load_samples(path)

    def file(self, role: str) -> Path | None:
        """A side file named in the Result's ``files``, if present; never one outside the
        Result's folder (see :func:`meerbench.results.result_file`)."""
        return result_file(self.path, self.result, role)


@lru_cache(maxsize=64)
def _load_scores(path: Path) -> ScoreTable:
    return load_scores(path)


@lru_cache(maxsize=4)  # hundreds of MB each
def load_dense_scores(path: Path) -> DenseScores:
    """A dense score file, read once per process (paired tests read each file many times)."""
    return read_dense_scores(path)


@lru_cache(maxsize=64)
def _load_samples(path: Path) -> dict[str, np.ndarray]:
    """An ``.npz`` of restoration samples, checked (no pickles, sizes, shapes) before use."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with archive:
            missing = [k for k in SAMPLE_ARRAYS if k not in archive.files]
            if missing:
                raise ValueError(f"lacks array(s) {', '.join(missing)}")
            size = sum(archive.zip.getinfo(f"{k}.npy").file_size for k in SAMPLE_ARRAYS)
            if size > MAX_SAMPLE_BYTES:
                raise ValueError(f"holds {size >> 20} MiB, more than {MAX_SAMPLE_BYTES >> 20}")
            arrays = {k: archive[k] for k in SAMPLE_ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a restoration samples archive: {exc}") from None
    n = len(arrays["keys"])
    if arrays["keys"].ndim != 1 or not 0 < n <= MAX_SAMPLES:
        raise DatasetError(f"{path}: array 'keys' should name 1 to {MAX_SAMPLES} sampled images; "
                           f"got shape {arrays['keys'].shape}")
    for k in SAMPLE_ARRAYS[1:]:
        a = arrays[k]
        if not (a.ndim == 4 and a.shape[0] == n and a.shape[3] == 3
                and (a.dtype == np.uint8 or a.dtype.kind == "f")):
            raise DatasetError(f"{path}: array {k!r} should hold the {n} sampled images as "
                               f"(n, height, width, 3) uint8 or float; got shape {a.shape}, "
                               f"dtype {a.dtype}")
    return arrays


def load_side_files(runs: Iterable[Run]) -> None:
    """Read (and so check) every score file and restoration archive before anything is written:
    a bad side file fails the command with nothing half-written."""
    for run in runs:
        run.scores()
        run.samples()


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Result JSON files, given as files or folders of them (not recursive), validated."""
    return [Run(data, path) for path, data in read_results(paths)]


def matches(key: str, pattern: str) -> bool:
    """A metric key against a chosen name: the key itself, or a prefix ending in '@'
    (``tar@`` is every TAR@FAR)."""
    return key == pattern or (pattern.endswith("@") and key.startswith(pattern))


def run_cells(run: Run) -> dict[Column, Cell]:
    """Every reportable number of one Result, read through its task types' typed sections."""
    return {Column(run.protocol, condition, metric): cell
            for task, section in sections(run.result["metrics"])
            for condition, metric, cell in task.cells(section)}


@dataclass
class Grid:
    """Cells of many Results, one row per model, with stable column order."""

    runs: list[Run]
    cells: dict[tuple[str, Column], Cell] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)

    @classmethod
    def build(cls, runs: Sequence[Run]) -> Grid:
        grid = cls(list(runs))
        seen: dict[tuple[str, ProtocolKey], Run] = {}
        for run in runs:
            other = seen.setdefault((run.model, run.protocol), run)
            if other is not run:
                raise MeerbenchError(
                    f"Two Results for model {run.model} on {run.protocol.id} "
                    f"v{run.protocol.version}: {other.path} and {run.path}. Keep one of them.")
            for column, cell in run_cells(run).items():
                grid.cells[(run.model, column)] = cell
                if column not in grid.columns:
                    grid.columns.append(column)
        conditions = list(dict.fromkeys(c.condition for c in grid.columns))
        tasks = [task.name for task in task_types()]
        grid.columns.sort(key=lambda c: (c.protocol, tasks.index(c.metric.task),
                                         conditions.index(c.condition), c.metric.order))
        return grid

    @cached_property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs})

    def run(self, model: str, protocol: ProtocolKey) -> Run | None:
        return next((r for r in self.runs if r.model == model and r.protocol == protocol), None)

    def cell(self, model: str, column: Column) -> Cell | None:
        return self.cells.get((model, column))

    @cached_property
    def _ambiguous(self) -> set[tuple[str, int]]:
        keys = {c.protocol for c in self.columns}
        pairs = [(p.id, p.version) for p in keys]
        return {p for p in pairs if pairs.count(p) > 1}

    def label(self, protocol: ProtocolKey) -> str:
        """'synthmask v1', with the sha256 prefix when that version has two definitions."""
        text = f"{protocol.id} v{protocol.version}"
        if (protocol.id, protocol.version) in self._ambiguous:
            text += f" ({protocol.sha256[:8]})"
        return text

    def slug(self, protocol: ProtocolKey) -> str:
        """File-name form of :meth:`label`."""
        text = f"{protocol.id}-v{protocol.version}"
        if (protocol.id, protocol.version) in self._ambiguous:
            text += f"-{protocol.sha256[:8]}"
        return text

    @property
    def protocols(self) -> list[ProtocolKey]:
        return sorted({c.protocol for c in self.columns})

    def best(self, column: Column) -> float | None:
        """Best displayed value of the column (rounded as shown) among reliable cells; None
        when it has none (a rate that is not measured (†) is never "best")."""
        shown = [round(c.value * column.metric.scale, column.metric.digits)
                 for m in self.models
                 if (c := self.cell(m, column)) and c.value is not None and c.reliable]
        if not shown:
            return None
        return max(shown) if column.metric.higher_is_better else min(shown)

    def is_best(self, model: str, column: Column) -> bool:
        cell = self.cell(model, column)
        best = self.best(column)
        return (cell is not None and cell.value is not None and cell.reliable
                and best is not None
                and round(cell.value * column.metric.scale, column.metric.digits) == best)

    def select(self, metrics: Sequence[str] | None = None,
               conditions: Sequence[str] | None = None) -> Grid:
        """This grid with only the columns of ``metrics`` (keys, or prefixes ending in '@')
        and, for task types with conditions, of ``conditions`` (other task types keep theirs).
        A name no column has is a ConfigError listing the names there are."""
        columns = self.columns
        if metrics:
            keys = list(dict.fromkeys(c.metric.key for c in columns))
            _known("metric", [m for m in metrics if not any(matches(k, m) for k in keys)], keys)
            columns = [c for c in columns if any(matches(c.metric.key, m) for m in metrics)]
        if conditions:
            split = {t.name for t in task_types() if t.per_condition}
            present = list(dict.fromkeys(c.condition for c in columns if c.metric.task in split))
            _known("condition", [c for c in conditions if c not in present], present)
            columns = [c for c in columns
                       if c.metric.task not in split or c.condition in conditions]
        kept = set(columns)
        return Grid(self.runs, {k: v for k, v in self.cells.items() if k[1] in kept},
                    list(columns))

    def same_measurement(self, a: Column, b: Column) -> bool:
        """Whether columns ``a`` and ``b`` of two protocols measure the same thing, so that an
        aggregate counts them once. The rule: same metric and condition; a condition whose
        images are all unmasked (UMR-UMP), so that protocols differing only in how they mask
        cannot tell it apart; and for every model with a value in both, its two Results drew
        the same list from the same dataset (``protocol.lists`` sha256, ``dataset`` and
        ``manifest_sha256``, all recorded) and agree within the metric's tolerance under the
        same rule."""
        if (a.metric != b.metric or a.condition != b.condition
                or CONDITIONS.get(a.condition) != (False, False)):
            return False
        both = [m for m in self.models if (ca := self.cell(m, a)) and (cb := self.cell(m, b))
                and ca.value is not None and cb.value is not None]
        for model in both:
            ca, cb = self.cell(model, a), self.cell(model, b)
            ra, rb = (self.run(model, c.protocol).result["protocol"] for c in (a, b))
            drawn = [(p.get("lists", {}).get(a.metric.task), p.get("dataset"),
                      p.get("manifest_sha256")) for p in (ra, rb)]
            if (drawn[0] != drawn[1] or None in drawn[0] or ca.rule != cb.rule
                    or abs(ca.value - cb.value) > a.metric.tolerance):
                return False
        return bool(both)

    def distinct(self, columns: Sequence[Column]) -> dict[Column, list[Column]]:
        """``columns`` grouped by :meth:`same_measurement`: each kept column (the first of its
        group, in order) with the later columns that repeat it."""
        groups: dict[Column, list[Column]] = {}
        for column in columns:
            first = next((k for k in groups if self.same_measurement(k, column)), None)
            if first is None:
                groups[column] = []
            else:
                groups[first].append(column)
        return groups


def _known(what: str, unknown: list[str], present: list[str]) -> None:
    if unknown:
        raise ConfigError(f"No column has the {what}(s) {', '.join(unknown)}; the Results here "
                          f"have: {', '.join(present)}.")
