"""Two Results of one protocol side by side: per-condition differences with paired tests.

:func:`comparison` computes (JSON-able data, ``meerbench compare --json``); :func:`compare`
renders it as the Markdown table the command prints (a frame of its rows, drawn by
:func:`meerbench.report.tables.pipe_table` as the report tables are).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from meerbench.errors import MeerbenchError
from meerbench.protocol import task_type
from meerbench.report.grid import Run, run_cells
from meerbench.report.significance import (
    NO_TEST,
    PairedTest,
    missing_score_file,
    paired_test,
)
from meerbench.report.tables import md, pipe_table
from meerbench.tasks import DAGGER, DAGGER_LEGEND


def comparison(a: Run, b: Run, rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    """B - A for every number both Results hold, with paired tests where the metric has one.

    Paired tests (:mod:`meerbench.report.significance`) use the score files next to the
    Results. Each row: ``task`` (its title: two tasks may share a condition and a metric label,
    e.g. 10-fold and dense TAR@FAR), ``condition``, ``metric`` (key), ``label``, ``unit``,
    ``digits``
    (as the reports show it), ``a``, ``b``, ``diff`` and ``ci95`` (of B - A) in ``unit`` (percent
    for rates), ``a_reliable``/``b_reliable`` (False: not measured at this operating point, shown
    with a dagger), ``p_value``, ``marker`` (``*`` p < 0.05, ``**`` p < 0.01), ``test`` (its
    name), ``note`` (why there is no test). ``notes`` names every missing score file.
    """
    if a.protocol != b.protocol:
        raise MeerbenchError(
            f"{a.path} and {b.path} are on different protocols ({a.protocol.id} "
            f"v{a.protocol.version} {a.protocol.sha256[:8]} vs {b.protocol.id} "
            f"v{b.protocol.version} {b.protocol.sha256[:8]}); compare Results of one protocol.")
    cells_a, cells_b = run_cells(a), run_cells(b)
    rows = []
    for column, ca in cells_a.items():
        cb = cells_b.get(column)
        if cb is None or ca.value is None or cb.value is None:
            continue
        m = column.metric
        test = paired_test(b, a, column, rounds, seed)
        found = test if isinstance(test, PairedTest) else None
        rows.append({
            "task": task_type(m.task).title, "condition": column.condition, "metric": m.key,
            "label": m.label, "unit": m.unit,
            "digits": m.digits, "a": m.scale * ca.value, "b": m.scale * cb.value,
            "diff": m.scale * (cb.value - ca.value),
            "a_reliable": ca.reliable, "b_reliable": cb.reliable,
            "ci95": [m.scale * v for v in found.ci95] if found and found.ci95 else None,
            "p_value": found.p_value if found else None, "marker": found.marker if found else "",
            "test": found.test if found else None, "note": None if found else str(test)})
    p = a.protocol
    return {"models": {"a": a.model, "b": b.model},
            "protocol": {"id": p.id, "version": p.version, "sha256": p.sha256},
            "rounds": rounds, "seed": seed, "rows": rows,
            "notes": [note for run in (a, b) if (note := missing_score_file(run))]}


#: The columns of the table :func:`compare` prints, and their Markdown alignment (after the first).
COLUMNS = ("Task", "Condition", "Metric", "A", "B", "B - A", "95% CI of B - A", "p", "Test")
ALIGN = (":--", ":--", "--:", "--:", "--:", "--:", "--:", ":--")


def _cells(row: dict[str, Any]) -> list[str]:
    """One row of :func:`comparison` as the Markdown cells of :data:`COLUMNS`."""
    digits = row["digits"]
    ci = p_value = "–"
    if row["ci95"]:
        lo, hi = (f"{v:+.{digits}f}" for v in row["ci95"])
        ci = f"[{lo}, {hi}]"
    if row["p_value"] is not None:
        p_value = f"{row['p_value']:.3g}{row['marker']}"
    name = "–" if row["note"] == NO_TEST else md(row["test"] or row["note"])
    unit = f" ({row['unit']})" if row["unit"] else ""
    a, b = (f"{row[k]:.{digits}f}{'' if row[f'{k}_reliable'] else DAGGER}" for k in "ab")
    return [md(row["task"]), md(row["condition"]), f"{row['label']}{unit}", a, b,
            f"{row['diff']:+.{digits}f}", ci, p_value, name]


def compare(a: Run, b: Run, rounds: int = 1000, seed: int = 0) -> str:
    """Markdown table of :func:`comparison`; missing score files are named above the table."""
    data = comparison(a, b, rounds, seed)
    models, p = data["models"], data["protocol"]
    lines = [f"## {md(models['b'])} (B) vs {md(models['a'])} (A) on {md(p['id'])} "
             f"v{p['version']}", ""]
    for note in data["notes"]:  # a paragraph each
        lines += [f"**Missing score file, no paired tests:** {md(note)}.", ""]
    lines += pipe_table(pd.DataFrame([_cells(row) for row in data["rows"]],
                                   columns=COLUMNS).set_index(COLUMNS[0]), ALIGN)
    unreliable = any(not (row["a_reliable"] and row["b_reliable"]) for row in data["rows"])
    lines += ["", "–: no paired test for this metric.", *([f"{DAGGER_LEGEND}."] * unreliable),
              "Markers: * p < 0.05, ** p < 0.01 (two-sided, no correction for multiple "
              "comparisons). "
              f"Paired bootstrap: {data['rounds']} resamples of probe identities, "
              f"seed {data['seed']}."]
    return "\n".join(lines) + "\n"
