"""meerbench compare: per-condition differences of two Results with paired significance, as data
(comparison) and as a Markdown table (compare); missing score files named next to the table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meerbench.errors import MeerbenchError
from meerbench.report.commands import compare_command
from meerbench.report.compare import compare, comparison
from meerbench.report.grid import load_runs
from meerbench.report.significance import NO_TEST
from tests.test_report_tables import protocol_sha, write_results


def test_compare_gives_differences_and_paired_tests(tmp_path: Path) -> None:
    write_results(tmp_path, {"alpha": 3.0, "gamma": 0.4}, (("synthA", 1), ("synthB", 2)),
                  conditions=("UMR-MP", "MR-MP"))
    code, text = compare_command(str(tmp_path / "gamma__synthA.json"),
                                 str(tmp_path / "alpha__synthA.json"), rounds=200)
    assert code == 0 and text.startswith("## alpha (B) vs gamma (A) on synthA v1")
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[1:3]): line
            for line in text.splitlines() if line.startswith("| ") and "Condition" not in line}
    assert {cond for cond, _ in rows} == {"UMR-MP", "MR-MP", "identification"}
    acc = rows[("UMR-MP", "Accuracy (%)")]
    assert re.search(r"\| \+\d+\.\d\d \| – \| [\d.e-]+\*\* \| McNemar \|", acc), acc
    tar = rows[("MR-MP", "TAR@FAR=0.1 (%)")]
    assert re.search(r"\| \[\+\d+\.\d\d, \+\d+\.\d\d\] \| [\d.e-]+\*\* \| paired bootstrap \|",
                     tar), tar
    assert rows[("MR-MP", "EER (%)")].split("|")[6].strip().startswith("-")  # B has lower EER
    assert rows[("MR-MP", "EER (%)")].startswith("| Verification | MR-MP |")
    assert rows[("identification", "Rank-1 (%)")].rstrip(" |").endswith("–")

    with pytest.raises(MeerbenchError, match="different protocols"):
        compare_command(str(tmp_path / "gamma__synthA.json"),
                        str(tmp_path / "alpha__synthB.v2.json"))
    with pytest.raises(MeerbenchError, match="two Result JSON files"):
        compare_command(str(tmp_path), str(tmp_path / "alpha__synthB.v2.json"))
    one = tmp_path / "one"  # a folder holding exactly one Result is still not a Result file
    one.mkdir()
    (one / "alpha__synthA.json").write_bytes((tmp_path / "alpha__synthA.json").read_bytes())
    with pytest.raises(MeerbenchError, match="two Result JSON files"):
        compare_command(str(one), str(tmp_path / "alpha__synthA.json"))


def test_comparison_is_data_and_compare_renders_it(tmp_path: Path) -> None:
    write_results(tmp_path, {"alpha": 3.0, "gamma": 0.4}, (("synthA", 1),),
                  conditions=("UMR-MP", "MR-MP"))
    a, b = (load_runs([tmp_path / f"{m}__synthA.json"])[0] for m in ("gamma", "alpha"))
    data = comparison(a, b, rounds=200)
    assert json.loads(json.dumps(data)) == data  # JSON as it is
    assert data["models"] == {"a": "gamma", "b": "alpha"} and data["notes"] == []
    assert data["protocol"] == {"id": "synthA", "version": 1, "sha256": protocol_sha("synthA", 1)}
    rows = {(r["condition"], r["metric"]): r for r in data["rows"]}
    result_a, result_b = (json.loads(r.path.read_text())["metrics"] for r in (a, b))
    acc = rows[("UMR-MP", "acc")]
    want = [100 * m["verification"]["UMR-MP"]["accuracy"]["mean"] for m in (result_a, result_b)]
    assert (acc["a"], acc["b"]) == pytest.approx(want) and acc["unit"] == "%"
    assert acc["diff"] == pytest.approx(want[1] - want[0])
    assert acc["test"].startswith("McNemar") and acc["note"] is None and acc["ci95"] is None
    assert 0 <= acc["p_value"] < 0.01 and acc["marker"] == "**"
    tar = rows[("MR-MP", "tar@0.1")]
    assert tar["test"] == "paired bootstrap" and tar["ci95"][0] <= tar["ci95"][1]
    assert rows[("MR-MP", "eer")]["note"] == NO_TEST and rows[("MR-MP", "eer")]["p_value"] is None
    text = compare(a, b, rounds=200)
    for row in (acc, tar):  # every number of the table comes from the data
        line = next(li for li in text.splitlines()
                    if li.startswith(f"| {row['task']} | {row['condition']} | ")
                    and f"| {row['label']} (%) |" in li)
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert cells[2:5] == [f"{row['a']:.2f}", f"{row['b']:.2f}", f"{row['diff']:+.2f}"]
        assert cells[6] == f"{row['p_value']:.3g}{row['marker']}" and cells[7] == row["test"]
    assert "Missing score file" not in text
    coarse = rows[("MR-MP", "tar@0.005")]  # 0.005 x 100 impostors < 1: not measured
    assert tar["a_reliable"] and tar["b_reliable"] and not coarse["a_reliable"]
    line = next(li for li in text.splitlines()
                if li.startswith("| Verification | MR-MP | TAR@FAR=5e-3"))
    assert f"| {coarse['a']:.2f}† | {coarse['b']:.2f}† |" in line
    assert "\n† not measured: target x negatives < 1" in text


def test_missing_score_files_are_named_next_to_the_table(tmp_path: Path) -> None:
    write_results(tmp_path, {"alpha": 3.0, "gamma": 0.4}, (("synthA", 1),),
                  conditions=("UMR-MP", "MR-MP"))
    (tmp_path / "alpha__synthA.scores.csv").unlink()
    gamma = tmp_path / "gamma__synthA.json"
    data = json.loads(gamma.read_text())
    del data["files"]["scores"]
    gamma.write_text(json.dumps(data))
    a, b = (load_runs([tmp_path / f"{m}__synthA.json"])[0] for m in ("gamma", "alpha"))
    found = comparison(a, b, rounds=50)
    assert found["notes"] == [
        f"{gamma} names no score file (files.scores)",
        f"{tmp_path / 'alpha__synthA.json'}: score file alpha__synthA.scores.csv (files.scores) "
        "is missing from the Result's folder"]
    tested = [r for r in found["rows"] if r["metric"] == "acc" or r["metric"].startswith("tar@")]
    assert tested and all(r["note"] == "no score file" and r["p_value"] is None for r in tested)
    code, text = compare_command(str(gamma), str(tmp_path / "alpha__synthA.json"), rounds=50)
    head, table = text.split("| Condition |", 1)
    assert code == 0 and "–" in table
    for note in found["notes"]:  # above the table, loud, with the file's name
        assert f"**Missing score file, no paired tests:** {note}." in head


#: docs/meer.md section 9: p-values of meer-s (A) against arcface-s-maskaug and from-s (B) on the
#: shipped Results, as the doc rounds them (McNemar for accuracy, paired bootstrap for TAR).
DOC_P_VALUES = {
    ("arcface-s-maskaug", "synthmask"): {("UMR-MP", "acc"): "0.91", ("MR-MP", "acc"): "0.55",
                                         ("UMR-MP", "tar@0.001"): "0.064",
                                         ("MR-MP", "tar@0.001"): "0.17",
                                         ("UMR-MP", "tar@0.0001"): "0.004"},
    ("arcface-s-maskaug", "synthmask-unseen"): {("UMR-MP", "acc"): "4e-04",
                                                ("MR-MP", "acc"): "0.51",
                                                ("UMR-MP", "tar@0.001"): "0.22",
                                                ("MR-MP", "tar@0.001"): "0.19",
                                                ("UMR-MP", "tar@0.0001"): "0.006"},
    ("from-s", "synthmask"): {("UMR-MP", "tar@0.001"): "0.87", ("MR-MP", "tar@0.001"): "0.44",
                              ("MR-MP", "acc"): "0.030"},
}


@pytest.mark.slow
@pytest.mark.parametrize(("model", "protocol"), list(DOC_P_VALUES))
def test_shipped_results_reproduce_the_documented_p_values(model: str, protocol: str) -> None:
    folder = Path(__file__).parents[1] / "reports" / "results"
    a, b = (load_runs([folder / f"{m}__{protocol}.json"])[0] for m in ("meer-s", model))
    data = comparison(a, b)
    assert data["notes"] == []
    p = {(r["condition"], r["metric"]): r["p_value"] for r in data["rows"]}
    for key, shown in DOC_P_VALUES[(model, protocol)].items():
        digits = len(shown.split(".")[1]) if "." in shown else None
        assert (f"{p[key]:.0e}" if digits is None else f"{p[key]:.{digits}f}") == shown, key


def test_dense_tar_and_operational_fnmr_have_paired_tests(tiny_protocol: Path,
                                                          tmp_path: Path) -> None:
    """From the dense score files: the difference is the Results' own, a model against itself
    differs by nothing (p = 1), and the operational families have no test."""
    import numpy as np
    import yaml

    from meerbench.engine.evaluate import evaluate
    from meerbench.models.classical import PixelsModel
    from meerbench.protocol import load_protocol
    from meerbench.tasks.verification_dense import read_dense_scores

    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"] = {"verification_dense": {"seed": 4},
                     "operational": {"lists": "dense", "seed": 4}}
    data["metrics"] = {"verification_dense": {"far_targets": [0.1, 0.01], "bootstrap": 0},
                       "operational": {"fmr_targets": [0.1, 0.01], "bootstrap": 0}}
    tiny_protocol.write_text(yaml.safe_dump(data))
    proto = load_protocol(tiny_protocol)
    out = tmp_path / "results"
    for model in ("pixels", PixelsModel("blurred", sigma=3.0)):
        evaluate(model, proto, out_dir=out, progress=False)
    a, b = (load_runs([out / f"{m}__tiny.json"])[0] for m in ("pixels", "blurred"))
    dense = read_dense_scores(out / "pixels__tiny.dense-scores.npz")
    assert dense.same_pairs(read_dense_scores(out / "blurred__tiny.dense-scores.npz"))
    assert len(np.unique(dense.identities)) == 20  # probe identities: the bootstrap's clusters

    found = comparison(a, b, rounds=60)
    assert found["notes"] == []
    rows = {(r["condition"], r["metric"], r["note"] is None and r["test"]): r
            for r in found["rows"]}
    tested = {(c, m) for c, m, test in rows if test == "paired bootstrap"}
    assert {(c, f"tar@{t}") for c in ("UMR-UMP", "UMR-MP", "MR-MP") for t in (0.1, 0.01)} <= \
        tested
    assert {(c, f"fnmr@{t}") for c in ("UMR-UMP", "UMR-MP", "MR-MP") for t in (0.1, 0.01)} <= \
        tested
    assert not any("/" in c for c, _ in tested)  # per-family rows: no test
    assert {r["task"] for r in found["rows"] if r["test"]} == {"Dense verification",
                                                               "Operational"}
    for row in found["rows"]:
        if row["test"] == "paired bootstrap":  # B - A of the Results' own numbers
            assert row["ci95"] is not None and 0 < row["p_value"] <= 1
    itself = comparison(a, a, rounds=60)["rows"]
    assert [r["p_value"] for r in itself if r["test"]] == [1.0] * len(tested)
