"""Leaderboard: ranking only on complete aggregates, one protocol version per column, a
self-contained page with links to its plots, and the regression check against committed
numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meerbench.report.commands import leaderboard_command
from meerbench.report.grid import load_runs
from meerbench.report.leaderboard import check_leaderboard, write_leaderboard
from tests.test_report_tables import write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_results(folder)
    write_results(folder, {"delta": 2.0}, (("synthA", 1),))  # no synthB result: incomplete
    return folder


def test_ranks_only_complete_models_and_never_mixes_versions(results: Path,
                                                             tmp_path: Path) -> None:
    write_leaderboard(load_runs([results]), tmp_path / "reports", plots=False)
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert [(m["model"], m["rank"]) for m in board["models"]] == [
        ("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", None)]
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert "| – | delta | incomplete (3 of 6 missing) |" in md and "| 1 | alpha |" in md
    assert "## Regression tolerances" in md and "| Accuracy | 0.001 |" in md
    page = (tmp_path / "reports" / "leaderboard.html").read_text()
    assert page.count("<tr data-model=") == 4 and "incomplete" in page

    newer = tmp_path / "newer"  # alpha alone on a new version of synthA
    write_results(newer, {"alpha": 3.0}, (("synthA", 3),))
    write_leaderboard(load_runs([results, newer]), tmp_path / "reports", plots=False)
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert [(m["model"], m["rank"]) for m in board["models"]] == [
        ("alpha", 1), ("beta", None), ("delta", None), ("gamma", None)]
    missing = {m["model"]: m["aggregates"]["mean:acc"]["missing"] for m in board["models"]}
    assert len(missing["beta"]) == 3 and all(k.startswith("synthA/v3/") for k in missing["beta"])
    averaged = board["aggregates"][0]["columns"]  # synthA's newest version and synthB: no v1
    assert len(averaged) == 6 and not any(k.startswith("synthA/v1/") for k in averaged)
    alpha = next(m for m in board["models"] if m["model"] == "alpha")
    assert alpha["aggregates"]["mean:acc"]["value"] == pytest.approx(
        sum(alpha["cells"][k]["value"] for k in averaged) / 6)
    versions = {(c["protocol"], c["version"]) for c in board["columns"]}
    assert versions == {("synthA", 1), ("synthA", 3), ("synthB", 2)}
    for column in board["columns"]:  # each column: one protocol id, version and sha256
        assert column["key"].startswith(f"{column['protocol']}/v{column['version']}/"
                                        f"{column['protocol_sha256'][:8]}/")
        assert column["tolerance"] > 0


def test_page_is_self_contained_and_links_its_plots(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_results(results, {"alpha": 3.0, "beta": 1.0}, (("synthA", 1),), conditions=("MR-MP",))
    code, text = leaderboard_command([str(results)], str(tmp_path / "reports"))
    assert code == 0 and "leaderboard.html" in text
    page = (tmp_path / "reports" / "leaderboard.html").read_text()
    assert "<link" not in page and not re.search(r"<script[^>]*src=", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    links = re.findall(r'href="([^"]+)"', page)
    names = {Path(link).name for link in links}
    assert names >= {"roc__synthA-v1__MR-MP.png", "det__synthA-v1__MR-MP.pdf", "cmc__synthA-v1.png"}
    assert all((tmp_path / "reports" / link).is_file() for link in links)
    assert "0123456789" in page and "arcface-112" in page  # provenance per row: commit, contract


def test_check_fails_naming_model_protocol_condition_and_metric(results: Path,
                                                                tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    write_leaderboard(load_runs([results]), reports, plots=False)
    assert check_leaderboard([results], reports) == []
    path = reports / "leaderboard.json"
    board = json.loads(path.read_text())
    beta = next(m for m in board["models"] if m["model"] == "beta")
    key = next(k for k in beta["cells"]
               if k.startswith("synthA/v1/") and k.endswith("/verification/UMR-MP/acc"))
    beta["cells"][key]["value"] += 0.0004  # within the stated tolerance (0.001)
    path.write_text(json.dumps(board))
    assert check_leaderboard([results], reports) == []

    beta["cells"][key]["value"] += 0.05
    path.write_text(json.dumps(board))
    code, text = leaderboard_command([str(results)], check=str(reports))
    assert code == 1
    lines = text.splitlines()
    assert lines[0].startswith("Leaderboard regression: 1 difference(s) against")
    assert re.fullmatch(r"  beta \| synthA v1 \| UMR-MP \| Accuracy: committed \d+\.\d\d %, now "
                        r"\d+\.\d\d % \(change -5\.0\d, tolerance ±0\.1\)", lines[1]), lines[1]

    (results / "gamma__synthB.v2.json").rename(tmp_path / "gone.json")
    try:
        moved = [str(m) for m in check_leaderboard([results], reports)]
    finally:
        (tmp_path / "gone.json").rename(results / "gamma__synthB.v2.json")
    assert any(m.startswith("gamma | synthB v2 | MR-MP | EER: committed") and "disappeared" in m
               for m in moved)


def repeat_protocol(results: Path, folder: Path, shift: dict[str, float]) -> None:
    """Copies of the synthA Results as protocol 'synthA-unseen': the same lists and unmasked
    pairs, so UMR-UMP is equal; masked conditions moved by ``shift`` per model, UMR-UMP too
    for the models in ``shift`` under key 'UMR-UMP:<model>'."""
    folder.mkdir()
    drawn = {"dataset": "synthface", "manifest_sha256": "e" * 64}
    for path in results.glob("*__synthA.json"):
        data = json.loads(path.read_text())
        model = data["model"]["name"]
        data["protocol"].update(drawn)
        path.write_text(json.dumps(data))  # Results as evaluate() writes them
        data["protocol"].update(id="synthA-unseen", sha256="f" * 64)
        for cond, entry in data["metrics"]["verification"].items():
            move = shift.get(f"UMR-UMP:{model}", 0.0) if cond == "UMR-UMP" else shift[model]
            entry["accuracy"]["mean"] -= move
            entry["accuracy"]["ci95"] = [v - move for v in entry["accuracy"]["ci95"]]
        data["files"] = {}
        (folder / path.name.replace("synthA", "synthA-unseen")).write_text(json.dumps(data))


def test_a_column_that_repeats_another_counts_once(tmp_path: Path) -> None:
    """UMR-UMP of a protocol that differs only in its masks (same lists, same unmasked pairs)
    is the same measurement: the mean counts it once and the board says so."""
    results = tmp_path / "results"
    write_results(results)
    write_results(results, {"delta": 2.0}, (("synthA", 1),))
    unseen = tmp_path / "unseen"
    repeat_protocol(results, unseen, {"alpha": 0.05, "beta": 0.1, "gamma": 0.02, "delta": 0.0})
    write_leaderboard(load_runs([results, unseen]), tmp_path / "reports", plots=False)
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    agg = board["aggregates"][0]
    [(repeated, kept)] = agg["repeats"].items()
    assert len(agg["columns"]) == 8 and kept in agg["columns"] and repeated not in agg["columns"]
    assert repeated == "synthA-unseen/v1/ffffffff/verification/UMR-UMP/acc"
    assert re.fullmatch(r"synthA/v1/[0-9a-f]{8}/verification/UMR-UMP/acc", kept)
    alpha = next(m for m in board["models"] if m["model"] == "alpha")
    values = [alpha["cells"][k]["value"] for k in agg["columns"]]
    assert len(values) == 8 and alpha["aggregates"]["mean:acc"]["value"] == pytest.approx(
        sum(values) / 8)
    delta = next(m for m in board["models"] if m["model"] == "delta")["aggregates"]["mean:acc"]
    assert len(delta["missing"]) == 3 and all(k.startswith("synthB/") for k in delta["missing"])
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert "over 8 distinct (protocol, condition) columns (synthA-unseen v1 UMR-UMP repeats " \
           "synthA v1 UMR-UMP: same images and pairs, counted once)" in md

    moved = tmp_path / "moved"  # one model disagrees on UMR-UMP: not the same images after all
    repeat_protocol(results, moved, {"alpha": 0.05, "beta": 0.1, "gamma": 0.02, "delta": 0.0,
                                     "UMR-UMP:beta": 0.01})
    board = json.loads(write_leaderboard(load_runs([results, moved]), tmp_path / "r2",
                                         plots=False)[0].read_text())
    assert len(board["aggregates"][0]["columns"]) == 9 and board["aggregates"][0]["repeats"] == {}


def test_regression_tolerance_widens_where_few_impostors_set_the_threshold() -> None:
    """Rates at FAR/FMR <= 1e-4 rest on a few dozen impostor scores: 0.005; others 0.001;
    the mask penalty, a ratio, 0.05."""
    from meerbench.tasks.operational import metric as operational_metric
    from meerbench.tasks.verification import metric

    assert [metric(f"tar@{t}", task).tolerance for task in ("verification", "verification_dense")
            for t in (1e-3, 1e-4, 1e-5)] == [0.001, 0.005, 0.005] * 2
    assert metric("acc").tolerance == metric("eer").tolerance == 0.001
    assert [operational_metric(f"{k}@{t}").tolerance for k in ("fnmr", "fmr", "mask_penalty")
            for t in (0.001, 0.0001)] == [0.001, 0.005, 0.001, 0.005, 0.05, 0.05]
