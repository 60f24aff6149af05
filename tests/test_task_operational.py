"""The operational task end to end: a tiny protocol with an ``operational`` section run through
``meerbench run``, its Result, console lines, tables and tidy frame; its numbers recomputed from
the verification score file of the same pairs; its protocol section checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from meerbench.cli import main
from meerbench.errors import ProtocolError
from meerbench.metrics.operational import error_rates, fmr_thresholds
from meerbench.metrics.scorefiles import load_scores
from meerbench.protocol import load_protocol
from meerbench.tasks.operational import NOTE, OPERATIONAL, OperationalTask

PAIRS = {"seed": 1, "folds": 2, "pairs_per_fold": 80}


def with_operational(path: Path, section: dict, settings: dict | None = None) -> Path:
    data = yaml.safe_load(path.read_text())
    data["tasks"] = {"verification": PAIRS, "operational": section}
    data["metrics"]["operational"] = settings or {"fmr_targets": [0.1, 0.01], "bootstrap": 50}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_meerbench_run_reports_the_operational_task(tiny_protocol: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    protocol = with_operational(tiny_protocol, dict(PAIRS))
    out = tmp_path / "results"
    assert main(["run", "--model", "pixels", "--protocol", str(protocol), "--out", str(out),
                 "--no-progress"]) == 0
    console = capsys.readouterr().out
    result = json.loads((out / "pixels__tiny.json").read_text())
    section = result["metrics"]["operational"]
    assert section["status"] == "ok" and section["reference"] == "UMR-UMP"
    assert result["counts"]["operational_pairs"] == {c: 160 for c in ("UMR-UMP", "UMR-MP",
                                                                        "MR-MP")}
    # same pair fields as the verification task: the same list, so its score file holds them
    lists = result["protocol"]["lists"]
    assert lists["operational"] == lists["verification"]

    table = load_scores(out / result["files"]["scores"])
    ref = table.of_condition("UMR-UMP")
    thresholds, achieved = fmr_thresholds(ref.scores[~ref.labels], [0.1, 0.01])
    families = set()
    for point, t, fmr in zip(section["operating_points"], thresholds, achieved, strict=True):
        assert (point["threshold"], point["fmr"]) == (t, fmr)
        assert point["n_false_matches"] == int((ref.scores[~ref.labels] >= t).sum())
        assert point["reliable"] == (point["n_false_matches"] >= 10)
        fnmr_ref = None
        for cond in ("UMR-UMP", "UMR-MP", "MR-MP"):
            sub = table.of_condition(cond)
            fnmr, fmr_c = error_rates(sub.scores[sub.labels], sub.scores[~sub.labels], t)
            entry = point["conditions"][cond]
            assert (entry["fnmr"]["value"], entry["fmr"]["value"]) == pytest.approx((fnmr, fmr_c))
            fnmr_ref = fnmr if cond == "UMR-UMP" else fnmr_ref
            if cond != "UMR-UMP":
                assert entry["mask_penalty"]["value"] == pytest.approx(fnmr / fnmr_ref)
            lo, hi = entry["fnmr"]["ci95"]
            assert 0 <= lo <= hi <= 1
        assert set(point["by_family"]) == {"UMR-MP", "MR-MP"}
        families |= set(point["by_family"]["UMR-MP"])
    assert families <= {"surgical", "n95", "kn95", "cloth", "fabric"} and len(families) > 1

    assert "FNMR% @FMR=0.1" in console and "UMR-MP/" in console
    penalty = section["operating_points"][0]["conditions"]["UMR-MP"]["mask_penalty"]["value"]
    assert f"({penalty:.2f}x)" in console
    assert "fewer than 10 UMR-UMP false matches" in console  # 40 impostors: flagged

    assert main(["report", str(out), "--no-plots", "--out", str(tmp_path / "report")]) == 0
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "### Operational: FNMR@FMR=0.1 (%)" in tables
    assert "### Operational: Mask penalty@FMR=0.01 (x)" in tables
    assert "† not measured: the threshold rests on fewer than 10 UMR-UMP false matches" in tables
    assert "target x negatives" not in tables.split("### Operational")[1]
    capsys.readouterr()

    import meerbench

    frame = meerbench.load_results([out])
    rows = frame[(frame.task == "operational") & (frame.metric == "fnmr@0.1")]
    point = section["operating_points"][0]
    assert set(rows.condition) == {"UMR-UMP", "UMR-MP", "MR-MP"} | {
        f"{c}/{f}" for c, fams in point["by_family"].items() for f in fams}
    first = section["operating_points"][0]["conditions"]["UMR-MP"]["fnmr"]["value"]
    assert rows[rows.condition == "UMR-MP"].value.item() == first

    assert main(["leaderboard", str(out), "--out", str(tmp_path / "board")]) == 0
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert NOTE in board["notes"]
    plot, = (p for p in board["plots"] if p["kind"] == "operational")
    assert (tmp_path / "board" / plot["png"]).is_file()
    cell = board["models"][0]["cells"][next(c["key"] for c in board["columns"]
                                            if c["key"].endswith("/UMR-MP/fnmr@0.1"))]
    assert (cell["value"], cell["reliable"]) == (first, False)
    page = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "### Operational: FNMR@FMR=0.1 (%)" in page and "operational: [png]" in page
    assert "fewer than 10 UMR-UMP false matches" in (tmp_path / "board" /
                                                     "leaderboard.html").read_text()
    capsys.readouterr()


def test_dense_lists_give_the_verification_dense_pairs_and_scores(
        tiny_protocol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meerbench.engine.evaluate import evaluate
    from meerbench.metrics import dense

    scored: list[int] = []  # pair lists scored: the two tasks share one list, scored once
    original = dense.pair_scores
    monkeypatch.setattr(dense, "pair_scores",
                        lambda *a, **k: scored.append(len(a[1])) or original(*a, **k))

    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"] = {"verification_dense": {"seed": 4},
                     "operational": {"lists": "dense", "seed": 4, "by_family": False}}
    data["metrics"] = {"verification_dense": {"far_targets": [0.01], "bootstrap": 0},
                       "operational": {"fmr_targets": [0.01, 0.001], "bootstrap": 20}}
    tiny_protocol.write_text(yaml.safe_dump(data))
    result = evaluate("pixels", load_protocol(tiny_protocol), out_dir=tmp_path,
                      progress=False).to_dict()
    lists = result["protocol"]["lists"]
    assert lists["operational"] == lists["verification_dense"]
    assert len(scored) == 1 and scored[0] == sum(result["counts"]["dense_pairs"].values())
    section = result["metrics"]["operational"]
    assert all(not p["by_family"] for p in section["operating_points"])

    with np.load(tmp_path / result["files"]["dense_scores"]) as npz:
        score, label = npz["score"], npz["label"].astype(bool)
        condition = npz["conditions"][npz["condition"]]
    ref = condition == "UMR-UMP"
    assert section["operating_points"][0]["n_impostor"] == int((ref & ~label).sum()) > 2000
    thresholds, _ = fmr_thresholds(score[ref & ~label], [0.01, 0.001])
    for point, t in zip(section["operating_points"], thresholds, strict=True):
        assert point["threshold"] == t
        for cond, entry in point["conditions"].items():
            sel = condition == cond
            assert (entry["fnmr"]["value"], entry["fmr"]["value"]) == error_rates(
                score[sel & label], score[sel & ~label], t)


def test_the_section_reads_pair_fields_and_by_family(tiny_protocol: Path) -> None:
    proto = load_protocol(with_operational(tiny_protocol, {**PAIRS, "by_family": False,
                                                           "conditions": ["UMR-UMP", "MR-MP"]}))
    config = proto.tasks["operational"]
    assert isinstance(config, OperationalTask) and config.by_family is False
    assert config.lists == "sampled"
    assert config.pairs.conditions == ("UMR-UMP", "MR-MP") and config.pairs.pairs_per_fold == 80
    assert proto.metrics["operational"] == {"fmr_targets": [0.1, 0.01], "bootstrap": 50}


@pytest.mark.parametrize(("section", "settings", "message"), [
    ({**PAIRS, "conditions": ["UMR-MP", "MR-MP"]}, None,
     "field 'tasks.operational.conditions'.*UMR-UMP"),
    ({**PAIRS, "by_family": "yes"}, None, "tasks.operational.by_family"),
    ({**PAIRS, "lists": "all"}, None, "tasks.operational.lists': expected one of sampled, dense"),
    ({"lists": "dense", "seed": 4, "pairs_per_fold": 80}, None,
     "unknown field 'tasks.operational.pairs_per_fold'"),
    ({**PAIRS, "fmr": [0.1]}, None, "unknown field 'tasks.operational.fmr'"),
    (dict(PAIRS), {"fmr_targets": [2.0]}, "metrics.operational.*in \\(0, 1\\)"),
    (dict(PAIRS), {"far_targets": [0.1]}, "metrics.operational.*unknown"),
])
def test_bad_sections_are_refused_by_field(tiny_protocol: Path, section: dict,
                                           settings: dict | None, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        load_protocol(with_operational(tiny_protocol, section, settings))


def test_a_skipped_section_keeps_its_reason(tiny_protocol: Path, tmp_path: Path) -> None:
    from meerbench.engine.evaluate import evaluate

    data = yaml.safe_load(tiny_protocol.read_text())  # official pairs: tiny has none...
    data["dataset"]["options"]["n_unmasked"] = 1  # ...so: one unmasked image per identity
    data["tasks"] = {"operational": {**PAIRS, "allow_fewer": True}}
    data["metrics"] = {"operational": {"fmr_targets": [0.1, 0.01], "bootstrap": 0}}
    tiny_protocol.write_text(yaml.safe_dump(data))
    result = evaluate("pixels", load_protocol(tiny_protocol), progress=False).to_dict()
    section = OPERATIONAL.read(result["metrics"])
    assert (section.status, section.reason) == (
        "skipped", "the UMR-UMP condition needs genuine and impostor pairs: it sets the "
        "threshold and the FNMR the mask penalty is relative to")
    assert [(c, m.key, cell.value) for c, m, cell in OPERATIONAL.cells(section)] == [
        ("UMR-UMP", "fnmr@0.1", None), ("UMR-UMP", "fnmr@0.01", None)]
    assert OPERATIONAL.summary(section) == [f"operational  skipped: {section.reason}"]


def test_leaderboard_ranks_by_masked_operational_fnmr_at_1e4(
        tiny_protocol: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    protocol = with_operational(tiny_protocol, dict(PAIRS),
                                {"fmr_targets": [0.01, 0.0001], "bootstrap": 0})
    out = tmp_path / "results"
    assert main(["run", "--model", "pixels", "--protocol", str(protocol), "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["leaderboard", str(out), "--out", str(tmp_path / "board")]) == 0
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    first = board["aggregates"][0]
    assert board["rank_by"] == first["key"] == "mean:fnmr@0.0001"
    assert not first["higher_is_better"]
    assert [c.rsplit("/", 2)[1] for c in first["columns"]] == ["UMR-MP", "MR-MP"]
    point = json.loads((out / "pixels__tiny.json").read_text())["metrics"]["operational"][
        "operating_points"][1]
    mean = (point["conditions"]["UMR-MP"]["fnmr"]["value"]
            + point["conditions"]["MR-MP"]["fnmr"]["value"]) / 2
    model, = board["models"]
    assert model["rank"] == 1 and model["aggregates"][first["key"]]["value"] == pytest.approx(mean)
    assert ("Ranked by mean operational FNMR@FMR=1e-4 of UMR-MP and MR-MP (lower is better) "
            "over 2 distinct") in (tmp_path / "board" / "leaderboard.md").read_text()
    capsys.readouterr()
