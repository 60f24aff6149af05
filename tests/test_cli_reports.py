"""The report-side commands wired in the CLI: export, compare --json, report selections."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from meerbench.cli import main
from meerbench.report.frame import load_results

RESULTS = Path(__file__).parent.parent / "reports" / "results"


def test_export_writes_the_tidy_frame(tmp_path, capsys):
    out = tmp_path / "numbers.csv"
    assert main(["export", str(RESULTS), "--format", "csv", "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"n": "Int64"})
    frame = load_results(RESULTS)
    assert len(written) == len(frame) > 0
    assert written["value"].fillna(-1).tolist() == frame["value"].fillna(-1).tolist()
    assert main(["export", str(RESULTS), "--format", "xlsx", "--out", str(out)]) == 2


def test_compare_json_is_the_comparison(capsys):
    a, b = RESULTS / "pixels__synthmask.json", RESULTS / "fisherfaces__synthmask.json"
    assert main(["compare", str(a), str(b), "--json", "--rounds", "20"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"] == {"a": "pixels", "b": "fisherfaces"}
    acc = [r for r in data["rows"] if r["metric"] == "acc"]
    assert {r["condition"] for r in acc} == {"UMR-UMP", "UMR-MP", "MR-MP"}
    for row in acc:
        assert abs(row["diff"] - (row["b"] - row["a"])) < 1e-9


def test_report_selects_metrics_and_conditions(capsys):
    code = main(["report", str(RESULTS), "--format", "md", "--metrics", "acc",
                 "--conditions", "MR-MP", "--no-plots"])
    text = capsys.readouterr().out
    assert code == 0 and "MR-MP" in text and "UMR-MP" not in text and "EER" not in text
    assert main(["report", str(RESULTS), "--format", "md", "--metrics", "accuracyy",
                 "--no-plots"]) == 2


def test_report_reference_on_the_shipped_results_reads_plainly(capsys):
    """`report --reference` on the committed Results (their score files are shipped): markers
    in the cells, and a Markdown note that reads "p < 0.05", not an HTML entity."""
    code = main(["report", str(RESULTS), "--format", "md", "--metrics", "acc",
                 "--reference", "arcface-s", "--no-plots"])
    text = capsys.readouterr().out
    assert code == 0 and "&lt;" not in text and "&gt;" not in text
    assert "* p < 0.05, ** p < 0.01 vs arcface-s (McNemar; uncorrected)" in text
    assert r"| arcface-s-maskaug | 98.68 ± 0.34\*\* | 98.38 ± 0.38\*\* |" in text
    assert "accept score > t" in text.split("### Provenance")[1]
