"""The leaderboard: ``leaderboard.json`` (values, intervals, tolerances, provenance), ``.md`` and
a static ``.html``, plus the regression check of fresh Results against the committed JSON.

An aggregate is the mean over the distinct columns of one metric: a column that repeats another
one's measurement (:meth:`Grid.same_measurement`: UMR-UMP of synthmask and synthmask-unseen are
the same unmasked images and pairs) counts once, and a model's value there is read from
whichever of the repeated columns it has. A model is ranked on an aggregate only when it has a
value in every distinct column; columns never mix protocol versions (see :mod:`grid`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_text
from meerbench.report.grid import Column, Grid, Run, load_runs, load_side_files
from meerbench.report.page import leaderboard_html, ranking_note
from meerbench.report.plots import Plots, write_plots
from meerbench.report.tables import Report, markdown, md
from meerbench.results import (
    _At,
    _count,
    _fields,
    _finite,
    _items,
    _mapping,
    _number,
    _optional,
    _text,
    _values,
)
from meerbench.tasks.operational import NOTE as OPERATIONAL_NOTE
from meerbench.tasks.operational import OPERATIONAL

SCHEMA = "meerbench.leaderboard/1"
#: (task, metric, label, conditions or None for every condition). The first one present ranks:
#: the operational FNMR of masked comparisons at FMR 1e-4 (SynthMask v2), else verification
#: accuracy. Every aggregate averages the columns of each protocol's newest version present (a
#: mean never mixes versions; older versions keep their tables).
AGGREGATES = (("operational", "fnmr@0.0001", "Mean operational FNMR@FMR=1e-4 of UMR-MP and MR-MP",
               ("UMR-MP", "MR-MP")),
              ("verification", "acc", "Mean verification accuracy", None),
              ("identification", "rank1", "Mean rank-1 identification", None))
FILES = ("leaderboard.json", "leaderboard.md", "leaderboard.html")


def build_leaderboard(grid: Grid, plots: Plots | None = None,
                      base: Path | None = None) -> dict[str, Any]:
    """The leaderboard as JSON-ready data; plot paths are made relative to ``base``."""
    aggregates = []
    newest: dict[str, int] = {}  # aggregates read each protocol's newest version only
    for c in grid.columns:
        newest[c.protocol.id] = max(newest.get(c.protocol.id, 0), c.protocol.version)
    for task, key, label, conditions in AGGREGATES:  # columns no model has a value in: left out
        cols = [c for c in grid.columns if (c.metric.task, c.metric.key) == (task, key)
                and c.protocol.version == newest[c.protocol.id]
                and (conditions is None or c.condition in conditions) and any(
            (cell := grid.cell(m, c)) is not None and cell.value is not None for m in grid.models)]
        if cols:
            m = cols[0].metric
            groups = grid.distinct(cols)
            aggregates.append({"key": f"mean:{key}", "metric": key, "label": label,
                               "columns": [c.key for c in groups], "tolerance": m.tolerance,
                               "higher_is_better": m.higher_is_better,
                               "repeats": {r.key: c.key for c, rs in groups.items() for r in rs}})
    models = [_model_entry(grid, model, aggregates) for model in grid.models]
    rank_by = aggregates[0]["key"] if aggregates else None
    if rank_by is not None:
        _rank(models, rank_by, aggregates[0]["higher_is_better"])
    return {
        "schema": SCHEMA,
        "rank_by": rank_by,
        "aggregates": aggregates,
        "columns": [_column_entry(grid, c) for c in grid.columns],
        "models": models,
        "plots": [{"kind": p.kind, "protocol": p.protocol, "condition": p.condition,
                   **{fmt: _relative(path, base) for fmt, path in p.files.items()}}
                  for p in (plots.plots if plots else [])],
        "notes": (list(plots.notes) if plots else []) + (
            [OPERATIONAL_NOTE] if any(c.metric.task == OPERATIONAL.name for c in grid.columns)
            else []),
    }


def _relative(path: Path, base: Path | None) -> str:
    return str(path.relative_to(base)) if base is not None else str(path)


def _column_entry(grid: Grid, c: Column) -> dict[str, Any]:
    m = c.metric
    return {"key": c.key, "protocol": c.protocol.id, "version": c.protocol.version,
            "protocol_sha256": c.protocol.sha256, "protocol_label": grid.label(c.protocol),
            "condition": c.condition, "metric": m.key, "label": m.label, "unit": m.unit,
            "scale": m.scale, "digits": m.digits, "higher_is_better": m.higher_is_better,
            "tolerance": m.tolerance}


def _model_entry(grid: Grid, model: str, aggregates: list[dict[str, Any]]) -> dict[str, Any]:
    cells = {}
    for c in grid.columns:
        cell = grid.cell(model, c)
        if cell is not None:
            cells[c.key] = {"value": cell.value, "ci95": list(cell.ci95) if cell.ci95 else None,
                            "reliable": cell.reliable, "note": cell.note,
                            "best": grid.is_best(model, c)}
    means = {}
    for agg in aggregates:
        values = [next((v for c in [k, *(r for r, f in agg["repeats"].items() if f == k)]
                        if (v := cells.get(c, {}).get("value")) is not None), None)
                  for k in agg["columns"]]
        missing = [k for k, v in zip(agg["columns"], values, strict=True) if v is None]
        means[agg["key"]] = {"value": None if missing else sum(values) / len(values),
                             "missing": missing}
    return {"model": model, "rank": None, "aggregates": means, "cells": cells,
            "provenance": [_provenance(run) for run in grid.runs if run.model == model]}


def _provenance(run: Run) -> dict[str, Any]:
    model, prov = run.result["model"], run.result.get("provenance", {})
    return {"result": run.path.name, "protocol": run.protocol.id,
            "version": run.protocol.version, "protocol_sha256": run.protocol.sha256,
            "contract": model.get("contract"), "weights_sha256": model.get("weights_sha256"),
            **{k: prov.get(k) for k in ("date", "meerbench_version", "git_commit", "device",
                                       "precision", "torch_version")}}


def _rank(models: list[dict[str, Any]], key: str, higher_is_better: bool) -> None:
    """Competition ranking (1, 2, 2, 4) of complete models; incomplete ones stay unranked, last."""
    complete = [m for m in models if m["aggregates"][key]["value"] is not None]
    sign = -1.0 if higher_is_better else 1.0
    complete.sort(key=lambda m: (sign * m["aggregates"][key]["value"], m["model"]))
    for i, m in enumerate(complete):
        previous = complete[i - 1] if i else None
        same = previous and previous["aggregates"][key]["value"] == m["aggregates"][key]["value"]
        m["rank"] = previous["rank"] if same else i + 1
    rest = sorted((m for m in models if m["rank"] is None), key=lambda m: m["model"])
    models[:] = complete + rest


# ----------------------------------------------------------------------------- writing


def write_leaderboard(runs: Sequence[Run], out: Path, *, plots: bool = True) -> list[Path]:
    """Write ``leaderboard.json``, ``.md``, ``.html`` and ``plots/`` into ``out``.

    Every input (Results, score files, restoration samples) is read and checked first, so a bad
    one fails with nothing written.
    """
    grid = Grid.build(runs)
    load_side_files(runs)
    ensure_writable_dir(out)
    drawn = write_plots(grid, out / "plots", formats=("png", "pdf")) if plots else None
    board = build_leaderboard(grid, drawn, out)
    texts = [json.dumps(board, indent=2, allow_nan=False) + "\n",
             leaderboard_markdown(board, Report(grid)), leaderboard_html(board)]
    paths = [out / name for name in FILES]
    for path, text in zip(paths, texts, strict=True):
        write_text(path, text)
    return paths + (drawn.files if drawn else [])




def _show(column: dict[str, Any], value: float | None) -> str:
    if value is None:
        return "–"
    return f"{column['scale'] * value:.{column['digits']}f}"


def leaderboard_markdown(board: dict[str, Any], report: Report) -> str:
    """Ranking, per-metric tables with their provenance, tolerances and plot links."""
    aggs = board["aggregates"]
    lines = ["# meerbench leaderboard", ""]
    if aggs:
        lines += [md(ranking_note(board)), "",
                  "| Rank | Model | " + " | ".join(f"{a['label']} (%)" for a in aggs) + " |",
                  "|--:|:--|" + "--:|" * len(aggs)]
        for m in board["models"]:
            cells = []
            for a in aggs:
                entry = m["aggregates"][a["key"]]
                cells.append(f"{100 * entry['value']:.2f}" if entry["value"] is not None else
                             f"incomplete ({len(entry['missing'])} of {len(a['columns'])} missing)")
            lines.append(f"| {m['rank'] or '–'} | {md(m['model'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Tables", "", markdown(report).rstrip()]
    lines += ["", "## Regression tolerances", "",
              "`meerbench leaderboard RESULTS --check reports/` fails when a value moves by more "
              "than its tolerance (raw units: fractions for rates, dB for PSNR).", "",
              "| Metric | Tolerance |", "|:--|--:|"]
    tolerances = {c["label"]: c["tolerance"] for c in board["columns"]}
    tolerances.update({a["label"]: a["tolerance"] for a in aggs})
    lines += [f"| {label} | {tol:g} |" for label, tol in tolerances.items()]
    if board["plots"]:
        lines += ["", "## Plots", ""]
        for p in board["plots"]:
            pdf = f", [pdf]({quote(p['pdf'])})" if "pdf" in p else ""
            lines.append(f"- {md(p['protocol'])} {md(p['condition'])} {p['kind']}: "
                         f"[png]({quote(p['png'])}){pdf}")
    if board["notes"]:
        lines += ["", "## Notes", ""] + [f"- {md(n)}" for n in board["notes"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- regression check


@dataclass(frozen=True)
class Moved:
    """One committed number that the fresh Results do not reproduce within its tolerance."""

    model: str
    where: str
    committed: str
    now: str
    why: str

    def __str__(self) -> str:
        return (f"{self.model} | {self.where}: committed {self.committed}, now {self.now} "
                f"({self.why})")


def diff_leaderboards(committed: dict[str, Any], current: dict[str, Any]) -> list[Moved]:
    """Numbers that moved beyond the committed tolerance, and columns or models that changed."""
    moved: list[Moved] = []
    columns = {c["key"]: c for c in committed["columns"]}
    now_columns = {c["key"]: c for c in current["columns"]}
    now_models = {m["model"]: m for m in current["models"]}
    for model in committed["models"]:
        name = model["model"]
        fresh = now_models.get(name)
        if fresh is None:
            moved.append(Moved(name, "all columns", "present", "absent", "no fresh Result"))
            continue
        for key, col in columns.items():
            was = model["cells"].get(key, {}).get("value")
            now = fresh["cells"].get(key, {}).get("value") if key in now_columns else None
            where = f"{col['protocol_label']} | {col['condition']} | {col['label']}"
            _compare(moved, name, where, col, was, now, col["tolerance"])
        for agg in committed["aggregates"]:
            was = model["aggregates"][agg["key"]]["value"]
            now = fresh["aggregates"].get(agg["key"], {}).get("value")
            _compare(moved, name, f"all | aggregate | {agg['label']}",
                     {"scale": 100.0, "digits": 2, "unit": "%"}, was, now, agg["tolerance"])
    for key in now_columns.keys() - columns.keys():
        col = now_columns[key]
        moved.append(Moved("*", f"{col['protocol_label']} | {col['condition']} | {col['label']}",
                           "absent", "present", "new column: regenerate and commit reports/"))
    for name in now_models.keys() - {m["model"] for m in committed["models"]}:
        moved.append(Moved(name, "all columns", "absent", "present",
                           "new model: regenerate and commit reports/"))
    return moved


def _compare(moved: list[Moved], model: str, where: str, col: dict[str, Any],
             was: float | None, now: float | None, tolerance: float) -> None:
    unit = f" {col['unit']}" if col["unit"] else ""
    if was is None and now is None:
        return
    if was is None or now is None:
        moved.append(Moved(model, where, _show(col, was) + unit, _show(col, now) + unit,
                           "value appeared or disappeared"))
    elif abs(now - was) > tolerance:
        delta = f"{col['scale'] * (now - was):+.{col['digits']}f}"
        moved.append(Moved(model, where, _show(col, was) + unit, _show(col, now) + unit,
                           f"change {delta}, tolerance ±{col['scale'] * tolerance:g}"))


def check_leaderboard(results: Sequence[str | Path], reports: Path) -> list[Moved]:
    """Rebuild the leaderboard from ``results`` and diff it with ``reports/leaderboard.json``."""
    path = reports / FILES[0]
    try:
        committed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON or UTF-8
        raise MeerbenchError(f"Cannot read the committed leaderboard {path}: {exc}") from None
    validate_committed(committed, path)
    return diff_leaderboards(committed, build_leaderboard(Grid.build(load_runs(results))))


def validate_committed(data: Any, path: Path) -> None:
    """The fields of a committed leaderboard that the diff reads: MeerbenchError (exit 2) names
    the file and field, so a broken file never reads as a regression or a crash."""
    at = _At(path, kind="Leaderboard")
    _finite(data, at)
    top = _mapping(data, at)
    if top.get("schema") != SCHEMA:
        raise at["schema"].fail(f"{SCHEMA!r} (a meerbench leaderboard)", top.get("schema"))
    _fields(top, at, True, models=_items(_committed_model), columns=_items(_committed_column),
            aggregates=_items(_committed_aggregate))
    keys = [agg["key"] for agg in top["aggregates"]]
    for i, model in enumerate(top["models"]):
        _fields(model["aggregates"], at["models"][i]["aggregates"], True,
                **dict.fromkeys(keys, _mapping))


def _committed_model(value: Any, at: _At) -> None:
    _fields(_mapping(value, at), at, True, model=_text, cells=_values(_committed_value),
            aggregates=_values(_committed_value))


def _committed_value(value: Any, at: _At) -> None:
    _fields(_mapping(value, at), at, False, value=_optional(_number))


def _committed_column(value: Any, at: _At) -> None:
    _fields(_mapping(value, at), at, True, key=_text, protocol_label=_text, condition=_text,
            label=_text, unit=_text, scale=_number, digits=_count, tolerance=_tolerance)


def _committed_aggregate(value: Any, at: _At) -> None:
    _fields(_mapping(value, at), at, True, key=_text, label=_text, tolerance=_tolerance)


def _tolerance(value: Any, at: _At) -> float:
    return _number(value, at, 0.0)


def format_moved(moved: Sequence[Moved], reports: Path) -> str:
    """The readable diff the CI prints when the check fails."""
    head = (f"Leaderboard regression: {len(moved)} difference(s) against "
            f"{reports / FILES[0]} (model | protocol | condition | metric):")
    return "\n".join([head, *(f"  {m}" for m in moved)])
