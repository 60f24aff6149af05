"""The console summary (``meerbench run``, ``metrics --scores``) shows numbers as the report
tables do: ``±`` is the 95% interval half-width, † marks a rate that is not measured, and a
legend line says both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meerbench.cli import summary_table
from meerbench.metrics.verification import VerificationSettings, verification_report
from meerbench.tasks import DAGGER_LEGEND, PM_LEGEND
from tests.test_report_tables import write_results


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("results")
    write_results(folder, {"alpha": 3.0}, (("synthA", 1),))
    return json.loads((folder / "alpha__synthA.json").read_text())


def test_the_console_shows_the_interval_and_marks_of_the_tables(result: dict) -> None:
    lines = summary_table(result).splitlines()
    head = lines[1]
    assert "acc % ± 95% CI" in head and "TAR@0.005" in head
    differ = 0
    for cond in ("UMR-UMP", "UMR-MP", "MR-MP"):
        m = result["metrics"]["verification"][cond]
        acc = m["accuracy"]
        half = max(acc["mean"] - acc["ci95"][0], acc["ci95"][1] - acc["mean"])
        row = next(line for line in lines if line.startswith(cond + " "))
        assert f"{100 * acc['mean']:.2f} ± {100 * half:.2f}" in row  # the interval ...
        differ += f"{100 * acc['std']:.2f}" != f"{100 * half:.2f}"  # ... not the fold std
        tar = next(t for t in m["tar_at_far"] if t["target"] == 0.005)
        assert not tar["reliable"] and row.endswith(f"{100 * tar['tar']:.2f}†")
    assert differ >= 2
    legend = lines[6]
    assert legend == f"  {PM_LEGEND}; {DAGGER_LEGEND}"
    ident = next(line for line in lines if line.startswith("identification "))
    ci = result["metrics"]["identification"]["ci95"]["rank1"]
    rank1 = result["metrics"]["identification"]["rank"]["1"]
    assert f"rank-1: {100 * rank1:.2f} ± {100 * max(rank1 - ci[0], ci[1] - rank1):.2f}%" in ident
    assert lines[lines.index(ident) + 1] == f"  {PM_LEGEND}"


def test_without_intervals_nothing_claims_one() -> None:
    """``metrics --scores --bootstrap 0``: no interval, so no ± and no ± legend; † stays."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    scores = labels * 1.0 + rng.normal(size=200)
    report = verification_report(scores, labels, np.arange(200) % 5,
                                 VerificationSettings(far_targets=(0.1, 0.001), bootstrap=0))
    text = summary_table({"model": {"name": "scores.csv"},
                          "protocol": {"id": "score file", "version": "-"},
                          "metrics": {"verification": {"all": report}}})
    assert "±" not in text and text.splitlines()[-1] == f"  {DAGGER_LEGEND}"
    assert text.splitlines()[1].split()[:2] == ["condition", "acc"]


def test_summary_of_a_shipped_result_marks_tar_at_1e_4() -> None:
    """The issue's example: TAR@1e-4 on 3,000 impostor pairs is printed with †."""
    path = Path(__file__).parents[1] / "reports" / "results" / "arcface-s__synthmask.json"
    text = summary_table(json.loads(path.read_text()))
    row = next(line for line in text.splitlines() if line.startswith("UMR-MP "))
    assert row.endswith("4.53†") and "78.42 ± 1.77" in row and DAGGER_LEGEND in text
