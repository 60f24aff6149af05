"""The tidy frame of Results (meerbench.load_results) and its export, checked against the JSON.

The expected numbers are read from the Result JSON here, independently of the task types' typed
sections the frame is built from: the 24 committed reference Results, and a fresh run on the
tiny protocol that also carries a task type registered by the test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from meerbench.errors import ConfigError, MeerbenchError
from meerbench.report.frame import COLUMNS, export_results, load_results
from meerbench.tasks import Cell, Metric, Outcome, Plan, Section, Task, register_task
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "results"

Expected = dict[tuple[str, str, str, str], tuple[Any, ...]]


def expected_numbers(path: Path) -> Expected:
    """(file, task, condition, metric) -> (value, ci_low, ci_high, reliable, n) from a Result's
    JSON."""
    result = json.loads(path.read_text())
    metrics, found = result["metrics"], {}

    def put(task: str, condition: str, metric: str, value: Any, ci: Any = None,
            reliable: bool = True, n: int | None = None) -> None:
        low, high = (None, None) if ci is None else ci
        found[(str(path), task, condition, metric)] = (value, low, high, reliable, n)

    for task in ("verification", "verification_dense"):
        for cond, m in metrics.get(task, {}).items():
            if m.get("status", "ok") != "ok":
                put(task, cond, "acc", None, n=m["n_pairs"])
                continue
            n = m["n_pairs"]
            if m["accuracy"] is not None:  # dense pairs have no folds, so no accuracy
                put(task, cond, "acc", m["accuracy"]["mean"], m["accuracy"]["ci95"], n=n)
            put(task, cond, "auc", m["auc"]["value"], m["auc"]["ci95"], n=n)
            put(task, cond, "eer", m["eer"]["value"], m["eer"]["ci95"], n=n)
            for t in m["tar_at_far"]:
                put(task, cond, f"tar@{t['target']:g}", t["tar"], t["ci95"], t["reliable"], n)
    for point in metrics.get("operational", {}).get("operating_points", []):
        entries = list(point["conditions"].items()) + [
            (f"{cond}/{fam}", e) for cond, fams in point["by_family"].items()
            for fam, e in fams.items()]
        for cond, e in entries:
            for kind in ("fnmr", "fmr", "mask_penalty"):
                if kind in e:
                    put("operational", cond, f"{kind}@{point['target']:g}", e[kind]["value"],
                        e[kind]["ci95"], point["reliable"],
                        e["n_impostor" if kind == "fmr" else "n_genuine"])
    ident = metrics.get("identification", {})
    if ident.get("status", "ok") == "ok" and ident:
        n = ident["n_probes_mated"]
        for k, v in ident["rank"].items():
            put("identification", "identification", f"rank{k}", v,
                ident["ci95"]["rank1"] if k == "1" else None, n=n)
        put("identification", "identification", "map", ident["map"], n=n)
        cis = ident["ci95"].get("dir_at_fpir") or [None] * len(ident["dir_at_fpir"])
        for d, ci in zip(ident["dir_at_fpir"], cis, strict=True):
            put("identification", "identification", f"dir@{d['fpir_target']:g}", d["dir"], ci,
                d["reliable"], n)
    rest = metrics.get("restoration", {})
    if rest.get("status", "ok") == "ok":
        for key, entry in rest.items():
            if isinstance(entry, dict) and ("mean" in entry or "value" in entry):
                put("restoration", "restoration", key, entry.get("mean", entry.get("value")),
                    n=entry.get("n_averaged", entry.get("n_images")))
    if "quality" in metrics:
        put("quality", "quality", "brightness", metrics["quality"]["brightness"])
    return found


def frame_numbers(frame: pd.DataFrame) -> Expected:
    def plain(x: Any) -> Any:
        return None if pd.isna(x) else x

    return {(r.file, r.task, r.condition, r.metric): (
        plain(r.value), plain(r.ci_low), plain(r.ci_high), bool(r.reliable), plain(r.n))
        for r in frame.itertuples()}


def assert_same(frame: pd.DataFrame, files: list[Path]) -> None:
    """The frame holds exactly the JSON's numbers: same keys, same floats (no rounding)."""
    expected: Expected = {}
    for file in files:
        expected.update(expected_numbers(file))
    got = frame_numbers(frame)
    assert sorted(got) == sorted(expected)
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, wrong


def test_the_frame_holds_every_number_of_the_committed_results_as_stored():
    frame = load_results(COMMITTED)
    files = sorted(COMMITTED.glob("*.json"))
    assert len(files) == 24 and frame["file"].nunique() == 24  # 16 of v1, 8 of SynthMask v2
    assert list(frame.columns) == list(COLUMNS)
    assert_same(frame, files)

    # every verification accuracy, AUC, TAR@FAR and identification rank-1 is there: 24 Results
    # x 3 conditions x (acc, AUC, EER, 4 TAR@FAR); rank-1 with its interval once per Result;
    # the 8 v2 Results add dense TAR@FAR and operational FNMR per condition
    per_metric = frame.query("task == 'verification'").groupby("metric").size()
    assert per_metric["acc"] == per_metric["auc"] == per_metric["tar@0.001"] == 72
    assert len(frame.query("metric == 'rank1'")) == 24
    assert frame.query("metric == 'rank1'")["ci_low"].notna().all()
    v2 = frame.query("version == 2").groupby(["task", "metric"]).size()
    assert v2[("verification_dense", "tar@1e-05")] == v2[("verification", "acc")] == 24
    assert v2[("operational", "fnmr@0.0001")] >= 24  # conditions, then occluder families
    one = frame.query("model == 'meer-s' and protocol == 'synthmask' and version == 1"
                      " and condition == 'UMR-MP' and metric == 'acc'").iloc[0]
    raw = json.loads((COMMITTED / "meer-s__synthmask.json").read_text())
    acc = raw["metrics"]["verification"]["UMR-MP"]["accuracy"]
    assert (one.value, one.ci_low, one.ci_high) == (acc["mean"], *acc["ci95"])
    rule = f"{acc['rule']}, {len(acc['per_fold'])}-fold"
    assert (one.label, one.unit, one.scale, one.rule) == ("Accuracy", "fraction", 100.0, rule)
    assert one.version == raw["protocol"]["version"]
    assert one.protocol_sha256 == raw["protocol"]["sha256"]


def test_unreliable_and_unmeasured_numbers_keep_their_flag_and_note():
    frame = load_results(COMMITTED / "inpaint-telea+fisherfaces__synthmask.json")
    tar = frame.query("condition == 'UMR-UMP' and metric == 'tar@0.0001'").iloc[0]
    assert not tar.reliable and "not measured" in tar.note
    fid = frame.query("metric == 'fid'").iloc[0]
    assert math.isnan(fid.value) and pd.isna(fid.n) and fid.note  # why it was not measured
    eer = frame.query("metric == 'eer'")
    assert not eer["higher_is_better"].any() and frame.query("metric == 'acc'")[
        "higher_is_better"].all()
    psnr = frame.query("metric == 'psnr'").iloc[0]
    assert (psnr.unit, psnr.scale, psnr.n) == ("dB", 1.0, 3000)


def test_one_path_a_list_and_a_folder_give_the_same_rows():
    one = COMMITTED / "pixels__synthmask.json"
    a, b = load_results(one), load_results([str(one)])
    pd.testing.assert_frame_equal(a, b)
    whole = load_results(str(COMMITTED))
    pd.testing.assert_frame_equal(whole[whole["file"] == str(one)].reset_index(drop=True), a)


# ----------------------------------------------------------------------------- a fresh run

BRIGHTNESS = Metric("brightness", "quality", "Brightness", "%", True, order=(0.0,))


class Quality(Task):
    """Mean brightness of the protocol's masked images: a task type this module adds."""

    name = "quality"

    def parse(self, fields):
        return None

    def plan(self, config, dataset) -> Plan:
        return Plan(np.array([i for i, s in enumerate(dataset.samples) if s.masked], np.int64))

    def run(self, config, plan, ctx):
        from meerbench.data.images import read_rgb

        values = [read_rgb(ctx.dataset.samples[i].path).mean() / 255 for i in plan.images]
        return Outcome(Section(values={"brightness": float(np.mean(values))}))

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        yield self.name, BRIGHTNESS, Cell(section.values["brightness"])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Iterator[Path]:
    """A pixels Result on the tiny protocol (verification, identification, a skipped
    restoration) with the test's own task type, registered while the module's tests run."""
    from meerbench.engine.evaluate import evaluate
    from meerbench.protocol import load_protocol
    from meerbench.registry import TASKS

    root = tmp_path_factory.mktemp("frame")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "tasks": {**TINY["tasks"], "quality": {}}}))
    register_task(Quality())
    try:
        evaluate("pixels", load_protocol(path), out_dir=root / "results", progress=False)
        yield root / "results" / "pixels__tiny.json"
    finally:
        TASKS.remove("quality")


def test_a_fresh_result_and_a_new_task_type_reach_the_frame(fresh):
    frame = load_results(fresh)
    assert_same(frame, [fresh])
    assert set(frame["task"]) == {"verification", "identification", "quality"}  # restoration
    quality = frame.query("task == 'quality'").iloc[0]  # skipped: no rows
    assert (quality.condition, quality.label, quality.unit) == ("quality", "Brightness", "fraction")
    assert pd.isna(quality.n)  # the frame knows no count for a task type it was not told of
    pairs = json.loads(fresh.read_text())["counts"]["pairs"]
    assert frame.query("task == 'verification'").groupby("condition")["n"].first().to_dict(
        ) == pairs


# ----------------------------------------------------------------------------- export


def test_csv_export_reads_back_to_the_same_frame(tmp_path):
    frame = load_results(COMMITTED)
    out = export_results([COMMITTED], tmp_path / "deep" / "results.csv", "csv")
    assert out == tmp_path / "deep" / "results.csv"
    back = pd.read_csv(out, dtype={"n": "Int64"})
    assert list(back.columns) == list(COLUMNS) and len(back) == len(frame)
    for column in ("value", "ci_low", "ci_high", "scale", "version", "reliable",
                   "higher_is_better", "n"):
        pd.testing.assert_series_equal(back[column], frame[column], check_dtype=False)
    for column in ("model", "condition", "metric", "label", "rule", "note", "unit"):
        # CSV has one empty field for NA and for '' (the unit of SSIM)
        assert back[column].fillna("").tolist() == frame[column].fillna("").tolist(), column
    assert not list(tmp_path.glob("deep/.*partial"))


def test_parquet_export_reads_back_identical(tmp_path):
    frame = load_results(COMMITTED)
    out = export_results(COMMITTED, tmp_path / "results.parquet", "parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)


def test_bad_format_missing_engine_and_bad_results_write_nothing(tmp_path, monkeypatch):
    out = tmp_path / "results.out"
    with pytest.raises(ConfigError, match="'xlsx' is not one of csv, parquet"):
        export_results(COMMITTED, out, "xlsx")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    with pytest.raises(MeerbenchError, match="parquet needs pyarrow.*pip install pyarrow"):
        export_results(COMMITTED, out, "parquet")
    monkeypatch.undo()
    assert not out.exists()

    out.write_text("an earlier export\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text('{"schema": "meerbench.result/1", "model": {}}')
    with pytest.raises(MeerbenchError, match="broken.json"):
        export_results(bad, out, "csv")
    assert out.read_text() == "an earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "results.out"]


# ----------------------------------------------------------------------------- the public API


def test_the_readme_line_works_and_import_meerbench_stays_light():
    code = ("import sys, meerbench; light = sorted({'torch', 'pandas'} & set(sys.modules)); "
            "print(meerbench.load_results('reports/results').head()); "
            "print('before:', light, 'torch after:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "before: [] torch after: False" in out
    assert "[5 rows x 19 columns]" in out and "arcface-s-maskaug" in out
