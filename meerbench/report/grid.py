"""Result files as a grid: one cell (value, 95% interval, rule) per model and column.

A column is (protocol id, version, protocol sha256, condition, metric). The sha256 is part of the
key, so numbers from different protocol definitions never share a column; when one id and version
come with two definitions, their labels show the sha256 prefix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.errors import DatasetError, MeerbenchError
from meerbench.metrics.scorefiles import ScoreTable, load_scores
from meerbench.results import RESTORATION_RANGES, read_result, result_file

TASKS = ("verification", "identification", "restoration")


@dataclass(frozen=True, order=True)
class ProtocolKey:
    """One protocol definition: id, version and the sha256 of its canonical content."""

    id: str
    version: int
    sha256: str


@dataclass(frozen=True)
class Metric:
    """How a metric reads, scales and compares; ``tolerance`` is in raw (unscaled) units."""

    key: str
    task: str
    label: str
    unit: str
    higher_is_better: bool
    scale: float = 100.0
    digits: int = 2
    tolerance: float = 1e-3

    def show(self, value: float) -> str:
        return f"{self.scale * value:.{self.digits}f}"


def metric(key: str) -> Metric:
    """The Metric for a key: acc, auc, eer, tar@T, rankK, map, dir@T or a restoration measure."""
    if key.startswith("tar@"):
        return Metric(key, "verification", f"TAR@FAR={sci(float(key[4:]))}", "%", True)
    if key.startswith("dir@"):
        return Metric(key, "identification", f"DIR@FPIR={sci(float(key[4:]))}", "%", True)
    if key.startswith("rank"):
        return Metric(key, "identification", f"Rank-{key[4:]}", "%", True)
    try:
        return _FIXED[key]
    except KeyError:
        raise MeerbenchError(f"Unknown report metric '{key}'.") from None


_FIXED = {m.key: m for m in (
    Metric("acc", "verification", "Accuracy", "%", True),
    Metric("auc", "verification", "AUC", "%", True),
    Metric("eer", "verification", "EER", "%", False),
    Metric("map", "identification", "mAP", "%", True),
    Metric("psnr", "restoration", "PSNR", "dB", True, 1.0, 2, 0.01),
    Metric("psnr_masked_region", "restoration", "PSNR (mask)", "dB", True, 1.0, 2, 0.01),
    Metric("ssim", "restoration", "SSIM", "", True, 1.0, 4),
    Metric("ssim_masked_region", "restoration", "SSIM (mask)", "", True, 1.0, 4),
    Metric("identity_similarity", "restoration", "ID sim.", "", True, 1.0, 4),
    Metric("fid", "restoration", "FID", "", False, 1.0, 2, 0.1),
    Metric("lpips", "restoration", "LPIPS", "", False, 1.0, 4),
    Metric("lpips_masked_region", "restoration", "LPIPS (mask)", "", False, 1.0, 4),
)}
RESTORATION_KEYS = tuple(RESTORATION_RANGES)
#: Arrays of a restoration-samples archive: image keys, then images (n, height, width, 3).
SAMPLE_ARRAYS = ("keys", "masked", "restored", "truth")
MAX_SAMPLES, MAX_SAMPLE_BYTES = 64, 64 << 20


def sci(value: float) -> str:
    """0.001 -> '1e-3', 0.1 -> '0.1': short FAR/FPIR labels."""
    if value >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class Column:
    """One number per model: a metric under a condition of a protocol definition.

    ``condition`` is the verification condition, or the task name for identification and
    restoration.
    """

    protocol: ProtocolKey
    condition: str
    metric: Metric

    @property
    def key(self) -> str:
        p = self.protocol
        return f"{p.id}/v{p.version}/{p.sha256[:8]}/{self.condition}/{self.metric.key}"


@dataclass(frozen=True)
class Cell:
    """A value with its 95% interval and rule; ``note`` says why it is missing or coarse."""

    value: float | None
    ci95: tuple[float, float] | None = None
    rule: str | None = None
    reliable: bool = True
    note: str | None = None

    def half_width(self) -> float | None:
        """Larger distance from the value to an end of its interval (the '±' of the tables)."""
        if self.value is None or self.ci95 is None:
            return None
        return max(self.value - self.ci95[0], self.ci95[1] - self.value)


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
    """Result JSON files, given as files or folders of them (not recursive)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise MeerbenchError(f"No such file or folder: {p}")
    if not files:
        raise MeerbenchError(f"No Result JSON files found in {', '.join(map(str, paths))}.")
    return [Run(read_result(f), f) for f in files]


def run_cells(run: Run) -> dict[Column, Cell]:
    """Every reportable number of one Result."""
    metrics = run.result["metrics"]
    out: dict[Column, Cell] = {}
    for cond, m in metrics.get("verification", {}).items():
        for key, cell in _verification(m).items():
            out[Column(run.protocol, cond, metric(key))] = cell
    if "identification" in metrics:
        for key, cell in _identification(metrics["identification"]).items():
            out[Column(run.protocol, "identification", metric(key))] = cell
    if "restoration" in metrics:
        for key, cell in _restoration(metrics["restoration"]).items():
            out[Column(run.protocol, "restoration", metric(key))] = cell
    return out


def _interval(ci: Sequence[float] | None) -> tuple[float, float] | None:
    return None if ci is None else (float(ci[0]), float(ci[1]))


def _verification(m: dict[str, Any]) -> dict[str, Cell]:
    if "skipped" in m:
        return {"acc": Cell(None, note=f"skipped: {m['skipped']}")}
    acc = m["accuracy"]
    out = {}
    if acc is not None:
        out["acc"] = Cell(acc["mean"], _interval(acc["ci95"]),
                          f"{acc['rule']}, {len(acc['per_fold'])}-fold")
    out["auc"] = Cell(m["auc"]["value"], _interval(m["auc"]["ci95"]), "trapezoid, ties 1/2")
    out["eer"] = Cell(m["eer"]["value"], _interval(m["eer"]["ci95"]), m["eer"]["rule"])
    for t in m["tar_at_far"]:
        out[f"tar@{t['target']:g}"] = Cell(t["tar"], _interval(t["ci95"]), t["rule"],
                                           t["reliable"], t["warning"])
    return out


def _identification(m: dict[str, Any]) -> dict[str, Cell]:
    rule = f"{m.get('tie_rule', 'pessimistic')} ties"
    out = {f"rank{k}": Cell(v, _interval(m["ci95"]["rank1"]) if k == "1" else None, rule)
           for k, v in sorted(m["rank"].items(), key=lambda kv: int(kv[0]))}
    out["map"] = Cell(m["map"])
    intervals = m["ci95"].get("dir_at_fpir") or [None] * len(m["dir_at_fpir"])
    for d, ci in zip(m["dir_at_fpir"], intervals, strict=True):
        note = None if d["reliable"] else (
            f"FPIR {d['fpir_target']:g} with {d['n_nonmated']} non-mated probes allows no false "
            "alarm: DIR is not measured at this FPIR")
        out[f"dir@{d['fpir_target']:g}"] = Cell(d["dir"], _interval(ci), None, d["reliable"],
                                                note)
    return out


def _restoration(m: dict[str, Any]) -> dict[str, Cell]:
    if "skipped" in m:
        return {}
    out = {}
    for key in RESTORATION_KEYS:
        entry = m.get(key)
        if not isinstance(entry, dict):
            continue
        value = entry.get("mean", entry.get("value"))
        note = str(entry.get("reason", "not measured")).split(": ")[0] if value is None else None
        rule = f"cosine under {entry['recognizer']}" if "recognizer" in entry else None
        out[key] = Cell(value, rule=rule, note=note)
    return out


def _order(key: str) -> tuple[int, float]:
    """Metrics in reading order: acc, auc, eer, TAR from high to low FAR, ranks, mAP, DIR."""
    for i, prefix in enumerate(("acc", "auc", "eer", "tar@", "rank", "map", "dir@")):
        if key.startswith(prefix):
            tail = key[len(prefix):]
            return i, (-float(tail) if prefix in ("tar@", "dir@") else float(tail or 0))
    return 7, float(RESTORATION_KEYS.index(key))


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
        grid.columns.sort(key=lambda c: (c.protocol, TASKS.index(c.metric.task),
                                         conditions.index(c.condition), _order(c.metric.key)))
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
        """Best displayed value of the column (rounded as shown), None when it has none."""
        shown = [round(c.value * column.metric.scale, column.metric.digits)
                 for m in self.models if (c := self.cell(m, column)) and c.value is not None]
        if not shown:
            return None
        return max(shown) if column.metric.higher_is_better else min(shown)

    def is_best(self, model: str, column: Column) -> bool:
        cell = self.cell(model, column)
        best = self.best(column)
        return (cell is not None and cell.value is not None and best is not None
                and round(cell.value * column.metric.scale, column.metric.digits) == best)
