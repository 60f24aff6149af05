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
import pytest

from meerbench.errors import MeerbenchError
from meerbench.metrics.identification import IdentificationSettings, identification_report
from meerbench.metrics.scorefiles import write_scores_csv
from meerbench.metrics.verification import VerificationSettings, verification_report
from meerbench.report.grid import Grid, load_runs
from meerbench.report.tables import FORMATS, Report, latex, layout, write_tables
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


def test_all_formats_bold_best_interval_and_significance(results: Path, tmp_path: Path) -> None:
    report = Report.build(load_runs([results]), reference="gamma", rounds=200)
    paths = write_tables(report, tmp_path)
    assert sorted(p.name for p in paths) == sorted(FORMATS.values())
    md = (tmp_path / "tables.md").read_text()
    table = md.split("### Verification: Accuracy (%)")[1].split("###")[0]
    assert "| Model | synthA v1 UMR-UMP | synthA v1 UMR-MP" in table
    assert "synthB v2 MR-MP" in table  # versions label every column
    alpha = next(line for line in table.splitlines() if line.startswith("| alpha |"))
    gamma = next(line for line in table.splitlines() if line.startswith("| gamma (reference) |"))
    assert alpha.count("**") >= 2 * 6 and "± " in alpha  # best in all 6 columns, bold
    assert re.search(r"\*\*\d+\.\d\d\*\* ± \d+\.\d\d(\\\*){1,2}", alpha)  # marker vs gamma
    assert "**" not in gamma.replace("(reference)", "")
    assert "McNemar" in table and "insightface" in table and "synthB v2: protocol sha256" in table
    assert "floor (largest TAR whose FAR" in md and "min_gap" in md
    assert "†" in md and "Identification on synthA v1 (%)" in md
    assert "Restoration on synthA v1" in md and "gamma does not restore faces" in md

    rows = read_csv((tmp_path / "tables.csv").read_text())
    acc = [r for r in rows if r["model"] == "alpha" and r["metric"] == "acc"
           and r["protocol"] == "synthA" and r["condition"] == "UMR-MP"]
    result = json.loads((results / "alpha__synthA.json").read_text())
    assert float(acc[0]["value"]) == result["metrics"]["verification"]["UMR-MP"]["accuracy"]["mean"]
    assert acc[0]["best"] == "1" and acc[0]["test"].startswith("McNemar")
    assert float(acc[0]["p_value"]) < 0.05
    tar = [r for r in rows if r["model"] == "beta" and r["metric"] == "tar@0.1"]
    assert len(tar) == 6 and all(r["test"] == "paired bootstrap" for r in tar)
    assert {r["model"] for r in rows} == set(QUALITY)

    page = (tmp_path / "tables.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "<b>" in page
    assert 'colspan="3">synthA v1</th>' in page


def test_latex_compiles_in_a_standard_article(results: Path, tmp_path: Path) -> None:
    report = Report.build(load_runs([results]), reference="gamma", rounds=50)
    text = latex(report)
    tables = layout(report.grid)
    assert text.count(r"\begin{table}") == len(tables) == text.count(r"\bottomrule")
    assert text.count(r"\toprule") == text.count(r"\midrule") == len(tables)
    assert r"\cmidrule(lr){2-4} \cmidrule(lr){5-7}" in text and r"\textbf{" in text
    for table, block in zip(tables, text.split(r"\begin{table}")[1:], strict=True):
        body = block.split(r"\midrule")[1].split(r"\bottomrule")[0]
        for row in filter(None, (r.strip() for r in body.split(r"\\"))):
            assert row.count("&") - row.count(r"\&") == len(table.columns)
    assert "_" not in re.sub(r"\\_", "", text.replace(r"\textsuperscript", ""))
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("structure checked; no pdflatex to compile (apt install texlive-latex-base "
                    "texlive-latex-recommended)")
    (tmp_path / "tables.tex").write_text(text)
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                        "\\begin{document}\n\\input{tables}\n\\end{document}\n")
    done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    assert "Overfull" not in (tmp_path / "paper.log").read_text()


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
