"""Paper tables from Results: Markdown, LaTeX (booktabs), CSV and HTML, and their provenance.

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

import csv
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meerbench.errors import MeerbenchError
from meerbench.io import ensure_writable_dir, write_text
from meerbench.report.grid import Column, Grid, ProtocolKey, Run, matches
from meerbench.report.significance import PairedTest, has_test, missing_score_file, paired_test
from meerbench.tasks import DAGGER, DAGGER_LEGEND, PM_LEGEND, Task, task_type, task_types

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
    title += [t for t in (report.untested(model, column), cell.note) if t]
    return Shown(m.show(cell.value), None if half is None else f"{m.scale * half:.{m.digits}f}",
                 test.marker if test else "", not cell.reliable,
                 report.grid.is_best(model, column), "; ".join(title))


def note(report: Report, table: Table) -> str:
    """The table's one-line note: what its marks mean in short, its rules by name, what is
    missing and why. The legend in full and all hashes are in :func:`provenance`."""
    grid, cols = report.grid, table.columns
    cells = [c for m in table.rows for col in cols if (c := grid.cell(m, col))]
    parts = ["± 95% CI"] if any(c.ci95 for c in cells if c.value is not None) else []
    if any(grid.is_best(m, c) for m in table.rows for c in cols):
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
    if any(not c.reliable for c in cells if c.value is not None):
        parts.append(f"{DAGGER} not measured (target x negatives < 1)")
    parts += [f"{', '.join(labels)} rule: {rule}" for rule, labels in _rules(grid, table).items()]
    missing = (["– no Result"] if len(cells) < len(cols) * len(table.rows) else []) + [
        f"n/a: {r}" for r in sorted({c.note or "not measured" for c in cells if c.value is None})]
    parts += missing
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
    protocols: list[tuple[str, ...]]
    models: list[tuple[str, ...]]


def provenance(report: Report) -> Provenance:
    grid, tables = report.grid, report.tables()
    notes = [PM_LEGEND + "; the CSV holds both bounds.", BOLD_LEGEND, DAGGER_LEGEND + "."]
    if report.reference:
        notes.append(f"Markers: * p < 0.05, ** p < 0.01 against {report.reference} on the same "
                     "pairs: McNemar test on per-pair decisions (accuracy); paired bootstrap "
                     f"of the TAR difference, {report.rounds} resamples of probe identities "
                     "(TAR@FAR); no correction for multiple comparisons.")
    rules: dict[str, list[str]] = {}
    for table in tables:
        for rule, labels in _rules(grid, table).items():
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
    return Provenance(notes, protocols, models)


def contract_text(model: Mapping[str, object]) -> str:
    """A Result's input contract in short: ``112x112 RGB arcface-112, 512-d``."""
    contract = model.get("contract")
    if not isinstance(contract, Mapping):
        return "–"
    size = "x".join(str(v) for v in contract.get("input_size") or ("?", "?"))
    return (f"{size} {contract.get('channels')} {contract.get('alignment')}, "
            f"{contract.get('embedding_dim')}-d")


# ----------------------------------------------------------------------------- renderers


_MD = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "&#96;", "\\": "&#92;", "|": r"\|",
       "[": r"\[", "]": r"\]", "\n": " ", "\r": " "}


def md(text: str) -> str:
    """Escape text for one Markdown line or table cell: no raw HTML, link, code span or cell
    break can come from a name in a Result."""
    return "".join(_MD.get(ch, ch) for ch in str(text))


def markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """GitHub-flavoured Markdown: one pipe table per Table with its note, then Provenance."""
    out = []
    for table in tables if tables is not None else report.tables():
        head = " | ".join(md(s if g in table.title else f"{g} {s}") for g, s in table.headers)
        lines = [f"### {md(table.title)}", "", f"| Model | {head} |",
                 "|:--" + "|--:" * len(table.columns) + "|"]
        for model in table.rows:
            cells = [_md_cell(shown(report, model, c)) for c in table.columns]
            name = f"{md(model)} (reference)" if model == report.reference else md(model)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"Note: {md(note(report, table))}; rules and provenance: see Provenance."]
        out.append("\n".join(lines))
    out.append(_md_provenance(provenance(report)))
    return "\n\n".join(out) + "\n"


def _md_cell(s: Shown) -> str:
    text = f"**{s.value}**" if s.bold else s.value
    text += f" ± {s.pm}" if s.pm else ""
    return text + s.marker.replace("*", r"\*") + (DAGGER if s.unreliable else "")


def _md_provenance(prov: Provenance) -> str:
    lines = ["### Provenance", "", *(f"- {md(n)}" for n in prov.notes)]
    for head, rows in ((PROTOCOL_HEAD, prov.protocols), (MODEL_HEAD, prov.models)):
        lines += ["", "| " + " | ".join(head) + " |", "|" + ":--|" * len(head)]
        lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
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
        groups = _groups(table.headers)
        size = r"\small" if len(table.columns) <= 4 else r"\footnotesize"
        lines = [r"\begin{table}[htbp]", r"\centering", size, r"\setlength{\tabcolsep}{3pt}",
                 rf"\caption{{{tex(table.title)}}}\label{{tab:{table.key}}}",
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
                  tex(note(report, table)) + rf"; rules and provenance: "
                  rf"Table~\ref{{{PROVENANCE_LABEL}}}.",
                  r"\end{minipage}", r"\end{table}", ""]
        out.append("\n".join(lines))
    return "\n".join(out)


def _tex_cell(s: Shown) -> str:
    text = rf"\textbf{{{tex(s.value)}}}" if s.bold else tex(s.value)
    text += rf" $\pm$ {s.pm}" if s.pm else ""
    text += rf"\textsuperscript{{{s.marker}}}" if s.marker else ""
    return text + (r"$^{\dagger}$" if s.unreliable else "")


def latex_provenance(report: Report) -> str:
    """The provenance table (``\\label{tab:provenance}``): protocols, Results, legend, rules."""
    prov = provenance(report)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{Provenance of the results}}\label{{{PROVENANCE_LABEL}}}"]
    for head, rows in ((PROTOCOL_HEAD, prov.protocols), (MODEL_HEAD, prov.models)):
        lines += [r"\makebox[\linewidth][c]{%", r"\begin{tabular}{" + "l" * len(head) + "}",
                  r"\toprule", " & ".join(tex(h) for h in head) + r" \\", r"\midrule"]
        lines += [" & ".join(tex(c) for c in row) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}}", "", r"\medskip"]
    lines += [r"\begin{minipage}{\linewidth}\scriptsize",
              "\n\\par ".join(tex(n) for n in prov.notes), r"\end{minipage}", r"\end{table}", ""]
    return "\n".join(lines)


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
    """The tables as HTML fragments (two header rows, the note below each table), then the
    provenance."""
    out = []
    for table in tables if tables is not None else report.tables():
        groups = "".join(f'<th colspan="{n}">{html.escape(g)}</th>'
                         for g, n in _groups(table.headers))
        subs = "".join(f"<th>{html.escape(s)}</th>" for _, s in table.headers)
        rows = []
        for model in table.rows:
            ref = " <small>(reference)</small>" if model == report.reference else ""
            cells = "".join(_html_cell(shown(report, model, c)) for c in table.columns)
            rows.append(f'<tr><th scope="row">{html.escape(model)}{ref}</th>{cells}</tr>')
        out.append(f'<h3 id="tab:{table.key}">{html.escape(table.title)}</h3>\n<table>\n'
                   f"<thead><tr><th></th>{groups}</tr>\n<tr><th>Model</th>{subs}</tr></thead>\n"
                   "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n"
                   f'<p class="note">{html.escape(note(report, table))}; rules and provenance: '
                   f'<a href="#{PROVENANCE_LABEL}">Provenance</a>.</p>')
    prov = provenance(report)
    out.append(f'<h3 id="{PROVENANCE_LABEL}">Provenance</h3>\n<ul class="notes">'
               + "".join(f"<li>{html.escape(n)}</li>" for n in prov.notes) + "</ul>")
    for head, rows in ((PROTOCOL_HEAD, prov.protocols), (MODEL_HEAD, prov.models)):
        out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                   + "</tr></thead>\n<tbody>" + "".join(
                       "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows) + "</tbody></table>")
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
tbody th{text-align:left;font-weight:normal}ul.notes,p.note{font-size:12px;color:#444}"""


def html_page(report: Report) -> str:
    """A self-contained page (inline CSS, no scripts) of all tables and their provenance."""
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>meerbench tables</title><style>{TABLE_CSS}</style></head><body>\n"
            f"<h1>meerbench tables</h1>\n{html_tables(report)}\n</body></html>\n")


CSV_HEADER = ("model", "protocol", "version", "protocol_sha256", "condition", "metric", "label",
              "unit", "value", "ci95_low", "ci95_high", "rule", "reliable", "best", "reference",
              "test", "p_value", "difference", "note")


def csv_text(report: Report) -> str:
    """Every cell of the grid (not only the headline tables) as raw values: ``unit`` is the
    unit of value, ci95_low and ci95_high (``fraction`` for rates the tables show in %)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    grid = report.grid
    for column in grid.columns:
        for model in grid.models:
            cell = grid.cell(model, column)
            if cell is None:
                continue
            test = report.test(model, column)
            lo, hi = cell.ci95 or (None, None)
            p = column.protocol
            writer.writerow([
                model, p.id, p.version, p.sha256, column.condition, column.metric.key,
                column.metric.label, column.metric.value_unit, _num(cell.value), _num(lo),
                _num(hi), cell.rule or "", int(cell.reliable), int(grid.is_best(model, column)),
                report.reference or "", test.test if test else "",
                _num(test.p_value if test else None), _num(test.difference if test else None),
                "; ".join(n for n in (cell.note, report.untested(model, column)) if n)])
    return buf.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


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
