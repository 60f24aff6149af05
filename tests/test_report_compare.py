"""meerbench compare: per-condition differences of two Results with paired significance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meerbench.errors import MeerbenchError
from meerbench.report.commands import compare_command
from tests.test_report_tables import write_results


def test_compare_gives_differences_and_paired_tests(tmp_path: Path) -> None:
    write_results(tmp_path, {"alpha": 3.0, "gamma": 0.4}, (("synthA", 1), ("synthB", 2)),
                  conditions=("UMR-MP", "MR-MP"))
    code, text = compare_command(str(tmp_path / "gamma__synthA.json"),
                                 str(tmp_path / "alpha__synthA.json"), rounds=200)
    assert code == 0 and text.startswith("## alpha (B) vs gamma (A) on synthA v1")
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
            for line in text.splitlines() if line.startswith("| ") and "Condition" not in line}
    assert {cond for cond, _ in rows} == {"UMR-MP", "MR-MP", "identification"}
    acc = rows[("UMR-MP", "Accuracy (%)")]
    assert re.search(r"\| \+\d+\.\d\d \| – \| [\d.e-]+\*\* \| McNemar \|", acc), acc
    tar = rows[("MR-MP", "TAR@FAR=0.1 (%)")]
    assert re.search(r"\| \[\+\d+\.\d\d, \+\d+\.\d\d\] \| [\d.e-]+\*\* \| paired bootstrap \|",
                     tar), tar
    assert rows[("MR-MP", "EER (%)")].split("|")[5].strip().startswith("-")  # B has lower EER
    assert rows[("identification", "Rank-1 (%)")].rstrip(" |").endswith("–")

    with pytest.raises(MeerbenchError, match="different protocols"):
        compare_command(str(tmp_path / "gamma__synthA.json"), str(tmp_path / "alpha__synthB.json"))
    with pytest.raises(MeerbenchError, match="two Result JSON files"):
        compare_command(str(tmp_path), str(tmp_path / "alpha__synthB.json"))
    one = tmp_path / "one"  # a folder holding exactly one Result is still not a Result file
    one.mkdir()
    (one / "alpha__synthA.json").write_bytes((tmp_path / "alpha__synthA.json").read_bytes())
    with pytest.raises(MeerbenchError, match="two Result JSON files"):
        compare_command(str(one), str(tmp_path / "alpha__synthA.json"))
