"""Issue 12 for Result files and their readers (report, compare, leaderboard): side files stay in
the Result's folder, every Result is validated on load with file and field named (exit 2, one
line), nothing is written before all inputs are checked, Markdown escapes names, the leaderboard
check tells a regression (1) from its own failure (3), and a read-only Result is not replaced."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meerbench.cli import main
from meerbench.errors import MeerbenchError
from meerbench.metrics.scorefiles import load_scores
from meerbench.metrics.verification import kfold_accuracy
from meerbench.protocol import load_protocol
from meerbench.report import leaderboard
from meerbench.report.commands import EXIT_CHECK_FAILED, leaderboard_command
from meerbench.report.grid import load_runs
from meerbench.results import NotAResult, Result, read_result, read_results, result_stem
from meerbench.tasks.verification import VERIFICATION
from tests.test_report_tables import write_results

ONE = (("synthA", 1),)
CONDS = ("UMR-MP", "MR-MP")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    write_results(folder, {"alpha": 3.0, "beta": 1.0}, ONE, conditions=CONDS)
    return folder


def assert_refused(capsys: pytest.CaptureFixture[str], code: int, err: str,
                   *named: str) -> None:
    """Exit 2 with one line naming everything in ``named``, no traceback."""
    assert code == 2, err
    assert err.startswith("meerbench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in named:
        assert text in err, (text, err)


# ----------------------------------------------------------------------------- item 5: side files


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "../results/alpha__synthA.scores.csv",
                                  "sub/alpha__synthA.scores.csv"])
def test_scores_outside_the_result_folder_are_refused_unread(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    (tmp_path / "x").write_text("score,label\n0.5,1\n0.1,0\nSECRET,1\n")
    (results / "sub").mkdir()
    result = results / "alpha__synthA.json"
    edit(result, lambda d: d["files"].update(scores=name))
    for args in (("report", str(results), "--out", str(tmp_path / "out")),
                 ("compare", str(results / "beta__synthA.json"), str(result)),
                 ("leaderboard", str(results), "--out", str(tmp_path / "board"))):
        code, out, err = run_cli(capsys, *args)
        assert_refused(capsys, code, err, str(result), "files.scores", repr(name))
        assert "root:" not in out + err and "SECRET" not in out + err
    assert not (tmp_path / "out").exists() and not (tmp_path / "board").exists()


def test_symlinked_side_file_resolving_outside_is_refused(results: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    (results / "alpha__synthA.scores.csv").rename(outside)
    (results / "alpha__synthA.scores.csv").symlink_to(outside)
    with pytest.raises(MeerbenchError, match=r"files\.scores.*outside the Result's folder"):
        load_runs([results])
    (results / "alpha__synthA.scores.csv").unlink()
    (results / "alpha__synthA.scores.csv").symlink_to("alpha__synthA.scores.csv")  # a loop
    with pytest.raises(MeerbenchError, match=r"alpha__synthA\.json: field 'files\.scores': "
                                             "cannot resolve"):
        load_runs([results])
    samples = results / "beta__synthA.restoration.npz"
    samples.symlink_to("/etc/passwd")
    edit(results / "beta__synthA.json",
         lambda d: d["files"].update(restoration_samples=samples.name))
    with pytest.raises(MeerbenchError, match=r"beta__synthA\.json: field 'files\.restoration_"):
        read_result(results / "beta__synthA.json")


def test_a_bad_side_file_fails_before_anything_is_written(results: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    (results / "beta__synthA.scores.csv").write_text("score,label\n0.3,maybe\n")
    for args in (("report", str(results), "--out", str(tmp_path / "out")),
                 ("leaderboard", str(results), "--out", str(tmp_path / "board"))):
        code, _, err = run_cli(capsys, *args)
        assert_refused(capsys, code, err, "beta__synthA.scores.csv", "'maybe'")
    (results / "beta__synthA.scores.csv").unlink()
    (results / "x.npz").write_bytes(b"PK\x03\x04 not a zip")
    edit(results / "alpha__synthA.json", lambda d: d["files"].update(restoration_samples="x.npz"))
    code, _, err = run_cli(capsys, "leaderboard", str(results), "--out", str(tmp_path / "board"))
    assert_refused(capsys, code, err, "x.npz", "not a restoration samples archive")
    assert not (tmp_path / "out").exists() and not (tmp_path / "board").exists()


# ----------------------------------------------------------------------------- other JSON


def test_a_results_folder_may_hold_other_json(results: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert leaderboard_command([str(results)], str(results))[0] == 0  # leaderboard.json: a schema
    (results / "notes.json").write_text('{"comment": "not a Result"}')
    (results / "list.json").write_text("[1, 2]")
    skipped = r"skipped 3 JSON file\(s\) that are not meerbench Results"
    with pytest.warns(NotAResult, match=rf"{skipped}.*leaderboard\.json, .*list\.json, .*notes"):
        found = read_results([results])
    assert [path.name for path, _ in found] == ["alpha__synthA.json", "beta__synthA.json"]
    with pytest.warns(NotAResult, match=skipped):
        code, _, err = run_cli(capsys, "report", str(results), "--out", str(tmp_path / "out"),
                               "--no-plots")
    assert code == 0, err
    code, _, err = run_cli(capsys, "report", str(results / "leaderboard.json"))  # given by name
    assert_refused(capsys, code, err, "leaderboard.json", "field 'schema'")
    for name in ("alpha__synthA.json", "beta__synthA.json"):
        (results / name).unlink()
    with pytest.warns(NotAResult), pytest.raises(MeerbenchError, match="No Result JSON files"):
        read_results([results])


@pytest.mark.parametrize("content", ['{"schema": "meerbench.result/1"}',
                                     '{"schema": "meerbench.leaderboard/1", "models": []}',
                                     '{"schema": null}', '{"schema": "meerbench.result/1",'])
def test_json_that_claims_to_be_a_result_must_be_one(results: Path, content: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = results / "gamma__synthA.json"
    path.write_text(content)
    code, _, err = run_cli(capsys, "report", str(results))
    assert_refused(capsys, code, err, str(path))


# ----------------------------------------------------------------------------- item 10: validation


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        keys = path.split("/")
        node = data
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return change


VER = "metrics/verification/UMR-MP"
BAD = [  # (JSON path, bad value, field named in the error)
    (f"{VER}/accuracy/mean", 5.0, "metrics.verification.UMR-MP.accuracy.mean"),
    (f"{VER}/accuracy/mean", float("nan"), "metrics.verification.UMR-MP.accuracy.mean"),
    (f"{VER}/auc/value", float("inf"), "metrics.verification.UMR-MP.auc.value"),
    (f"{VER}/auc/value", "0.9", "metrics.verification.UMR-MP.auc.value"),
    (f"{VER}/eer/value", -0.1, "metrics.verification.UMR-MP.eer.value"),
    (f"{VER}/eer/ci95", [0.3, 0.1], "metrics.verification.UMR-MP.eer.ci95"),
    (f"{VER}/tar_at_far/0/tar", 1.5, "metrics.verification.UMR-MP.tar_at_far[0].tar"),
    (f"{VER}/tar_at_far/0/target", 0, "metrics.verification.UMR-MP.tar_at_far[0].target"),
    (f"{VER}/tar_at_far/0/reliable", "yes", "metrics.verification.UMR-MP.tar_at_far[0].reliable"),
    (f"{VER}/accuracy/per_fold", None, "metrics.verification.UMR-MP.accuracy.per_fold"),
    (f"{VER}/n_pairs", -1, "metrics.verification.UMR-MP.n_pairs"),
    (f"{VER}/n_pairs", 2.5, "metrics.verification.UMR-MP.n_pairs"),
    (f"{VER}/n_pairs", 7, "metrics.verification.UMR-MP.n_pairs"),
    (VER, "oops", "metrics.verification.UMR-MP"),
    ("metrics/identification/rank/1", 1.2, "metrics.identification.rank.1"),
    ("metrics/identification/cmc/0", True, "metrics.identification.cmc[0]"),
    ("metrics/identification/dir_at_fpir", {}, "metrics.identification.dir_at_fpir"),
    ("metrics/restoration/ssim", {"mean": 3.0}, "metrics.restoration.ssim.mean"),
    ("metrics/restoration/status", "maybe", "metrics.restoration.status"),
    ("metrics/restoration/status", "skipped", "metrics.restoration.reason"),
    (f"{VER}/status", "done", "metrics.verification.UMR-MP.status"),
    ("metrics/identification/reason", 3, "metrics.identification.reason"),
    ("metrics/quality", {"status": "skipped"}, "metrics.quality.reason"),
    ("protocol/config", "tasks: {}", "protocol.config"),
    ("counts/pairs/MR-MP", -3, "counts.pairs.MR-MP"),
    ("timings/embed", float("-inf"), "timings.embed"),
    ("model/name", 7, "model.name"),
    ("model/contract/input_size", [112], "model.contract.input_size"),
    ("protocol/id", "../../x", "protocol.id"),
    ("protocol/version", True, "protocol.version"),
    ("protocol/sha256", "abc", "protocol.sha256"),
    ("provenance/git_commit", 12, "provenance.git_commit"),
    ("files/scores", 5, "files.scores"),
    ("schema", "meerbench.result/0", "schema"),
    ("counts", [], "counts"),
]


@pytest.mark.parametrize(("where", "value", "field"), BAD, ids=[f"{b[2]}={b[1]!r}" for b in BAD])
def test_malformed_result_fields_are_one_line_errors(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str,
        value: Any, field: str) -> None:
    path = results / "alpha__synthA.json"
    edit(path, _set(where, value))
    for args in (("report", str(results)), ("leaderboard", str(results), "--out",
                                            str(tmp_path / "board")),
                 ("compare", str(results / "beta__synthA.json"), str(path))):
        code, _, err = run_cli(capsys, *args)
        assert_refused(capsys, code, err, str(path), f"field '{field}'")
    assert not (tmp_path / "board").exists()


def test_unreadable_results_are_one_line_errors(results: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = results / "alpha__synthA.json"
    text = path.read_text()
    for content in (b"\xff\xfe not utf-8", b"[" * 100_000,
                    text.replace('"counts"', '"missing"').encode(),
                    text.replace('"alpha"', '"\\udcff"', 1).encode()):
        path.write_bytes(content)
        code, _, err = run_cli(capsys, "report", str(results))
        assert_refused(capsys, code, err, str(path))


def test_real_results_are_valid() -> None:
    folder = Path(__file__).parents[1] / "reports" / "results"
    assert len(load_runs([folder])) >= 10


def test_shipped_results_carry_their_side_files() -> None:
    """Each reference Result of reports/models.txt ships its gzipped score file, which holds the
    Result's pairs and accuracies, and its restoration samples: significance is reproducible
    from a fresh clone. Dense score files (77 MB each on SynthMask v2) are named, not shipped
    (.gitignore): `meerbench run` writes them again."""
    reports = Path(__file__).parents[1] / "reports"
    listed = []
    for model, protocol in map(str.split, (reports / "models.txt").read_text().splitlines()):
        proto = load_protocol(protocol)
        listed.append(f"{result_stem(model, proto.id, proto.version)}.json")
    runs = load_runs([reports / "results"])
    assert sorted(run.path.name for run in runs) == sorted(listed)
    for run in runs:
        files = run.result["files"]
        assert files["scores"] == f"{run.path.stem}.scores.csv.gz"
        shipped = [role for role in files if role != "dense_scores"]
        assert all(run.file(role) is not None for role in shipped), (run.path, files)
        assert ("dense_scores" in files) == ("verification_dense" in run.result["metrics"])
        if "restoration_samples" in files:
            assert run.samples() is not None
        table, section = run.scores(), VERIFICATION.read(run.result["metrics"])
        assert table is not None and section is not None and table.folds is not None
        for condition, entry in run.result["metrics"]["verification"].items():
            pairs = table.of_condition(condition)
            assert pairs is not None and pairs.scores.size == entry["n_pairs"]
            accuracy = kfold_accuracy(pairs.scores, pairs.labels, pairs.folds,
                                      section.accuracy_rule(condition))
            assert accuracy.mean == entry["accuracy"]["mean"], (run.path, condition)


# ----------------------------------------------------------------------------- item 9: leaderboard


@pytest.mark.parametrize("value", [5.0, float("nan")])
def test_leaderboard_refuses_impossible_accuracy_and_writes_nothing(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: float) -> None:
    path = results / "beta__synthA.json"
    edit(path, _set(f"{VER}/accuracy/mean", value))
    board = tmp_path / "board"
    code, out, err = run_cli(capsys, "leaderboard", str(results), "--out", str(board))
    assert_refused(capsys, code, err, str(path), "accuracy.mean")
    assert not board.exists() and out == ""


def test_markdown_escapes_names_html_and_latex_stay_escaped(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    results = tmp_path / "results"
    protocol, cond = "<img src=x onerror=alert(1)>`p`", "<b>|c&amp;"
    write_results(results, {"alpha": 3.0, "beta": 1.0}, ((protocol, 1),),
                  conditions=(cond, "MR-MP"))
    evil = "<script>alert(1)</script>|x\n[link](javascript:alert(2)) $\\foo$"
    edit(results / f"alpha__{protocol}.json", _set("model/name", evil))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "report", str(results), "--out", str(out), "--reference",
                           "beta", "--rounds", "20")
    assert code == 0, err
    code, _, err = run_cli(capsys, "leaderboard", str(results), "--out", str(tmp_path / "board"))
    assert code == 0, err
    code, compared, err = run_cli(capsys, "compare", str(results / f"beta__{protocol}.json"),
                                  str(results / f"alpha__{protocol}.json"), "--rounds", "20")
    assert code == 0, err
    texts = {"tables.md": (out / "tables.md").read_text(), "compare": compared,
             "leaderboard.md": (tmp_path / "board" / "leaderboard.md").read_text()}
    for name, text in texts.items():
        for raw in ("<script", "<img", "<b>", "`p`"):
            assert raw not in text, (name, raw)
        assert not re.search(r"(?<!\\)\]\(javascript", text), name  # no live link
        for block in text.split("\n\n"):  # every row of a table has its header's cell count
            rows = [line for line in block.splitlines() if line.startswith("|")]
            assert len({len(re.split(r"(?<!\\)\|", row)) for row in rows}) <= 1, (name, rows)
        assert "&lt;b&gt;\\|c&amp;amp;" in text, name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x \\[link\\]" in texts["tables.md"]
    for page in (out / "tables.html", tmp_path / "board" / "leaderboard.html"):
        html = page.read_text()
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>|c" not in html
    tex = (out / "tables.tex").read_text()
    assert "<script>" not in tex and "\\textless" not in tex and "$<$script$>$" in tex


# ----------------------------------------------------------------------------- item 11: --check


def test_check_exit_codes_tell_regression_from_failure(
        results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    reports = tmp_path / "reports"
    assert leaderboard_command([str(results)], str(reports))[0] == 0
    assert run_cli(capsys, "leaderboard", str(results), "--check", str(reports))[0] == 0

    def crash(*_: Any) -> list[Any]:
        raise RuntimeError("bug in the diff")

    monkeypatch.setattr(leaderboard, "diff_leaderboards", crash)
    code, out, _ = run_cli(capsys, "leaderboard", str(results), "--check", str(reports))
    assert code == EXIT_CHECK_FAILED == 3 and "not a regression" in out and "RuntimeError" in out
    monkeypatch.undo()

    committed = reports / "leaderboard.json"
    board = json.loads(committed.read_text())
    board["columns"][0]["tolerance"] = "0.001"
    committed.write_text(json.dumps(board))
    code, _, err = run_cli(capsys, "leaderboard", str(results), "--check", str(reports))
    assert_refused(capsys, code, err, str(committed), "columns[0].tolerance")
    board["columns"][0]["tolerance"] = 0.001
    board["models"][0]["cells"] = []
    committed.write_text(json.dumps(board))
    code, _, err = run_cli(capsys, "leaderboard", str(results), "--check", str(reports))
    assert_refused(capsys, code, err, str(committed), "models[0].cells")


# ----------------------------------------------------------------------------- read-only Result


def test_read_only_result_is_not_replaced(tmp_path: Path) -> None:
    result = Result(model={"name": "alpha"}, protocol={"id": "synthA", "version": 1,
                                                      "sha256": "ab" * 32},
                    metrics={}, counts={}, provenance={}, timings={})
    path = result.write(tmp_path)
    before = path.read_bytes()
    path.chmod(0o444)
    result.timings["total"] = 1.0
    with pytest.raises(MeerbenchError, match=rf"{re.escape(str(path))} exists and is read-only"):
        result.write(tmp_path)
    assert path.read_bytes() == before
    path.chmod(0o644)
    assert json.loads(result.write(tmp_path).read_text())["timings"] == {"total": 1.0}


@pytest.mark.parametrize(("field", "value"), [("name", "../../x"), ("id", "a/b")])
def test_result_names_are_checked_before_writing(tmp_path: Path, field: str, value: str) -> None:
    model = {"name": value if field == "name" else "alpha"}
    protocol = {"id": value if field == "id" else "synthA", "version": 1, "sha256": "ab" * 32}
    result = Result(model=model, protocol=protocol, metrics={}, counts={}, provenance={},
                    timings={})
    with pytest.raises(MeerbenchError, match=re.escape(repr(value))):
        result.write(tmp_path / "out")
    assert list(tmp_path.rglob("*.json")) == []


def test_score_file_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"  # as spreadsheet programs save CSV
    path.write_bytes(b"\xef\xbb\xbfscore,label\n0.5,1\n0.25,0\n")
    assert load_scores(path).scores.tolist() == [0.5, 0.25]


def test_two_versions_of_a_protocol_keep_their_own_results(tiny_protocol: Path,
                                                           tmp_path: Path) -> None:
    """Version 1 keeps ``<model>__<protocol>.json``; a later version adds ``.v<N>``, so running
    the new version into a folder never replaces the old version's Result or score file."""
    import yaml

    out = tmp_path / "results"
    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"].pop("restoration")
    tiny_protocol.write_text(yaml.safe_dump(data))
    assert main(["run", "--model", "pixels", "--protocol", str(tiny_protocol), "--out", str(out),
                 "--no-progress"]) == 0
    first = (out / "pixels__tiny.json").read_bytes()
    data["version"] = 2
    tiny_protocol.write_text(yaml.safe_dump(data))
    assert main(["run", "--model", "pixels", "--protocol", str(tiny_protocol), "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "pixels__tiny.json").read_bytes() == first
    v2 = read_result(out / "pixels__tiny.v2.json")
    assert v2["protocol"]["version"] == 2 and v2["files"]["scores"] == "pixels__tiny.v2.scores.csv"
    assert (out / "pixels__tiny.v2.scores.csv").is_file() and (out / "pixels__tiny.scores.csv"
                                                                ).is_file()
