"""Paper tables from Results: Markdown, LaTeX (booktabs), CSV and HTML, and their provenance.

Every table is a pivot of one frame, :attr:`Report.frame`: the tidy frame of the Results' cells
(:func:`meerbench.report.frame.tidy_frame`, what ``meerbench.load_results`` returns) with the
columns the report adds per cell (:data:`MARKS`: the value as shown, its ``±``, bold, marker and
paired test). LaTeX is rendered by pandas' Styler (booktabs rules, bold as a style), Markdown and
HTML from the same pivots, and the CSV is the frame itself.

Rows are models; columns are (protocol, condition) for one metric per table of a task with
conditions (verification), or the metrics of one protocol for any other task type. ``±`` is the
95% interval half-width (:data:`meerbench.tasks.PM_LEGEND`), † marks a rate that is not measured
at its operating point, the best reliable value per column is bold and a marker flags a paired
difference from the reference model. Each table carries one short note; the legend in full,
the rules, the protocol hashes and each Result's provenance go to one provenance block
(``provenance.tex`` for LaTeX, the last section of the Markdown and HTML). No output names a
file or folder of the machine that made the Results.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_text
from meerbench.report.frame import tidy_frame
from meerbench.report.grid import Cell, Column, Grid, ProtocolKey, Run, matches
from meerbench.report.significance import PairedTest, has_test, missing_score_file, paired_test
from meerbench.tasks import DAGGER, PM_LEGEND, Task, task_type, task_types

#: Format -> the files it writes (the first holds the tables).
FORMATS = {"md": ("tables.md",), "latex": ("tables.tex", "provenance.tex"),
           "csv": ("tables.csv",), "html": ("tables.html",)}
RULES = {
    "insightface": "threshold chosen on the other folds on insightface's grid, accept score > t",
    "exact": "threshold chosen on the other folds between observed scores, accept score >= t",
    "floor": "largest TAR whose FAR does not exceed the target",
    "nearest": "ROC point nearest the target, as sklearn's roc_curve; FAR may exceed it",
    "interp": "linear interpolation on the ROC",
    "min_gap": "operating point minimising |FAR - FRR|, as bob.measure",
}
BOLD_LEGEND = ("Bold: the best value per column as shown (rounded; ties all bold) among "
               f"reliable cells: a {DAGGER} or n/a cell is never bold.")
NO_SCORE_FILE = "no score file"
#: What stands in a table where a model has no Result.
NO_RESULT = "–"

#: The columns :attr:`Report.frame` adds to the tidy frame, one value per cell.
MARKS = {
    "column": "the cell's column: its place in grid.columns (what the tables pivot on)",
    "shown": "the value as the tables show it (scaled, rounded); 'n/a' when not measured",
    "pm": "the 95% interval half-width as shown; None without an interval",
    "dagger": "shown with a dagger: measured, but not at its operating point",
    "bold": "the best reliable value of its column as shown (Grid.is_best)",
    "marker": "'*' (p < 0.05) or '**' (p < 0.01) against the reference; '' otherwise",
    "test": "the paired test against the reference; None when there is none",
    "p_value": "its p-value",
    "difference": "model minus reference, raw units",
    "title": "the cell's tooltip: its interval, test and notes",
    "remark": "the cell's note and why it has no paired test, for the CSV",
}


@dataclass
class Report:
    """A grid (optionally narrowed to some metrics and conditions) with its paired tests
    against an optional reference model."""

    grid: Grid
    reference: str | None = None
    rounds: int = 1000
    tests: dict[tuple[str, Column], PairedTest | str] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()

    @classmethod
    def build(cls, runs: Sequence[Run], reference: str | None = None, rounds: int = 1000,
              metrics: Sequence[str] | None = None,
              conditions: Sequence[str] | None = None) -> Report:
        """``metrics`` (keys such as ``acc``, ``tar@0.001``, ``rank1``, or prefixes ending in
        '@') and ``conditions`` choose the columns, in the tables and the CSV alike."""
        grid = Grid.build(runs).select(metrics, conditions)
        if reference is not None and reference not in grid.models:
            raise MeerbenchError(f"Reference model '{reference}' has no Result here; models: "
                                 f"{', '.join(grid.models)}.")
        report = cls(grid, reference, rounds, metrics=tuple(metrics or ()))
        for column in filter(has_test, grid.columns if reference else []):
            ref = grid.run(reference, column.protocol)
            for model in grid.models:
                run = grid.run(model, column.protocol)
                if model != reference and run and ref and grid.cell(model, column):
                    report.tests[(model, column)] = paired_test(run, ref, column, rounds)
        return report

    def test(self, model: str, column: Column) -> PairedTest | None:
        found = self.tests.get((model, column))
        return found if isinstance(found, PairedTest) else None

    def untested(self, model: str, column: Column) -> str | None:
        """Why ``model`` has no paired test in ``column`` although one was asked for; a missing
        score file is named: "no score file for arcface-s: no test"."""
        found = self.tests.get((model, column))
        if not isinstance(found, str):
            return None
        if found == NO_SCORE_FILE:
            return f"{NO_SCORE_FILE} for {', '.join(self.lacking(model, column))}: no test"
        return f"no test for {model}: {found}"

    def lacking(self, model: str, column: Column) -> list[str]:
        """Which of ``model`` and the reference lack the score file that ``column``'s paired
        test needs (:func:`missing_score_file`)."""
        found = [m for m in (model, self.reference)
                 if m and (run := self.grid.run(m, column.protocol)) and missing_score_file(run)]
        return found or [model]

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The tidy frame of every cell of the grid, in grid column then model order, with
        :data:`MARKS` added: what every table, note and the CSV are made from."""
        grid = self.grid
        place = {column: i for i, column in enumerate(grid.columns)}
        cells = [(run, column, cell) for column in grid.columns for model in grid.models
                 if (cell := grid.cell(model, column))
                 and (run := grid.run(model, column.protocol))]
        frame = tidy_frame(cells)
        marks = pd.DataFrame([{"column": place[column], **self._marks(run.model, column, cell)}
                              for run, column, cell in cells],
                             columns=list(MARKS), index=frame.index, dtype=object)
        return pd.concat([frame, marks], axis=1)

    def _marks(self, model: str, column: Column, cell: Cell) -> dict[str, Any]:
        m, test = column.metric, self.test(model, column)
        untested = self.untested(model, column)
        if cell.value is None:
            title = [cell.note or "not measured"]
        else:
            title = [f"95% CI [{m.show(cell.ci95[0])}, {m.show(cell.ci95[1])}]"] if cell.ci95 \
                else []
            if test:
                title.append(f"vs {self.reference}: {test.test}, p = {test.p_value:.3g}")
            title += [t for t in (untested, cell.note) if t]
        half = cell.half_width()
        return {"shown": "n/a" if cell.value is None else m.show(cell.value),
                "pm": None if half is None else f"{m.scale * half:.{m.digits}f}",
                "dagger": cell.value is not None and not cell.reliable,
                "bold": self.grid.is_best(model, column), "marker": test.marker if test else "",
                "test": test.test if test else None,
                "p_value": float(test.p_value) if test else None,
                "difference": float(test.difference) if test else None,
                "title": "; ".join(title),
                "remark": "; ".join(n for n in (cell.note, untested) if n)}

    def cells(self, table: Table) -> pd.DataFrame:
        """The rows of :attr:`frame` that ``table`` shows, in column then model order."""
        return self.frame[self.frame["column"].isin(self._places(table))]

    def _places(self, table: Table) -> list[int]:
        return [self.grid.columns.index(c) for c in table.columns]

    def pivot(self, table: Table, text: Callable[[Any], Any], missing: Any) -> pd.DataFrame:
        """``table`` as a frame: its models by (group, sub-label) columns, each cell ``text``
        of its row of :attr:`frame` (a named tuple), ``missing`` where a model has no Result."""
        cells, places = self.cells(table), self._places(table)
        shown = pd.Series([text(row) for row in cells.itertuples()], index=cells.index,
                          dtype=object)
        wide = (cells.assign(text=shown).pivot(index="model", columns="column", values="text")
                .reindex(index=table.rows, columns=places).astype(object))
        wide = wide.where(wide.notna(), missing)
        wide.columns = pd.MultiIndex.from_tuples(table.headers)
        wide.index.name = None
        return wide

    def tables(self) -> list[Table]:
        """The tables of :func:`layout`, of the chosen metrics when some were chosen."""
        chosen = {t.name: self.metrics for t in task_types()} if self.metrics else None
        return layout(self.grid, chosen)


@dataclass(frozen=True)
class Table:
    """A titled block: ``headers`` gives (group, sub-label) per column; ``rows`` the models;
    ``key`` names it (``\\label{tab:<key>}`` in LaTeX)."""

    title: str
    key: str
    columns: list[Column]
    headers: list[tuple[str, str]]
    rows: list[str]


def layout(grid: Grid, headline: Mapping[str, Sequence[str]] | None = None) -> list[Table]:
    """The tables of every task type in the Results, in report order. A task with conditions
    (verification) gets one table per metric, its conditions side by side (key
    ``<task>-<metric>``); any other one table per protocol when any model has a value there
    (key ``<protocol>-v<N>-<task>``). ``headline`` picks a task's metrics (keys, or prefixes
    ending in '@'; default: the task's own ``headline``, all when empty); the CSV holds every
    metric of the grid."""
    tables = []
    for task in task_types():
        wanted = (headline or {}).get(task.name, task.headline)
        columns = [c for c in grid.columns if c.metric.task == task.name
                   and (not wanted or any(matches(c.metric.key, w) for w in wanted))]
        tables += _by_metric(grid, task, columns, wanted) if task.per_condition else [
            table for protocol in grid.protocols
            if (table := _of_protocol(grid, task, protocol, columns)) is not None]
    return tables


def _by_metric(grid: Grid, task: Task, columns: list[Column],
               wanted: Sequence[str]) -> list[Table]:
    """One table per metric (in ``wanted`` order), every protocol and condition side by side."""
    tables = []
    keys = list(dict.fromkeys(c.metric.key for c in columns))
    for want in wanted or keys:
        for key in keys:
            if not matches(key, want):
                continue
            cols = [c for c in columns if c.metric.key == key]
            unit = f" ({cols[0].metric.unit})" if cols[0].metric.unit else ""
            tables.append(Table(f"{task.title}: {cols[0].metric.label}{unit}",
                                _key(f"{task.name}-{key}"), cols,
                                [(grid.label(c.protocol), c.condition) for c in cols],
                                _rows(grid, cols)))
    return tables


def _of_protocol(grid: Grid, task: Task, protocol: ProtocolKey,
                 columns: list[Column]) -> Table | None:
    """The task's metrics on one protocol; None when no model has a value there."""
    cols = [c for c in columns if c.protocol == protocol]
    if not any(c.value is not None for m in grid.models for col in cols
               if (c := grid.cell(m, col))):
        return None
    units = {c.metric.unit for c in cols}
    unit = f" ({units.pop()})" if len(units) == 1 and "" not in units else ""
    return Table(f"{task.title} on {grid.label(protocol)}{unit}",
                 _key(f"{grid.slug(protocol)}-{task.name}"), cols,
                 [(grid.label(protocol), _sub(c) if not unit else c.metric.label)
                  for c in cols], _rows(grid, cols))


def _key(text: str) -> str:
    """A LaTeX-label-safe key: letters, digits, '.', ':' and '-' only."""
    return re.sub(r"[^A-Za-z0-9.:-]+", "-", text.replace("@", "-")).strip("-")


def _rows(grid: Grid, cols: Sequence[Column]) -> list[str]:
    """Models with at least one cell in ``cols``."""
    return [m for m in grid.models if any(grid.cell(m, c) for c in cols)]


def _sub(column: Column) -> str:
    unit = column.metric.unit
    return f"{column.metric.label} ({unit})" if unit else column.metric.label


# ----------------------------------------------------------------------------- notes


def note(report: Report, table: Table) -> str:
    """The table's one-line note: what its marks mean in short, its rules by name, what is
    missing and why. The legend in full and all hashes are in :func:`provenance`."""
    grid, cols, cells = report.grid, table.columns, report.cells(table)
    measured = cells[cells["value"].notna()]
    parts = ["± 95% CI"] if measured["ci_low"].notna().any() else []
    if cells["bold"].any():
        parts.append(_bold_note(cols))
    tested = [c for c in cols if has_test(c)]
    if report.reference and tested:
        kinds = sorted({"McNemar" if c.metric.key == "acc" else "paired bootstrap"
                        for c in tested})
        parts.append(f"* p < 0.05, ** p < 0.01 vs {report.reference} "
                     f"({', '.join(kinds)}; uncorrected)")
    lacking = dict.fromkeys(f"{m} (reference)" if m == report.reference else m
                            for model in table.rows for c in tested
                            if report.tests.get((model, c)) == NO_SCORE_FILE
                            for m in report.lacking(model, c))
    if lacking:
        parts.append(f"{NO_SCORE_FILE} for {', '.join(lacking)}: no test")
    parts += dict.fromkeys(why for m in table.rows for c in tested
                           if report.tests.get((m, c)) != NO_SCORE_FILE
                           and (why := report.untested(m, c)))
    if not measured["reliable"].all():
        parts += dict.fromkeys(task_type(c.metric.task).dagger_legend for c in cols)
    parts += [f"{', '.join(labels)} rule: {rule}" for rule, labels in _rules(cells).items()]
    unmeasured = cells.loc[cells["value"].isna(), "note"]
    parts += (["– no Result"] if len(cells) < len(cols) * len(table.rows) else []) + [
        f"n/a: {r}" for r in sorted({n if isinstance(n, str) and n else "not measured"
                                     for n in unmeasured})]
    left_out = [m for m in grid.models if m not in table.rows
                and any(grid.run(m, c.protocol) for c in cols)]
    if left_out:
        reasons = sorted({_skipped(grid, m, c) for m in left_out for c in cols})
        parts.append(f"not shown: {', '.join(left_out)} ({'; '.join(reasons)})")
    return "; ".join(parts)


def _bold_note(cols: Sequence[Column]) -> str:
    lower = list(dict.fromkeys(c.metric.label for c in cols if not c.metric.higher_is_better))
    if not lower:
        return "bold: best (higher is better)"
    if len(lower) == len({c.metric.label for c in cols}):
        return "bold: best (lower is better)"
    return f"bold: best (lower is better for {', '.join(lower)}, higher for the others)"


def _rules(cells: pd.DataFrame) -> dict[str, list[str]]:
    """Metric labels per rule, in row order: {"pessimistic ties": ["Rank-1", "Rank-5"]}."""
    out: dict[str, list[str]] = {}
    for label, rule in zip(cells["label"], cells["rule"], strict=True):
        label = label.split("=")[0]
        if isinstance(rule, str) and rule and label not in out.setdefault(rule, []):
            out[rule].append(label)
    return out


def _rule_text(rule: str) -> str:
    name, _, rest = rule.partition(",")
    return f"{name} ({RULES[name]}){',' + rest if rest else ''}" if name in RULES else rule


def _skipped(grid: Grid, model: str, column: Column) -> str:
    """Why ``model`` has no cell in ``column``: its task's skip reason, or no such result."""
    run = grid.run(model, column.protocol)
    section = task_type(column.metric.task).read(run.result["metrics"]) if run else None
    if section is not None and section.status == "skipped":
        return str(section.reason)
    return f"no {column.condition} result"


# ----------------------------------------------------------------------------- provenance


PROTOCOL_HEAD = ("Protocol", "sha256", "Dataset", "Lists (sha256)", "Pairs")
MODEL_HEAD = ("Model", "Protocol", "Weights sha256", "Input", "Date", "meerbench", "Device")


@dataclass(frozen=True)
class Provenance:
    """What every table's note points to: the legend and rules in full (``notes``), one row
    per protocol definition and one per Result (hash prefixes: 12 hex digits for protocols and
    lists, 10 for weights, 7 for the commit)."""

    notes: list[str]
    protocols: pd.DataFrame
    models: pd.DataFrame


def provenance(report: Report) -> Provenance:
    grid, tables = report.grid, report.tables()
    notes = [PM_LEGEND + "; the CSV holds both bounds.", BOLD_LEGEND,
             *dict.fromkeys(task_type(c.metric.task).dagger_legend + "." for c in grid.columns)]
    if report.reference:
        notes.append(f"Markers: * p < 0.05, ** p < 0.01 against {report.reference} on the same "
                     "pairs: McNemar test on per-pair decisions (accuracy); paired bootstrap "
                     f"of the TAR difference, {report.rounds} resamples of probe identities "
                     "(TAR@FAR); no correction for multiple comparisons.")
    rules: dict[str, list[str]] = {}
    for table in tables:
        for rule, labels in _rules(report.cells(table)).items():
            rules.setdefault(rule, [])
            rules[rule] += [label for label in labels if label not in rules[rule]]
    notes += [f"{', '.join(labels)} rule: {_rule_text(rule)}." for rule, labels in rules.items()]
    protocols = []
    for protocol in grid.protocols:
        run = next(r for r in grid.runs if r.protocol == protocol)
        p = run.result["protocol"]
        lists = ", ".join(f"{task} {digest[:12]}" for task, digest in
                          (p.get("lists") or {}).items() if digest)
        pairs = run.result.get("counts", {}).get("pairs") or {}
        counts = (f"{next(iter(pairs.values())):,} per condition" if len(set(pairs.values())) == 1
                  else ", ".join(f"{k} {v:,}" for k, v in pairs.items()))
        protocols.append((grid.label(protocol), protocol.sha256[:12],
                          str(p.get("dataset") or "–"), lists or "–", counts or "–"))
    models = []
    for run in sorted(grid.runs, key=lambda r: (r.model, r.protocol)):
        model, prov = run.result["model"], run.result.get("provenance", {})
        commit = (prov.get("git_commit") or "")[:7]
        models.append((run.model, grid.label(run.protocol),
                       (model.get("weights_sha256") or "–")[:10], contract_text(model),
                       str(prov.get("date") or "–")[:10],
                       f"{prov.get('meerbench_version') or '–'} {commit}".strip(),
                       f"{prov.get('device') or '–'} {prov.get('precision') or ''}".strip()))
    return Provenance(notes, pd.DataFrame(protocols, columns=list(PROTOCOL_HEAD), dtype=object),
                      pd.DataFrame(models, columns=list(MODEL_HEAD), dtype=object))


def contract_text(model: Mapping[str, object]) -> str:
    """A Result's input contract in short: ``112x112 RGB arcface-112, 512-d``."""
    contract = model.get("contract")
    if not isinstance(contract, Mapping):
        return "–"
    size = "x".join(str(v) for v in contract.get("input_size") or ("?", "?"))
    return (f"{size} {contract.get('channels')} {contract.get('alignment')}, "
            f"{contract.get('embedding_dim')}-d")


# ----------------------------------------------------------------------------- renderers


_MD_ALWAYS = {"`": "&#96;", "\\": "&#92;", "|": r"\|", "[": r"\[", "]": r"\]", "\n": " ",
              "\r": " "}
#: '<' that could open an HTML tag, comment or autolink; '&' that could start an entity; '>'
#: not after a space (it could close a tag, or start a block quote at the start of a line).
_MD_HTML = re.compile(r"<(?=[A-Za-z/!?])|&(?=[A-Za-z#])|(?<!\s)>")
_MD_ENTITY = {"<": "&lt;", "&": "&amp;", ">": "&gt;"}


def md(text: str) -> str:
    """Escape text for one Markdown line or table cell: no raw HTML, link, code span or cell
    break can come from a name in a Result. A '<', '>' or '&' that can start no tag or entity
    (``p < 0.05``, ``score > t``) stays as it reads."""
    text = _MD_HTML.sub(lambda m: _MD_ENTITY[m.group(0)], str(text))
    return "".join(_MD_ALWAYS.get(ch, ch) for ch in text)


def pipe_table(frame: pd.DataFrame, align: str | Sequence[str]) -> list[str]:
    """The lines of a GitHub pipe table of a frame of Markdown texts, its index as the first
    column (left-aligned, headed by the index's name); ``align`` is the alignment (``--:``,
    ``:--``) of the other columns, one for all or one each."""
    aligns = [align] * len(frame.columns) if isinstance(align, str) else list(align)
    lines = ["| " + " | ".join([frame.index.name or "", *frame.columns]) + " |",
             "|:--" + "".join(f"|{a}" for a in aligns) + "|"]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples()]


def markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """GitHub-flavoured Markdown: one pipe table per Table with its note, then Provenance."""
    out = []
    for table in tables if tables is not None else report.tables():
        wide = report.pivot(table, _md_cell, NO_RESULT)
        wide.columns = [md(s if g in table.title else f"{g} {s}") for g, s in table.headers]
        wide.index = pd.Index([md(m) + (" (reference)" if m == report.reference else "")
                               for m in wide.index], name="Model")
        out.append("\n".join([f"### {md(table.title)}", "", *pipe_table(wide, "--:"), "",
                              f"Note: {md(note(report, table))}; rules and provenance: "
                              "see Provenance."]))
    out.append(_md_provenance(provenance(report)))
    return "\n\n".join(out) + "\n"


def _md_cell(row: Any) -> str:
    text = f"**{row.shown}**" if row.bold else row.shown
    text += f" ± {row.pm}" if row.pm else ""
    return text + row.marker.replace("*", r"\*") + (DAGGER if row.dagger else "")


def _md_provenance(prov: Provenance) -> str:
    lines = ["### Provenance", "", *(f"- {md(n)}" for n in prov.notes)]
    for frame in (prov.protocols, prov.models):
        lines += ["", *pipe_table(frame.map(md).set_index(frame.columns[0]), ":--")]
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", DAGGER: r"$^{\dagger}$",
        "|": r"$|$", "<": r"$<$", ">": r"$>$", "\n": " ", "\r": " "}
PROVENANCE_LABEL = "tab:provenance"


def tex(text: str) -> str:
    """Escape text for LaTeX (and the few non-ASCII symbols the tables use)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(report: Report, tables: Sequence[Table] | None = None) -> str:
    """booktabs tables, one labelled ``table`` float each, to ``\\input`` in a standard
    article; each note points to the provenance table (:func:`latex_provenance`)."""
    out = ["% meerbench tables: needs \\usepackage{booktabs} in the preamble; the notes refer "
           f"to \\ref{{{PROVENANCE_LABEL}}} in provenance.tex."]
    for table in tables if tables is not None else report.tables():
        wide = report.pivot(table, _tex_cell, tex(NO_RESULT))
        bold = report.pivot(table, lambda row: row.bold, False)
        groups = list(dict.fromkeys(g for g, _ in table.headers))
        if len(groups) > 1 or groups[0] not in table.title:
            wide.columns = pd.MultiIndex.from_tuples(
                [(tex(g), tex(s)) for g, s in table.headers], names=[None, "Model"])
        else:
            wide.columns = pd.Index([tex(s) for _, s in table.headers], name="Model")
        wide.index = [tex(m) + (r"\textsuperscript{ref}" if m == report.reference else "")
                      for m in wide.index]
        size = r"\small" if len(table.columns) <= 4 else r"\footnotesize"
        out.append(_float(tex(table.title), f"tab:{table.key}", size, r"\footnotesize",
                          [_tabular(wide, bold.to_numpy(dtype=bool))], r"\smallskip",
                          tex(note(report, table)) + "; rules and provenance: "
                          rf"Table~\ref{{{PROVENANCE_LABEL}}}."))
    return "\n".join(out)


def _tex_cell(row: Any) -> str:
    text = tex(row.shown) + (rf" $\pm$ {row.pm}" if row.pm else "")
    text += rf"\textsuperscript{{{row.marker}}}" if row.marker else ""
    return text + (r"$^{\dagger}$" if row.dagger else "")


def _tabular(frame: pd.DataFrame, bold: np.ndarray | None = None) -> str:
    """A frame of LaTeX texts as a booktabs ``tabular`` by pandas' Styler: its index (when
    named or labelled) as a left column, a second column level as a group row with a
    ``\\cmidrule`` under each group, ``bold`` cells set in ``\\textbf``."""
    styler = frame.style
    if bold is not None:
        styler = styler.apply(lambda _: np.where(bold, "textbf: --rwrap;", ""), axis=None)
    if isinstance(frame.index, pd.RangeIndex):
        styler, first = styler.hide(axis="index"), ""
    else:
        first = "l"
    align = "c" if bold is not None else "l"
    lines = styler.to_latex(hrules=True, multicol_align="c",
                            column_format=first + align * frame.shape[1]).splitlines()
    if frame.columns.nlevels > 1:
        rules, start = [], 1 + len(first)
        for group in dict.fromkeys(frame.columns.get_level_values(0)):
            n = list(frame.columns.get_level_values(0)).count(group)
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lines.insert(lines.index(r"\toprule") + 2, " ".join(rules))
    return "\n".join(lines)


def _float(caption: str, label: str, size: str, note_size: str, tabulars: Iterable[str],
           skip: str, notes: str) -> str:
    """One ``table`` float: caption and label, each tabular centred across the text width
    (never an overfull box), and the notes in a minipage below."""
    lines = [r"\begin{table}[htbp]", r"\centering", size, r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{caption}}}\label{{{label}}}"]
    for tabular in tabulars:
        lines += [r"\makebox[\linewidth][c]{%", tabular + "}", "", skip]
    return "\n".join(lines + [rf"\begin{{minipage}}{{\linewidth}}{note_size}", notes,
                              r"\end{minipage}", r"\end{table}", ""])


def latex_provenance(report: Report) -> str:
    """The provenance table (``\\label{tab:provenance}``): protocols, Results, legend, rules."""
    prov = provenance(report)
    frames = [f.map(tex).rename(columns=tex) for f in (prov.protocols, prov.models)]
    return _float("Provenance of the results", PROVENANCE_LABEL, r"\scriptsize", r"\scriptsize",
                  [_tabular(f) for f in frames], r"\medskip",
                  "\n\\par ".join(tex(n) for n in prov.notes))


def html_tables(report: Report, tables: Sequence[Table] | None = None) -> str:
    """The tables as HTML fragments (two header rows, the note below each table), then the
    provenance."""
    out = []
    for table in tables if tables is not None else report.tables():
        wide = report.pivot(table, _html_cell, f'<td title="no Result">{NO_RESULT}</td>')
        wide.index = [html.escape(m) + (" <small>(reference)</small>"
                                        if m == report.reference else "") for m in wide.index]
        out.append(f'<h3 id="tab:{table.key}">{html.escape(table.title)}</h3>\n'
                   + _html(wide, "Model") + "\n"
                   f'<p class="note">{html.escape(note(report, table))}; rules and provenance: '
                   f'<a href="#{PROVENANCE_LABEL}">Provenance</a>.</p>')
    prov = provenance(report)
    out.append(f'<h3 id="{PROVENANCE_LABEL}">Provenance</h3>\n<ul class="notes">'
               + "".join(f"<li>{html.escape(n)}</li>" for n in prov.notes) + "</ul>")
    out += [_html(frame.map(lambda c: f"<td>{html.escape(c)}</td>")) for frame in
            (prov.protocols, prov.models)]
    return "\n".join(out)


def _html(frame: pd.DataFrame, corner: str | None = None) -> str:
    """A ``<table>`` of a frame of ``<td>`` cells; with ``corner``, its index as row headers
    (``corner`` heads them) and a first header row of column groups."""
    if corner is None:
        head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns) + "</tr>"
        rows = ["<tr>" + "".join(row) + "</tr>" for row in frame.itertuples(index=False)]
        return f"<table><thead>{head}</thead>\n<tbody>{''.join(rows)}</tbody></table>"
    groups = frame.columns.get_level_values(0).tolist()
    spans = "".join(f'<th colspan="{groups.count(g)}">{html.escape(g)}</th>'
                    for g in dict.fromkeys(groups))
    subs = "".join(f"<th>{html.escape(s)}</th>" for s in frame.columns.get_level_values(1))
    rows = [f'<tr><th scope="row">{name}</th>{"".join(cells)}</tr>'
            for name, *cells in frame.itertuples()]
    return (f"<table>\n<thead><tr><th></th>{spans}</tr>\n<tr><th>{corner}</th>{subs}</tr></thead>"
            "\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def _html_cell(row: Any) -> str:
    text = f"<b>{html.escape(row.shown)}</b>" if row.bold else html.escape(row.shown)
    text += f" ± {row.pm}" if row.pm else ""
    marks = row.marker + (DAGGER if row.dagger else "")
    text += f"<sup>{marks}</sup>" if marks else ""
    return f'<td title="{html.escape(row.title)}">{text}</td>'


TABLE_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .6em;text-align:right}
thead tr:first-child th{border-top:2px solid #222}
thead tr:last-child th{border-bottom:1px solid #222}
tbody tr:last-child th,tbody tr:last-child td{border-bottom:2px solid #222}
tbody th{text-align:left;font-weight:normal}ul.notes,p.note{font-size:12px;color:#444}"""


def html_page(report: Report) -> str:
    """A self-contained page (inline CSS, no scripts) of all tables and their provenance."""
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>meerbench tables</title><style>{TABLE_CSS}</style></head><body>\n"
            f"<h1>meerbench tables</h1>\n{html_tables(report)}\n</body></html>\n")


#: The CSV's columns, each a column of :attr:`Report.frame` (renamed where the name differs).
CSV_COLUMNS = {"model": "model", "protocol": "protocol", "version": "version",
               "protocol_sha256": "protocol_sha256", "condition": "condition",
               "metric": "metric", "label": "label", "unit": "unit", "value": "value",
               "ci95_low": "ci_low", "ci95_high": "ci_high", "rule": "rule",
               "reliable": "reliable", "best": "bold", "reference": "reference", "test": "test",
               "p_value": "p_value", "difference": "difference", "note": "remark"}
CSV_HEADER = tuple(CSV_COLUMNS)


def csv_text(report: Report) -> str:
    """Every cell of the grid (not only the headline tables): :attr:`Report.frame` as raw
    values; ``unit`` is the unit of value, ci95_low and ci95_high (``fraction`` for rates the
    tables show in %)."""
    frame = report.frame.assign(reference=report.reference or "")
    frame = frame.astype({"reliable": int, "bold": int})[list(CSV_COLUMNS.values())]
    return frame.set_axis(CSV_HEADER, axis=1).to_csv(index=False, lineterminator="\n")


RENDERERS: dict[str, tuple[Callable[[Report], str], ...]] = {
    "md": (markdown,), "latex": (latex, latex_provenance), "csv": (csv_text,),
    "html": (html_page,),
}


def check_formats(formats: Sequence[str]) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise MeerbenchError(f"Unknown table format(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(FORMATS)}.")


def render(report: Report, fmt: str) -> dict[str, str]:
    """The files of one format (:data:`FORMATS`): name -> text."""
    check_formats([fmt])
    return {name: draw(report) for name, draw in zip(FORMATS[fmt], RENDERERS[fmt], strict=True)}


def write_tables(report: Report, out: Path, formats: Sequence[str] = tuple(FORMATS)) -> list[Path]:
    """Write the files of ``formats`` into ``out``; every text is made before the first write."""
    check_formats(formats)
    texts = {out / name: text for fmt in formats for name, text in render(report, fmt).items()}
    ensure_writable_dir(out)
    for path, text in texts.items():
        write_text(path, text)
    return list(texts)
