"""Two Results of one protocol side by side: per-condition differences with paired tests."""

from __future__ import annotations

from meerbench.errors import MeerbenchError
from meerbench.report.grid import Run, run_cells
from meerbench.report.significance import PairedTest, has_test, paired_test
from meerbench.report.tables import md


def compare(a: Run, b: Run, rounds: int = 1000, seed: int = 0) -> str:
    """Markdown table of B - A for every number both Results hold.

    Paired tests (McNemar for accuracy, paired bootstrap for TAR@FAR) use the score files next
    to the Results; other metrics show the difference only.
    """
    if a.protocol != b.protocol:
        raise MeerbenchError(
            f"{a.path} and {b.path} are on different protocols ({a.protocol.id} "
            f"v{a.protocol.version} {a.protocol.sha256[:8]} vs {b.protocol.id} "
            f"v{b.protocol.version} {b.protocol.sha256[:8]}); compare Results of one protocol.")
    cells_a, cells_b = run_cells(a), run_cells(b)
    lines = [f"## {md(b.model)} (B) vs {md(a.model)} (A) on {md(a.protocol.id)} "
             f"v{a.protocol.version}", "",
             "| Condition | Metric | A | B | B - A | 95% CI of B - A | p | Test |",
             "|:--|:--|--:|--:|--:|--:|--:|:--|"]
    for column, ca in cells_a.items():
        cb = cells_b.get(column)
        if cb is None or ca.value is None or cb.value is None:
            continue
        m = column.metric
        test = paired_test(b, a, column, rounds, seed)
        diff = f"{m.scale * (cb.value - ca.value):+.{m.digits}f}"
        ci = p = "–"
        name = "–" if not has_test(column) else md(test if isinstance(test, str) else test.test)
        if isinstance(test, PairedTest):
            p = f"{test.p_value:.3g}{test.marker}"
            if test.ci95:
                lo, hi = (f"{m.scale * v:+.{m.digits}f}" for v in test.ci95)
                ci = f"[{lo}, {hi}]"
        unit = f" ({m.unit})" if m.unit else ""
        lines.append(f"| {md(column.condition)} | {m.label}{unit} | {m.show(ca.value)} | "
                     f"{m.show(cb.value)} | {diff} | {ci} | {p} | {name} |")
    lines += ["", "–: no paired test for this metric.",
              "Markers: * p < 0.05, ** p < 0.01 (two-sided, no correction for multiple "
              "comparisons). "
              f"Paired bootstrap: {rounds} resamples of probe identities, seed {seed}."]
    return "\n".join(lines) + "\n"
