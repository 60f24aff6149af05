"""What the ``report``, ``leaderboard`` and ``compare`` commands do, without argparse.

Each returns (exit status, text to print); errors are MeerbenchError (exit status 2 in the CLI).
``leaderboard --check`` returns :data:`EXIT_REGRESSION` when a number moved and
:data:`EXIT_CHECK_FAILED` when the check itself failed on a bug, so CI never mistakes one for the
other. Every input is read and validated before any output is written.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from pathlib import Path

from meerbench.errors import MeerbenchError
from meerbench.report.grid import load_runs, load_side_files

EXIT_REGRESSION = 1
EXIT_CHECK_FAILED = 3


def report_command(paths: Sequence[str], out: str | None = None,
                   formats: Sequence[str] = ("md", "latex", "csv", "html"),
                   reference: str | None = None, rounds: int = 1000,
                   plots: bool = True, metrics: Sequence[str] | None = None,
                   conditions: Sequence[str] | None = None) -> tuple[int, str]:
    """Tables in ``formats`` and every plot into ``out``; without ``out``, the first format's
    text to print (LaTeX: the tables, then the provenance table). ``metrics`` and
    ``conditions`` choose the columns (:meth:`Report.build`)."""
    from meerbench.report.plots import write_plots
    from meerbench.report.tables import Report, check_formats, render, write_tables

    check_formats(formats)
    runs = load_runs(paths)
    report = Report.build(runs, reference, rounds, metrics, conditions)
    if out is None:
        return 0, "\n".join(render(report, formats[0]).values())
    load_side_files(runs)
    folder = Path(out)
    files = write_tables(report, folder, formats)
    notes: list[str] = []
    if plots:
        drawn = write_plots(report.grid, folder / "plots")
        files += drawn.files
        notes = drawn.notes
    lines = [f"wrote {len(files)} files to {folder}", *(f"  {f}" for f in files)]
    lines += [f"note: {n}" for n in notes]
    return 0, "\n".join(lines) + "\n"


def leaderboard_command(results: Sequence[str], out: str | None = "reports",
                        check: str | None = None) -> tuple[int, str]:
    """Write the leaderboard into ``out``, or with ``check`` diff it against a committed one."""
    from meerbench.report.leaderboard import check_leaderboard, format_moved, write_leaderboard

    if check is not None:
        reports = Path(check)
        try:
            moved = check_leaderboard(results, reports)
        except MeerbenchError:
            raise
        except Exception:  # a bug in the check is not a regression: its own exit status
            return EXIT_CHECK_FAILED, (f"{traceback.format_exc()}leaderboard check failed with an "
                                       f"internal error (exit {EXIT_CHECK_FAILED}, not a "
                                       "regression); please report it.\n")
        if moved:
            return EXIT_REGRESSION, format_moved(moved, reports) + "\n"
        return 0, f"leaderboard matches {reports / 'leaderboard.json'} within its tolerances\n"
    folder = Path(out or "reports")
    files = write_leaderboard(load_runs(results), folder)
    return 0, (f"wrote {folder / 'leaderboard.html'}, leaderboard.md, leaderboard.json and "
               f"{len(files) - 3} plot files\n")


def compare_command(a: str, b: str, rounds: int = 1000, as_json: bool = False
                    ) -> tuple[int, str]:
    """Per-condition differences B - A with paired tests (a Markdown table, or JSON)."""
    from meerbench.report.compare import compare, comparison

    if not all(Path(path).is_file() for path in (a, b)):
        raise MeerbenchError("compare takes two Result JSON files, not folders.")
    runs = [load_runs([path]) for path in (a, b)]
    if as_json:
        return 0, json.dumps(comparison(runs[0][0], runs[1][0], rounds), indent=2) + "\n"
    return 0, compare(runs[0][0], runs[1][0], rounds)
