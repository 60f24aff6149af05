"""Report plots: every figure the Results support, at the expected size, non-blank; notes for the
figures whose data the Results do not carry; the report command end to end on real Results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.report.commands import report_command
from meerbench.report.grid import Grid, load_runs
from meerbench.report.plots import DPI, SIZE, histogram_size, restoration_grid_size, write_plots
from tests.test_report_tables import write_results


def pixels(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * DPI), round(size[1] * DPI)


def check_png(path: Path, size: tuple[float, float]) -> None:
    with Image.open(path) as image:
        assert image.size == pixels(size), path.name
        values = np.asarray(image.convert("L"), dtype=np.float64)
    assert values.std() > 10 and (values < 128).mean() > 0.002, f"{path.name} looks blank"


def family_metrics(shift: float) -> dict:
    return {"verification_by_family": {"UMR-MP": {
        family: {"n_pairs": 60, "eer": {"value": v + shift, "ci95": [v + shift - 0.03,
                                                                    v + shift + 0.04]}}
        for family, v in (("surgical", 0.10), ("cloth", 0.15), ("n95", 0.2))}}}


def test_every_plot_at_its_size_with_notes_for_missing_data(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_results(results, protocols=(("synthA", 1),), conditions=("UMR-MP", "MR-MP"),
                  extra={"alpha": family_metrics(0.0), "beta": family_metrics(0.1)})
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (3, 4, 32, 32, 3), dtype=np.uint8)
    np.savez(results / "alpha__synthA.restoration.npz", keys=np.array(["a", "b", "c", "d"]),
             masked=faces[0], restored=faces[1], truth=faces[2])
    path = results / "alpha__synthA.json"
    data = json.loads(path.read_text())
    data["files"]["restoration_samples"] = "alpha__synthA.restoration.npz"
    path.write_text(json.dumps(data))

    drawn = write_plots(Grid.build(load_runs([results])), tmp_path / "plots", formats=("png",))
    kinds = sorted({(p.kind, p.condition) for p in drawn.plots})
    assert kinds == sorted([*((k, c) for k in ("roc", "det", "hist") for c in ("UMR-MP", "MR-MP")),
                            ("families", "UMR-MP"), ("cmc", "identification"),
                            ("dir", "identification"), ("restoration", "restoration")])
    sizes = {"hist": histogram_size(3), "restoration": restoration_grid_size(1, 4)}
    for plot in drawn.plots:
        check_png(plot.files["png"], sizes.get(plot.kind, SIZE))
    assert (tmp_path / "plots" / "roc__synthA-v1__UMR-MP.png").is_file()
    assert drawn.notes == ["Per-occluder-family bars for synthA v1 MR-MP: skipped, no Result "
                           "carries metrics.verification_by_family for this condition."]


@pytest.mark.slow
def test_report_command_on_real_results(tiny_protocol: Path, tmp_path: Path) -> None:
    from meerbench.engine.evaluate import evaluate

    for model in ("pixels", "eigenfaces"):
        evaluate(model, str(tiny_protocol), out_dir=tmp_path / "results", progress=False)
    code, text = report_command([str(tmp_path / "results")], str(tmp_path / "report"),
                                reference="pixels", rounds=100)
    assert code == 0 and "Restoration grid" not in text  # neither model restores
    out = tmp_path / "report"
    assert {p.name for p in out.iterdir()} >= {"tables.md", "tables.tex", "tables.csv",
                                               "tables.html", "plots"}
    pngs = sorted((out / "plots").glob("*.png"))
    # ROC, DET and histograms per condition; CMC and DIR; family bars for the two masked-probe
    # conditions (Results carry metrics.verification_by_family)
    assert len(pngs) == len(list((out / "plots").glob("*.pdf"))) == 3 * 3 + 2 + 2
    for png in pngs:
        check_png(png, histogram_size(2) if png.name.startswith("hist") else SIZE)
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in (out / "plots").glob("*.pdf"))
    md = (out / "tables.md").read_text()
    assert "| pixels (reference) |" in md and "tiny v1 UMR-MP" in md and "McNemar" in md
