"""Report tables (Markdown, LaTeX, CSV, HTML) from Result files, with a synthetic-Result builder
that the other report tests share."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meerbench.errors import ConfigError, MeerbenchError
from meerbench.metrics.identification import IdentificationSettings, identification_report
from meerbench.metrics.scorefiles import write_scores_csv
from meerbench.metrics.verification import VerificationSettings, verification_report
from meerbench.report.commands import report_command
from meerbench.report.frame import COLUMNS, load_results
from meerbench.report.grid import Grid, load_runs
from meerbench.report.tables import (
    CSV_HEADER,
    FORMATS,
    Report,
    latex,
    latex_provenance,
    layout,
    md,
    write_tables,
)
from meerbench.results import Result

CONDITIONS = ("UMR-UMP", "UMR-MP", "MR-MP")
#: model -> separation of genuine from impostor scores: alpha best, gamma worst.
QUALITY = {"alpha": 3.0, "beta": 1.5, "gamma": 0.4}
PROTOCOLS = (("synthA", 1), ("synthB", 2))


def protocol_sha(pid: str, version: int, salt: str = "") -> str:
    return hashlib.sha256(f"{pid}/{version}{salt}".encode()).hexdigest()


def write_results(folder: Path, quality: dict[str, float] | None = None,
                  protocols: tuple[tuple[str, int], ...] = PROTOCOLS, *, salt: str = "",
                  extra: dict[str, dict] | None = None,
                  conditions: tuple[str, ...] = CONDITIONS) -> list[Path]:
    """Result JSON + score CSV per (model, protocol), made with the real metric functions.

    Pairs are the same for every model of a protocol (200 per condition, 5 identity folds); the
    better the model, the further apart its genuine and impostor scores. ``extra`` adds metrics
    entries (e.g. verification_by_family) per model.
    """
    quality = QUALITY if quality is None else quality
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for p_index, (pid, version) in enumerate(protocols):
        rng = np.random.default_rng(p_index)
        n = 200
        labels = np.tile(np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)], len(conditions))
        probe_ids = rng.integers(0, 50, labels.size)
        ref_ids = np.where(labels, probe_ids, (probe_ids + 1 + rng.integers(0, 48, labels.size))
                           % 50)
        folds = probe_ids % 5
        condition = np.repeat(conditions, n)
        noise = rng.normal(size=(len(quality), labels.size))
        for m_index, (model, q) in enumerate(sorted(quality.items())):
            shift = 0.25 * q * labels * np.r_[1.0, 0.7, 0.5][:len(conditions)].repeat(n)
            scores = np.tanh(shift + 0.3 * noise[m_index])
            verification = {}
            for c, cond in enumerate(conditions):
                sel = slice(c * n, (c + 1) * n)
                verification[cond] = verification_report(
                    scores[sel], labels[sel], folds[sel],
                    VerificationSettings(far_targets=(0.1, 0.005), bootstrap=100),
                    groups=probe_ids[sel])
            metrics = {"verification": verification,
                       "identification": _identification(q, 10 * p_index + m_index),
                       "restoration": {"psnr": {"mean": 20.0 + q}, "ssim": {"mean": 0.5 + q / 10},
                                       "identity_similarity": {"mean": 0.8, "recognizer": model}}
                       if model == "alpha" else {"skipped": f"{model} does not restore faces"},
                       **(extra or {}).get(model, {})}
            stem = f"{model}__{pid}"
            keys = np.array([f"img{i:04d}.png" for i in range(labels.size)], dtype=object)
            write_scores_csv(folder / f"{stem}.scores.csv", scores, labels, refs=keys,
                             probes=keys[::-1], ref_ids=ref_ids, probe_ids=probe_ids,
                             folds=folds, conditions=condition)
            result = Result(
                model={"name": model, "weights_sha256": hashlib.sha256(model.encode()).hexdigest(),
                       "contract": {"input_size": [112, 112], "channels": "RGB",
                                    "alignment": "arcface-112", "embedding_dim": 512}},
                protocol={"id": pid, "version": version,
                          "sha256": protocol_sha(pid, version, salt),
                          "lists": {"verification": "ab" * 32, "identification": "cd" * 32}},
                metrics=metrics, counts={"pairs": {c: n for c in conditions}},
                provenance={"meerbench_version": "0.1.0", "git_commit": "0123456789abcdef",
                            "device": "cpu", "precision": "fp32", "torch_version": "2",
                            "date": f"2025-01-0{m_index + 1}T00:00:00+00:00"},
                timings={}, files={"scores": f"{stem}.scores.csv"})
            paths.append(result.write(folder))
    return paths


def _identification(quality: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 16))
    gallery_ids = np.arange(20)
    probe_ids = np.repeat(np.arange(30), 2)
    probes = centres[probe_ids] * quality + rng.normal(size=(60, 16))
    settings = IdentificationSettings(ranks=(1, 5), fpir_targets=(0.1,), max_rank=10,
                                      bootstrap=50)
    return identification_report(probes, probe_ids, centres[gallery_ids] * quality,
                                 gallery_ids, settings)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_results(folder)
    return folder


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def section(text: str, title: str) -> str:
    """One Markdown table block (its title to the next heading)."""
    return text.split(f"### {title}")[1].split("###")[0]


def test_all_formats_bold_best_interval_and_significance(results: Path, tmp_path: Path) -> None:
    report = Report.build(load_runs([results]), reference="gamma", rounds=200)
    paths = write_tables(report, tmp_path)
    assert sorted(p.name for p in paths) == sorted(n for names in FORMATS.values() for n in names)
    md = (tmp_path / "tables.md").read_text()
    table = section(md, "Verification: Accuracy (%)")
    assert "| Model | synthA v1 UMR-UMP | synthA v1 UMR-MP" in table
    assert "synthB v2 MR-MP" in table  # versions label every column
    alpha = next(line for line in table.splitlines() if line.startswith("| alpha |"))
    gamma = next(line for line in table.splitlines() if line.startswith("| gamma (reference) |"))
    assert alpha.count("**") >= 2 * 6 and "± " in alpha  # best in all 6 columns, bold
    assert re.search(r"\*\*\d+\.\d\d\*\* ± \d+\.\d\d(\\\*){1,2}", alpha)  # marker vs gamma
    assert "**" not in gamma.replace("(reference)", "")
    notes = [line for line in table.splitlines() if line.startswith("Note: ")]
    assert len(notes) == 1 and "McNemar" in notes[0] and "Accuracy rule: insightface" in notes[0]
    assert notes[0].startswith("Note: ± 95% CI; bold: best (higher is better); ")
    assert "; * p < 0.05, ** p < 0.01 vs gamma (McNemar; uncorrected); " in notes[0]
    assert "&lt;" not in md and "&gt;" not in md  # plain text reads plainly in the .md
    provenance = md.split("### Provenance")[1]
    assert "sha256" not in table and "| synthB v2 | " in provenance
    assert "floor (largest TAR whose FAR" in provenance and "min_gap" in provenance
    assert "†" in md and "Identification on synthA v1 (%)" in md
    assert "Restoration on synthA v1" in md and "gamma does not restore faces" in md

    rows = read_csv((tmp_path / "tables.csv").read_text())
    acc = [r for r in rows if r["model"] == "alpha" and r["metric"] == "acc"
           and r["protocol"] == "synthA" and r["condition"] == "UMR-MP"]
    result = json.loads((results / "alpha__synthA.json").read_text())
    assert float(acc[0]["value"]) == result["metrics"]["verification"]["UMR-MP"]["accuracy"]["mean"]
    assert acc[0]["unit"] == "fraction" and 0.5 < float(acc[0]["value"]) <= 1  # not "%"
    assert {r["unit"] for r in rows if r["metric"] == "psnr"} == {"dB"}
    assert acc[0]["best"] == "1" and acc[0]["test"].startswith("McNemar")
    assert float(acc[0]["p_value"]) < 0.05
    tar = [r for r in rows if r["model"] == "beta" and r["metric"] == "tar@0.1"]
    assert len(tar) == 6 and all(r["test"] == "paired bootstrap" for r in tar)
    assert {r["model"] for r in rows} == set(QUALITY)

    page = (tmp_path / "tables.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "<b>" in page
    assert 'colspan="3">synthA v1</th>' in page and 'id="tab:provenance"' in page
    assert page.count('<p class="note">') == len(report.tables())


def test_tables_are_pivots_of_the_tidy_frame(results: Path, tmp_path: Path) -> None:
    """The report's frame is meerbench.load_results' frame (plus marks); every table cell,
    Markdown and LaTeX, shows its row's value at its model and column, and LaTeX bolds
    exactly the frame's best cells, never a dagger or n/a one."""
    report = Report.build(load_runs([results]), reference="gamma", rounds=50)
    order = ["file", "condition", "metric"]
    ours = report.frame[list(COLUMNS)].sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, load_results(results).sort_values(order)
                                  .reset_index(drop=True))
    write_tables(report, tmp_path, ["md", "latex"])
    text, tex_text = (tmp_path / "tables.md").read_text(), (tmp_path / "tables.tex").read_text()
    frame = report.frame.set_index(["model", "column"])
    checked = bold = 0
    for table, block in zip(report.tables(), tex_text.split(r"\begin{table}")[1:], strict=True):
        md_rows = {line.split(" | ")[0][2:].removesuffix(" (reference)"): line.split(" | ")[1:]
                   for line in section(text, table.title).splitlines()
                   if line.startswith("| ") and not line.startswith("| Model")}
        tex_rows = [row.strip() for row in block.split(r"\midrule")[1].split(r"\bottomrule")[0]
                    .split(r"\\") if row.strip()]
        assert list(md_rows) == table.rows == [
            r.split(" & ")[0].replace(r"\textsuperscript{ref}", "") for r in tex_rows]
        for model, tex_row in zip(table.rows, tex_rows, strict=True):
            for i, column in enumerate(table.columns):
                md_cell, tex_cell = md_rows[model][i], tex_row.split(" & ")[1 + i]
                place = report.grid.columns.index(column)
                if (model, place) not in frame.index:
                    assert md_cell.strip(" |") == "–" and tex_cell == "--"
                    continue
                row = frame.loc[(model, place)]
                value = "n/a" if pd.isna(row["value"]) else \
                    f"{row['value'] * row['scale']:.{column.metric.digits}f}"
                assert md_cell.replace("**", "").startswith(value), (model, column)
                assert tex_cell.removeprefix(r"\textbf{").startswith(value)
                is_bold = tex_cell.startswith(r"\textbf{")
                assert is_bold == row["bold"] == md_cell.startswith("**")
                assert not is_bold or (row["reliable"] and value != "n/a"
                                       and "dagger" not in tex_cell)
                checked, bold = checked + 1, bold + is_bold
    assert checked == len(report.frame[report.frame["column"].isin(
        {report.grid.columns.index(c) for t in report.tables() for c in t.columns})]) and bold > 10


def test_markdown_escaping_keeps_plain_text_plain() -> None:
    """Only what could open HTML (a tag, entity or block quote) is escaped in Markdown."""
    for plain in ("p < 0.05", "accept score > t", "A & B", "x <= 1", "FAR >= 1e-3"):
        assert md(plain) == plain
    assert md("<script>a</script>") == "&lt;script&gt;a&lt;/script&gt;"
    assert md("&amp; &#96; <!-- x --> <b>") == "&amp;amp; &amp;#96; &lt;!-- x --&gt; &lt;b&gt;"
    assert md("> quoted") == "&gt; quoted" and md("a>b") == "a&gt;b"
    assert md("a|b [c](d) `e`") == r"a\|b \[c\](d) &#96;e&#96;"


def test_unreliable_cells_are_marked_and_never_bold(results: Path, tmp_path: Path) -> None:
    """TAR@FAR=0.005 on 100 impostor pairs allows no false accept: every cell is †, none is
    "best", in every format and in the leaderboard."""
    from meerbench.report.leaderboard import build_leaderboard

    report = Report.build(load_runs([results]))
    write_tables(report, tmp_path)
    table = section((tmp_path / "tables.md").read_text(), "Verification: TAR@FAR=5e-3 (%)")
    cells = [line for line in table.splitlines() if line.startswith("| ") and "Model" not in line]
    assert len(cells) == 3 and all(line.count("†") == 6 for line in cells)
    assert "**" not in table and "bold" not in table
    assert "† not measured: target x negatives < 1 allows no false accept" in table
    assert "&lt;" not in table
    tex_block = (tmp_path / "tables.tex").read_text().split("TAR@FAR=5e-3")[1].split(
        r"\end{table}")[0]
    assert r"\textbf" not in tex_block and tex_block.count(r"$^{\dagger}$") >= 18
    rows = [r for r in read_csv((tmp_path / "tables.csv").read_text())
            if r["metric"] == "tar@0.005"]
    assert len(rows) == 18 and {(r["reliable"], r["best"]) for r in rows} == {("0", "0")}
    board = build_leaderboard(report.grid)
    assert not any(cell["best"] for m in board["models"] for key, cell in m["cells"].items()
                   if key.endswith("/tar@0.005"))
    assert any(cell["best"] for m in board["models"] for key, cell in m["cells"].items()
               if key.endswith("/tar@0.1"))


def test_metrics_and_conditions_choose_the_columns(results: Path, tmp_path: Path) -> None:
    code, _ = report_command([str(results)], str(tmp_path / "out"), formats=["md", "csv"],
                             plots=False, metrics=["tar@", "rank1"], conditions=["MR-MP"])
    assert code == 0
    md = (tmp_path / "out" / "tables.md").read_text()
    titles = re.findall(r"^### (.+)$", md, re.M)
    assert titles == ["Verification: TAR@FAR=0.1 (%)", "Verification: TAR@FAR=5e-3 (%)",
                      "Identification on synthA v1 (%)", "Identification on synthB v2 (%)",
                      "Provenance"]
    assert "UMR-MP" not in md.split("### Provenance")[0] and "synthB v2 MR-MP" in md
    rows = read_csv((tmp_path / "out" / "tables.csv").read_text())
    assert {(r["metric"], r["condition"]) for r in rows} == {
        ("tar@0.1", "MR-MP"), ("tar@0.005", "MR-MP"), ("rank1", "identification")}
    with pytest.raises(ConfigError, match=r"metric\(s\) eer@1; the Results here have: acc, "):
        report_command([str(results)], metrics=["eer@1"])
    with pytest.raises(ConfigError, match=r"condition\(s\) XX; .*UMR-UMP, UMR-MP, MR-MP"):
        report_command([str(results)], conditions=["XX"])


def test_without_out_the_first_format_is_printed(results: Path) -> None:
    code, text = report_command([str(results)], formats=["latex"], metrics=["acc"])
    assert code == 0 and text.startswith("% meerbench tables")
    assert text.count(r"\begin{table}") == 2 and r"\label{tab:verification-acc}" in text
    assert r"\label{tab:provenance}" in text and "###" not in text
    code, text = report_command([str(results)], formats=["csv", "md"])
    assert text.splitlines()[0] == ",".join(CSV_HEADER)
    assert report_command([str(results)])[1].startswith("### Verification: Accuracy (%)")


def test_a_missing_score_file_is_said_next_to_the_table(results: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    (folder / "beta__synthA.scores.csv").unlink()
    (folder / "alpha__synthB.scores.csv").unlink()
    report = Report.build(load_runs([folder]), reference="alpha", rounds=50)
    write_tables(report, tmp_path / "out")
    for name in ("tables.md", "tables.tex", "tables.html"):
        text = (tmp_path / "out" / name).read_text()
        table = text.split("TAR@FAR=0.1")[1].split("TAR@FAR=5e-3")[0]
        assert "no score file for beta, alpha (reference): no test" in table, name
    rows = read_csv((tmp_path / "out" / "tables.csv").read_text())
    beta = [r for r in rows if r["model"] == "beta" and r["metric"] == "acc"]
    assert {r["note"] for r in beta if r["protocol"] == "synthA"} == {
        "no score file for beta: no test"}
    assert {r["note"] for r in beta if r["protocol"] == "synthB"} == {
        "no score file for alpha: no test"}
    assert all(r["test"] == "" for r in beta)


def test_no_machine_path_in_any_table(results: Path, tmp_path: Path) -> None:
    """A restoration metric whose weights were missing names the folder searched; the tables
    say which file was missing, never where that machine looked."""
    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    path = folder / "alpha__synthA.json"
    data = json.loads(path.read_text())
    place = str(tmp_path / "hub" / "checkpoints")
    data["metrics"]["restoration"]["fid"] = {
        "value": None, "available": False, "weights_file": "pt_inception.pth", "place_at": place,
        "reason": f"FID Inception weights pt_inception.pth not found in {place}: download it"}
    path.write_text(json.dumps(data))
    write_tables(Report.build(load_runs([folder]), reference="beta"), tmp_path / "out")
    texts = {f.name: f.read_text() for f in (tmp_path / "out").iterdir()}
    assert "n/a: needs pt_inception.pth (not on disk at run time)" in texts["tables.md"]
    for name, text in texts.items():
        assert str(tmp_path) not in text and "/tmp" not in text, name


def test_report_reads_a_folder_that_holds_its_leaderboard(results: Path, tmp_path: Path) -> None:
    from meerbench.report.leaderboard import write_leaderboard
    from meerbench.results import NotAResult

    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    write_leaderboard(load_runs([folder]), folder, plots=False)
    with pytest.warns(NotAResult, match="leaderboard.json"):
        code, text = report_command([str(folder)], formats=["md"])
    assert code == 0 and "### Verification: Accuracy (%)" in text


def test_latex_compiles_in_a_standard_article(results: Path, tmp_path: Path) -> None:
    report = Report.build(load_runs([results]), reference="gamma", rounds=50)
    text, prov = latex(report), latex_provenance(report)
    tables = layout(report.grid)
    assert text.count(r"\begin{table}") == len(tables) == text.count(r"\bottomrule")
    assert text.count(r"\toprule") == text.count(r"\midrule") == len(tables)
    assert r"\cmidrule(lr){2-4} \cmidrule(lr){5-7}" in text and r"\textbf{" in text
    labels = re.findall(r"\\label\{(tab:[^}]+)\}", text)
    assert len(labels) == len(set(labels)) == len(tables)
    assert labels[:2] == ["tab:verification-acc", "tab:verification-tar-0.1"]
    assert "tab:synthA-v1-identification" in labels and "tab:synthA-v1-restoration" in labels
    assert re.findall(r"\\label\{([^}]+)\}", prov) == ["tab:provenance"]
    for table, block in zip(tables, text.split(r"\begin{table}")[1:], strict=True):
        body = block.split(r"\midrule")[1].split(r"\bottomrule")[0]
        for row in filter(None, (r.strip() for r in body.split(r"\\"))):
            assert row.count("&") - row.count(r"\&") == len(table.columns)
        note = block.split(r"\begin{minipage}{\linewidth}\footnotesize")[1].split(
            r"\end{minipage}")[0].strip()
        assert "\n" not in note and note.endswith(r"Table~\ref{tab:provenance}.")
    assert "_" not in re.sub(r"\\_", "", text.replace(r"\textsuperscript", ""))
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("structure checked; no pdflatex to compile (apt install texlive-latex-base "
                    "texlive-latex-recommended)")
    (tmp_path / "tables.tex").write_text(text)
    (tmp_path / "provenance.tex").write_text(prov)
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                        "\\begin{document}\n\\input{tables}\n"
                                        "\\input{provenance}\n\\end{document}\n")
    for _ in range(2):  # the second run resolves the references
        done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    log = (tmp_path / "paper.log").read_text()
    assert "Overfull" not in log and "undefined" not in log and "multiply" not in log


def test_protocol_definitions_never_share_a_column(results: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    write_results(edited, {"delta": 2.0}, PROTOCOLS[:1], salt="edited")
    grid = Grid.build(load_runs([results, edited]))
    shas = {c.protocol.sha256 for c in grid.columns if c.protocol.id == "synthA"}
    assert len(shas) == 2
    labels = {grid.label(c.protocol) for c in grid.columns if c.protocol.id == "synthA"}
    assert all(re.fullmatch(r"synthA v1 \([0-9a-f]{8}\)", label) for label in labels)
    assert grid.label(next(c.protocol for c in grid.columns if c.protocol.id == "synthB")) == \
        "synthB v2"
    for column in grid.columns:
        has = {m for m in grid.models if grid.cell(m, column)}
        assert has <= {"delta"} or "delta" not in has


def test_duplicates_and_unknown_reference_are_refused(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.json"
    shutil.copy(results / "alpha__synthA.json", copy)
    with pytest.raises(MeerbenchError, match="Two Results for model alpha on synthA v1"):
        Grid.build(load_runs([results, copy]))
    with pytest.raises(MeerbenchError, match="Reference model 'zeta' has no Result"):
        Report.build(load_runs([results]), reference="zeta")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MeerbenchError, match="No Result JSON files"):
        load_runs([empty])
