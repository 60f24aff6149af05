"""Report plots: every figure the Results support, at the expected size, non-blank; notes for the
figures whose data the Results do not carry; the report command end to end on real Results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meerbench.metrics.operational import OperationalSettings, operational_report
from meerbench.report.commands import report_command
from meerbench.report.grid import Grid, load_runs
from meerbench.report.plots import (
    DPI,
    SIZE,
    _det,
    _legend_outside,
    histogram_size,
    operational_size,
    restoration_grid_size,
    styles,
    write_plots,
)
from tests.test_report_tables import write_results


def pixels(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * DPI), round(size[1] * DPI)


def check_png(path: Path, size: tuple[float, float], legend: bool = False) -> None:
    """The figure's size (a legend outside the axes widens it, never by more than 3 inches),
    and not blank."""
    with Image.open(path) as image:
        width, height = pixels(size)
        if legend:
            assert height == image.size[1] and width < image.size[0] < width + 3 * DPI, path.name
        else:
            assert image.size == (width, height), path.name
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
        check_png(plot.files["png"], sizes.get(plot.kind, SIZE), plot.kind not in sizes)
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
        hist = png.name.startswith("hist")
        check_png(png, histogram_size(2) if hist else SIZE, legend=not hist)
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in (out / "plots").glob("*.pdf"))
    md = (out / "tables.md").read_text()
    assert "| pixels (reference) |" in md and "tiny v1 UMR-MP" in md and "McNemar" in md


def test_every_model_has_its_own_colour_and_dashes() -> None:
    names = ["arcface-s", "arcface-s-maskaug", "dlib-resnet", "eigenfaces", "fisherfaces",
             "from-s", "inpaint-telea+fisherfaces", "meer-s", "pixels"]
    look = styles(names)
    assert len({v["color"] for v in look.values()}) == len(names)
    assert len({str(v["linestyle"]) for v in look.values()}) == len(names)
    many = styles([f"m{i:02d}" for i in range(40)])
    assert len({(v["color"], str(v["linestyle"])) for v in many.values()}) == 40


def test_det_axes_are_normal_deviates_labelled_in_percent_with_the_legend_outside() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.stats import norm

    from meerbench.metrics.verification import roc

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    curves = {m: roc(np.where(labels, rng.normal(shift, 1, 4000), rng.normal(0, 1, 4000)),
                     labels) for m, shift in (("a", 2.0), ("b", 1.0))}
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    _det(ax, curves, styles(list(curves)))
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["0.01%", "0.1%", "1%", "10%", "50%", "90%", "99%", "99.9%"]
    assert np.allclose(ax.get_xticks(), norm.ppf([1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]))
    assert np.allclose(ax.get_xlim(), norm.ppf([1e-4, 1 - 1e-4]))  # 1 / 2000 -> 1e-4
    line = ax.get_lines()[0]  # model a: the probits of its FAR and FRR
    keep = (curves["a"].far > 0) & (curves["a"].tar < 1)
    assert np.allclose(line.get_xdata(), norm.ppf(curves["a"].far[keep]))
    assert np.allclose(line.get_ydata(), norm.ppf(1 - curves["a"].tar[keep]))

    size = [ax.get_position().width * fig.get_figwidth(), ax.get_position().height]
    _legend_outside(fig, ax)
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend, axes = (x.get_window_extent(renderer) for x in (ax.get_legend(), ax))
    assert legend.x0 > axes.x1 and legend.x1 <= fig.get_figwidth() * DPI  # beside, inside
    assert ax.get_position().width * fig.get_figwidth() == pytest.approx(size[0])
    assert fig.get_figwidth() > SIZE[0]


def operational_metrics(shift: float) -> dict:
    """An operational section made by the real metric on scores whose masked conditions are
    worse by ``shift``; UMR-MP probes carry two occluder families."""
    rng = np.random.default_rng(4)
    conds = np.repeat(["UMR-UMP", "UMR-MP", "MR-MP"], 400)
    labels = np.tile(np.r_[np.ones(200, bool), np.zeros(200, bool)], 3)
    scores = rng.normal(size=conds.size) + labels * np.repeat([3.0, 3.0 - shift, 2.0 - shift], 400)
    families = np.where(conds == "UMR-MP", np.tile(["surgical", "cloth"], 600), "")
    report = operational_report(scores, labels, conds,
                                OperationalSettings(fmr_targets=(0.05, 0.01), bootstrap=50),
                                groups=np.arange(conds.size) % 40, families=families)
    return {"operational": {**report, "status": "ok"}}


def test_operational_fnmr_panels_one_per_fmr_target(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_results(results, protocols=(("synthA", 1),), conditions=("UMR-MP",),
                  extra={"alpha": operational_metrics(0.5), "beta": operational_metrics(1.0)})
    drawn = write_plots(Grid.build(load_runs([results])), tmp_path / "plots", formats=("png",))
    plot, = (p for p in drawn.plots if p.kind == "operational")
    assert (plot.protocol, plot.condition) == ("synthA v1", "operational")
    assert plot.files["png"] == tmp_path / "plots" / "operational__synthA-v1.png"
    # 2 FMR targets; rows: 3 conditions and the 2 families of UMR-MP; 2 models
    check_png(plot.files["png"], operational_size(2, 5, 2), legend=True)
    assert operational_size(2, 5, 2) == (1.2 + 0.15 + 2 * 2.0, 0.5 + 0.5 + 5 * (0.1 + 0.14))
    assert not any("operational" in n for n in drawn.notes)
