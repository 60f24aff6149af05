"""Paper tables from Results: Markdown, LaTeX (booktabs), CSV and HTML.

Rows are models; columns are (protocol, condition) for one metric per table of a task with
conditions (verification), or the metrics of one protocol for any other task type. The best
shown value per column is bold; ``±`` is the larger distance from the value to an end of its 95%
bootstrap interval; a marker flags a paired difference from the reference model; footnotes give
rules and versions.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_text
from meerbench.report.grid import Column, Grid, ProtocolKey, Run
from meerbench.report.significance import PairedTest, has_test, paired_test
from meerbench.tasks import Task, task_type, task_types

FORMATS = {"md": "tables.md", "latex": "tables.tex", "csv": "tables.csv", "html": "tables.html"}
DAGGER = "†"
RULES = {
    "insightface": "threshold chosen on the other folds on insightface's grid, accept score > t",
    "exact": "threshold chosen on the other folds between observed scores, accept score >= t",
    "floor": "largest TAR whose FAR does not exceed the target",
    "nearest": "ROC point nearest the target, as sklearn's roc_curve; FAR may exceed it",
    "interp": "linear interpolation on the ROC",
    "min_gap": "operating point minimising |FAR - FRR|, as bob.measure",
}


@dataclass
class Report:
    """A grid with its paired tests against an optional reference model."""

    grid: Grid
    reference: str | None = None
    rounds: int = 1000
    tests: dict[tuple[str, Column], PairedTest | str] = field(default_factory=dict)

    @classmethod
    def build(cls, runs: Sequence[Run], reference: str | None = None,
              rounds: int = 1000) -> Report:
        grid = Grid.build(runs)
        if reference is not None and reference not in grid.models:
            raise MeerbenchError(f"Reference model '{reference}' has no Result here; models: "
                                 f"{', '.join(grid.models)}.")
        report = cls(grid, reference, rounds)
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


@dataclass(frozen=True)
class Table:
    """A titled block: ``headers`` gives (group, sub-label) per column; ``rows`` the models."""

    title: str
    columns: list[Column]
    headers: list[tuple[str, str]]
    rows: list[str]


def layout(grid: Grid, headline: Mapping[str, Sequence[str]] | None = None) -> list[Table]:
    """The tables of every task type in the Results, in report order. A task with conditions
    (verification) gets one table per metric, its conditions side by side; any other one table
    per protocol (when any model has a value there). ``headline`` picks a task's metrics (keys,
    or prefixes ending in '@'; default: the task's own ``headline``, all when empty); the CSV
    holds every metric."""
    tables = []
    for task in task_types():
        wanted = (headline or {}).get(task.name, task.headline)
        columns = [c for c in grid.columns if c.metric.task == task.name
                   and (not wanted or _wanted(c.metric.key, wanted))]
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
            if not _wanted(key, [want]):
                continue
            cols = [c for c in columns if c.metric.key == key]
            unit = f" ({cols[0].metric.unit})" if cols[0].metric.unit else ""
            tables.append(Table(f"{task.title}: {cols[0].metric.label}{unit}", cols,
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
    return Table(f"{task.title} on {grid.label(protocol)}{unit}", cols,
                 [(grid.label(protocol), _sub(c) if not unit else c.metric.label)
                  for c in cols], _rows(grid, cols))


def _wanted(key: str, wanted: Sequence[str]) -> bool:
    return any(key == w or (w.endswith("@") and key.startswith(w)) for w in wanted)


def _rows(grid: Grid, cols: Sequence[Column]) -> list[str]:
    """Models with at least one cell in ``cols``."""
    return [m for m in grid.models if any(grid.cell(m, c) for c in cols)]


def _sub(column: Column) -> str:
    unit = column.metric.unit
    return f"{column.metric.label} ({unit})" if unit else column.metric.label


# ----------------------------------------------------------------------------- cell text


@dataclass(frozen=True)
class Shown:
    """A cell as text parts; renderers add bold, markers and escaping."""

    value: str
    pm: str | None
    marker: str
    unreliable: bool
    bold: bool
    title: str


def shown(report: Report, model: str, column: Column) -> Shown:
    cell = report.grid.cell(model, column)
    if cell is None:
        return Shown("–", None, "", False, False, "no Result")
    if cell.value is None:
        return Shown("n/a", None, "", False, False, cell.note or "not measured")
    m = column.metric
    half = cell.half_width()
    test = report.test(model, column)
    title = [f"95% CI [{m.show(cell.ci95[0])}, {m.show(cell.ci95[1])}]"] if cell.ci95 else []
    if test:
        title.append(f"vs {report.reference}: {test.test}, p = {test.p_value:.3g}")
    if cell.note:
        title.append(cell.note)
    return Shown(m.show(cell.value), None if half is None else f"{m.scale * half:.{m.digits}f}",
                 test.marker if test else "", not cell.reliable,
                 report.grid.is_best(model, column), "; ".join(title))


def footnotes(report: Report, table: Table) -> list[str]:
    """Plain-text notes for one table: intervals, bold, markers, rules, protocols, gaps."""
    grid, cols = report.grid, table.columns
    cells = [c for m in table.rows for col in cols if (c := grid.cell(m, col))]
    notes = []
    if any(c.ci95 for c in cells):
        notes.append("± is the larger distance from the value to an end of its 95% percentile "
                     "bootstrap interval (resampling identities); exact bounds are in the CSV.")
    notes.append(_bold_note(cols))
    tested = [c for c in cols if has_test(c)]
    if report.reference and tested:
        kinds = sorted({"McNemar test on per-pair decisions (accuracy)" if c.metric.key == "acc"
                        else f"paired bootstrap of the TAR difference, {report.rounds} resamples "
                             "of probe identities (TAR@FAR)" for c in tested})
        notes.append(f"Markers: * p < 0.05, ** p < 0.01 against {report.reference} on the "
                     f"same pairs: {'; '.join(kinds)}; no correction for multiple comparisons.")
    if any(not c.reliable for c in cells):
        notes.append(f"{DAGGER} Target x negatives < 1: no false accept or alarm is allowed, so "
                     "the rate is not measured at this operating point.")
    for rule, labels in _rules(grid, table).items():
        notes.append(f"{', '.join(labels)} rule: {_rule_text(rule)}.")
    for protocol in dict.fromkeys(c.protocol for c in cols):
        notes.append(_protocol_note(grid, protocol, cols))
    missing = [f"n/a: {r}" for r in sorted({c.note or "not measured" for c in cells
                                             if c.value is None})]
    if len(cells) < len(cols) * len(table.rows):
        missing.insert(0, "– no Result")
    if missing:
        notes.append("; ".join(missing) + ".")
    left_out = [m for m in grid.models if m not in table.rows
                and any(grid.run(m, c.protocol) for c in cols)]
    if left_out:
        reasons = sorted({_skipped(grid, m, c) for m in left_out for c in cols})
        notes.append(f"Not in this table: {', '.join(left_out)} ({'; '.join(reasons)}).")
    return notes


def _bold_note(cols: Sequence[Column]) -> str:
    lower = list(dict.fromkeys(c.metric.label for c in cols if not c.metric.higher_is_better))
    if not lower:
        return "Bold: best value per column (higher is better)."
    if len(lower) == len({c.metric.label for c in cols}):
        return "Bold: best value per column (lower is better)."
    return (f"Bold: best value per column (lower is better for {', '.join(lower)}, higher for "
            "the others).")


def _rules(grid: Grid, table: Table) -> dict[str, list[str]]:
    """Metric labels per rule, in column order: {"pessimistic ties": ["Rank-1", "Rank-5"]}."""
    out: dict[str, list[str]] = {}
    for col in table.columns:
        label = col.metric.label.split("=")[0]
        for model in table.rows:
            cell = grid.cell(model, col)
            if cell and cell.rule and label not in out.setdefault(cell.rule, []):
                out[cell.rule].append(label)
    return out


def _rule_text(rule: str) -> str:
    name, _, rest = rule.partition(",")
    return f"{name} ({RULES[name]}){',' + rest if rest else ''}" if name in RULES else rule


def _protocol_note(grid: Grid, protocol: ProtocolKey, cols: Sequence[Column]) -> str:
    run = next(r for r in grid.runs if r.protocol == protocol)
    lists = run.result["protocol"].get("lists") or {}
    parts = [f"protocol sha256 {protocol.sha256[:12]}"]
    parts += [f"{task} list {digest[:12]}" for task, digest in lists.items() if digest]
    pairs = run.result.get("counts", {}).get("pairs") or {}
    counted = {c.condition: pairs[c.condition] for c in cols if c.condition in pairs}
    if counted:
        parts.append("pairs " + ", ".join(f"{k} {v:,}" for k, v in counted.items()))
    return f"{grid.label(protocol)}: " + "; ".join(parts) + "."


def _skipped(grid: Grid, model: str, column: Column) -> str:
    """Why ``model`` has no cell in ``column``: its task's skip reason, or no such result."""
    run = grid.run(model, column.protocol)
    section = task_type(column.metric.task).read(run.result["metrics"]) if run else None
    if section is not None and section.status == "skipped":
        return str(section.reason)
    return f"no {column.condition} result"


# ----------------------------------------------------------------------------- renderers


_MD = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "&#96;", "\\": "&#92;", "|": r"\|",
       "[": r"\[", "]": r"\]", "\n": " ", "\r": " "}


def md(text: str) -> str:
    """Escape text for one Markdown line or table cell: no raw HTML, link, code span or cell
    break can come from a name in a Result."""
    return "".join(_MD.get(ch, ch) for ch in str(text))


def markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """GitHub-flavoured Markdown: one pipe table per Table, notes as a list below."""
    out = []
    for table in tables if tables is not None else layout(report.grid):
        head = " | ".join(md(s if g in table.title else f"{g} {s}") for g, s in table.headers)
        lines = [f"### {md(table.title)}", "", f"| Model | {head} |",
                 "|:--" + "|--:" * len(table.columns) + "|"]
        for model in table.rows:
            cells = [_md_cell(shown(report, model, c)) for c in table.columns]
            name = f"{md(model)} (reference)" if model == report.reference else md(model)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {md(note)}" for note in footnotes(report, table)]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _md_cell(s: Shown) -> str:
    text = f"**{s.value}**" if s.bold else s.value
    text += f" ± {s.pm}" if s.pm else ""
    return text + s.marker.replace("*", r"\*") + (DAGGER if s.unreliable else "")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", DAGGER: r"$^{\dagger}$",
        "|": r"$|$", "<": r"$<$", ">": r"$>$", "\n": " ", "\r": " "}


def tex(text: str) -> str:
    """Escape text for LaTeX (and the few non-ASCII symbols the tables use)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(report: Report, tables: Sequence[Table] | None = None) -> str:
    """booktabs tables, one ``table`` float each, to ``\\input`` in a standard article."""
    out = ["% meerbench tables: needs \\usepackage{booktabs} in the preamble."]
    for table in tables if tables is not None else layout(report.grid):
        groups = _groups(table.headers)
        size = r"\small" if len(table.columns) <= 4 else r"\footnotesize"
        lines = [r"\begin{table}[htbp]", r"\centering", size, r"\setlength{\tabcolsep}{3pt}",
                 rf"\caption{{{tex(table.title)}}}",
                 r"\makebox[\linewidth][c]{%",
                 r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule"]
        if len(groups) > 1 or groups[0][0] not in table.title:
            lines.append(" & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{tex(g)}}}"
                                            for g, n in groups) + r" \\")
            start, rules = 2, []
            for _, n in groups:
                rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
                start += n
            lines.append(" ".join(rules))
        lines.append("Model & " + " & ".join(tex(s) for _, s in table.headers) + r" \\")
        lines.append(r"\midrule")
        for model in table.rows:
            name = tex(model) + (r"\textsuperscript{ref}" if model == report.reference else "")
            lines.append(name + " & " + " & ".join(
                _tex_cell(shown(report, model, c)) for c in table.columns) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", "", r"\smallskip",
                  r"\begin{minipage}{\linewidth}\footnotesize",
                  "\n\\par ".join(tex(n) for n in footnotes(report, table)),
                  r"\end{minipage}", r"\end{table}", ""]
        out.append("\n".join(lines))
    return "\n".join(out)


def _tex_cell(s: Shown) -> str:
    text = rf"\textbf{{{tex(s.value)}}}" if s.bold else tex(s.value)
    text += rf" $\pm$ {s.pm}" if s.pm else ""
    text += rf"\textsuperscript{{{s.marker}}}" if s.marker else ""
    return text + (r"$^{\dagger}$" if s.unreliable else "")


def _groups(headers: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
    """Runs of equal group labels: [("synthmask v1", 3), ...]."""
    groups: list[tuple[str, int]] = []
    for g, _ in headers:
        if groups and groups[-1][0] == g:
            groups[-1] = (g, groups[-1][1] + 1)
        else:
            groups.append((g, 1))
    return groups


def html_tables(report: Report, tables: Sequence[Table] | None = None) -> str:
    """The tables as HTML fragments (two header rows, notes below each table)."""
    out = []
    for table in tables if tables is not None else layout(report.grid):
        groups = "".join(f'<th colspan="{n}">{html.escape(g)}</th>'
                         for g, n in _groups(table.headers))
        subs = "".join(f"<th>{html.escape(s)}</th>" for _, s in table.headers)
        rows = []
        for model in table.rows:
            ref = " <small>(reference)</small>" if model == report.reference else ""
            cells = "".join(_html_cell(shown(report, model, c)) for c in table.columns)
            rows.append(f'<tr><th scope="row">{html.escape(model)}{ref}</th>{cells}</tr>')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in footnotes(report, table))
        out.append(f"<h3>{html.escape(table.title)}</h3>\n<table>\n<thead><tr><th></th>{groups}"
                   f"</tr>\n<tr><th>Model</th>{subs}</tr></thead>\n<tbody>\n"
                   + "\n".join(rows) + f"\n</tbody>\n</table>\n<ul class=\"notes\">{notes}</ul>")
    return "\n".join(out)


def _html_cell(s: Shown) -> str:
    text = f"<b>{html.escape(s.value)}</b>" if s.bold else html.escape(s.value)
    text += f" ± {s.pm}" if s.pm else ""
    marks = s.marker + (DAGGER if s.unreliable else "")
    text += f"<sup>{marks}</sup>" if marks else ""
    return f'<td title="{html.escape(s.title)}">{text}</td>'


TABLE_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .6em;text-align:right}
thead tr:first-child th{border-top:2px solid #222}
thead tr:last-child th{border-bottom:1px solid #222}
tbody tr:last-child th,tbody tr:last-child td{border-bottom:2px solid #222}
tbody th{text-align:left;font-weight:normal}ul.notes{font-size:12px;color:#444}"""


def html_page(report: Report) -> str:
    """A self-contained page (inline CSS, no scripts) of all tables."""
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>meerbench tables</title><style>{TABLE_CSS}</style></head><body>\n"
            f"<h1>meerbench tables</h1>\n{html_tables(report)}\n</body></html>\n")


CSV_HEADER = ("model", "protocol", "version", "protocol_sha256", "condition", "metric", "label",
              "unit", "value", "ci95_low", "ci95_high", "rule", "reliable", "best", "reference",
              "test", "p_value", "difference", "note")


def csv_text(report: Report) -> str:
    """Every cell of the grid (not only the headline tables); raw values (fractions, not %)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    grid = report.grid
    for column in grid.columns:
        for model in grid.models:
            cell = grid.cell(model, column)
            if cell is None:
                continue
            found = report.tests.get((model, column))
            test = found if isinstance(found, PairedTest) else None
            why = found if isinstance(found, str) else None
            lo, hi = cell.ci95 or (None, None)
            p = column.protocol
            writer.writerow([
                model, p.id, p.version, p.sha256, column.condition, column.metric.key,
                column.metric.label, column.metric.unit, _num(cell.value), _num(lo), _num(hi),
                cell.rule or "", int(cell.reliable), int(grid.is_best(model, column)),
                report.reference or "", test.test if test else "",
                _num(test.p_value if test else None), _num(test.difference if test else None),
                "; ".join(n for n in (cell.note, why) if n)])
    return buf.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


RENDERERS: dict[str, Callable[[Report], str]] = {
    "md": markdown, "latex": latex, "csv": csv_text, "html": html_page,
}


def write_tables(report: Report, out: Path, formats: Sequence[str] = tuple(FORMATS)) -> list[Path]:
    """Write ``tables.md``/``.tex``/``.csv``/``.html`` into ``out``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise MeerbenchError(f"Unknown table format(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(FORMATS)}.")
    texts = {out / FORMATS[fmt]: RENDERERS[fmt](report) for fmt in formats}  # all, then write
    ensure_writable_dir(out)
    for path, text in texts.items():
        write_text(path, text)
    return list(texts)
