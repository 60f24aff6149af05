"""Figures from Results and their score files, as PNG and PDF (matplotlib, Agg, no pyplot).

ROC (log FAR axis) and DET (normal-deviate axes, the bob/NIST convention) per protocol
condition with models overlaid, genuine/impostor score histograms, CMC, DIR vs FPIR,
per-occluder-family bars, operational FNMR (per condition and occluder family at each FMR
target's threshold) and restoration grids. Every model keeps one colour of a
colour-blind-safe palette and one dash pattern in every figure, both distinct per model for up
to nine models; legends sit outside the data, to the right of the axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meerbench.io import ensure_writable_dir
from meerbench.metrics.operational import MIN_FALSE_MATCHES
from meerbench.metrics.verification import roc
from meerbench.report.grid import Grid, ProtocolKey, Run
from meerbench.results import RESTORER_GIVEN
from meerbench.tasks import sci
from meerbench.tasks.identification import IDENTIFICATION
from meerbench.tasks.operational import OPERATIONAL, entries
from meerbench.tasks.restoration import RESTORATION
from meerbench.tasks.verification import VERIFICATION

# Okabe & Ito (2008), "Color Universal Design", ordered for contrast on white (yellow last),
# then a neutral grey: nine colours that stay apart under the common colour-vision deficiencies.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000",
             "#F0E442")
PALETTE = (*OKABE_ITO, "#999999")
#: Dash patterns, one per model: ten, so (colour, dashes) pairs never repeat below 90 models.
LINESTYLES: tuple[Any, ...] = (
    "-", (0, (5, 1.5)), (0, (1, 1.2)), (0, (5, 1.5, 1, 1.5)), (0, (9, 2)),
    (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (2.5, 1.5)), (0, (9, 2, 2, 2)), (0, (1, 2.5)),
    (0, (4, 1, 1, 1, 1, 1, 1, 1)))
#: DET axis ticks (rates; labelled in %), where they fall inside the data's range.
DET_TICKS = (1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
DPI = 150
SIZE = (4.8, 3.6)  # inches: 720 x 540 pixels at DPI, before the legend widens the figure
PANEL = (2.4, 2.0)  # one histogram panel
CELL = 0.9  # one restoration-grid image
OPERATIONAL_PANEL = 2.0  # inches per FMR target
OPERATIONAL_AXES = (1.2, 0.15, 0.5, 0.5)  # room for 'UMR-MP/surgical' on the left
AXES = (0.6, 0.15, 0.5, 0.35)  # margins in inches: left, right, bottom, top
LEGEND_GAP = 0.1  # inches between the axes and a legend outside them
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.4, "pdf.fonttype": 42,
}
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}
#: Restoration grids: each header says what the restorer was given, as its Result records it.
RESTORATION_CAPTION = "Given: " + "; ".join(f"'{k}': {v}" for k, v in RESTORER_GIVEN.items()) + "."


@dataclass(frozen=True)
class Plot:
    """One written figure: ``files`` maps format to path."""

    kind: str
    protocol: str
    condition: str
    files: dict[str, Path]


@dataclass
class Plots:
    """Written figures and notes on figures that could not be drawn (and why)."""

    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [p for plot in self.plots for p in plot.files.values()]


def styles(models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour and dash pattern per model, stable for a given set of model names; both differ
    between any two of up to len(PALETTE) models."""
    return {m: {"color": PALETTE[i % len(PALETTE)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)]}
            for i, m in enumerate(sorted(models))}


def histogram_size(n_models: int) -> tuple[float, float]:
    cols = min(3, n_models)
    return PANEL[0] * cols, PANEL[1] * math.ceil(n_models / cols)


def operational_size(n_targets: int, n_rows: int, n_models: int) -> tuple[float, float]:
    """One panel per FMR target, one row per condition or family, a dot per model."""
    margins = OPERATIONAL_AXES
    return (margins[0] + margins[1] + OPERATIONAL_PANEL * n_targets,
            margins[2] + margins[3] + n_rows * (0.1 + 0.07 * n_models))


def restoration_grid_size(n_models: int, n_samples: int) -> tuple[float, float]:
    return CELL * (n_models + 2), CELL * n_samples + 0.75


def write_plots(grid: Grid, out: Path, formats: Sequence[str] = ("png", "pdf")) -> Plots:
    """Draw every figure the Results support into ``out``; say why the others are missing."""
    import matplotlib

    ensure_writable_dir(out)
    result = Plots()
    look = styles(grid.models)
    with matplotlib.rc_context(STYLE):
        for protocol in grid.protocols:
            _verification(grid, protocol, look, out, formats, result)
            _identification(grid, protocol, look, out, formats, result)
            _operational(grid, protocol, look, out, formats, result)
            _restoration(grid, protocol, out, formats, result)
    return result


def _plain(text: str) -> str:
    """Text from Results shown as is: a '$' would start matplotlib mathtext (and may fail)."""
    return text.replace("$", r"\$")


def _figure(size: tuple[float, float], margins: tuple[float, float, float, float] = AXES,
            wspace: float = 0.2, hspace: float = 0.75) -> Any:
    """A figure with fixed margins (left, right, bottom, top) in inches: fixed layouts are
    several times faster to draw than constrained ones and keep every plot aligned."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    left, right, bottom, top = margins
    fig.subplots_adjust(left=left / size[0], right=1 - right / size[0], bottom=bottom / size[1],
                        top=1 - top / size[1], wspace=wspace, hspace=hspace)
    return fig


def _save(fig: Any, out: Path, stem: str, formats: Sequence[str]) -> dict[str, Path]:
    files = {}
    for fmt in formats:
        files[fmt] = out / f"{stem}.{fmt}"
        fig.savefig(files[fmt], format=fmt, metadata=METADATA.get(fmt))
    return files


def _legend_outside(fig: Any, ax: Any) -> None:
    """The legend to the right of the axes, off the data: the figure widens by the legend's
    width and every axes keeps its size and place."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    gap = LEGEND_GAP / (ax.get_position().width * fig.get_figwidth())  # in axes widths
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.0 + gap, 1.0), frameon=False,
                       borderaxespad=0.0, handlelength=3.0)
    renderer = FigureCanvasAgg(fig).get_renderer()
    extra = legend.get_window_extent(renderer).width / fig.dpi + LEGEND_GAP + 0.05
    width = fig.get_figwidth()
    fig.set_size_inches(width + extra, fig.get_figheight())
    for axes in fig.axes:
        box = axes.get_position()
        axes.set_position([box.x0 * width / (width + extra), box.y0,
                           box.width * width / (width + extra), box.height])


def _by_condition(run: Run, condition: str) -> tuple[np.ndarray, np.ndarray] | None:
    table = run.scores()
    table = None if table is None else table.of_condition(condition)
    if table is None or not 0 < table.labels.sum() < table.labels.size:
        return None
    return table.scores, table.labels


def _verification(grid: Grid, protocol: ProtocolKey, look: dict[str, dict[str, Any]],
                  out: Path, formats: Sequence[str], result: Plots) -> None:
    label, slug = grid.label(protocol), grid.slug(protocol)
    conditions = dict.fromkeys(c.condition for c in grid.columns
                               if c.protocol == protocol and c.metric.task == "verification")
    for cond in conditions:
        data = {m: d for m in grid.models if (run := grid.run(m, protocol))
                and (d := _by_condition(run, cond)) is not None}
        if not data:
            result.notes.append(f"ROC, DET and histograms for {label} {cond}: no score file "
                                "with both genuine and impostor pairs.")
            continue
        curves = {m: roc(scores, labels) for m, (scores, labels) in data.items()}
        for kind, draw in (("roc", _roc), ("det", _det)):
            fig = _figure(SIZE)
            ax = fig.add_subplot()
            draw(ax, curves, look)
            _legend_outside(fig, ax)
            fig.suptitle(_plain(f"{kind.upper()} · {label} · {cond}"))
            result.plots.append(Plot(kind, label, cond,
                                     _save(fig, out, f"{kind}__{slug}__{cond}", formats)))
        fig = _figure(histogram_size(len(data)), (0.15, 0.1, 0.45, 0.7), 0.08)
        _histograms(fig, data)
        fig.suptitle(_plain(f"Genuine and impostor scores · {label} · {cond}"))
        result.plots.append(Plot("hist", label, cond,
                                 _save(fig, out, f"hist__{slug}__{cond}", formats)))
        _families(grid, protocol, cond, look, out, formats, result)


def _roc(ax: Any, curves: dict[str, Any], look: dict[str, dict[str, Any]]) -> None:
    floor = 1.0
    for model, curve in curves.items():
        keep = curve.far > 0
        ax.plot(curve.far[keep], 100 * curve.tar[keep], drawstyle="steps-post",
                label=_plain(model), **look[model])
        floor = min(floor, 1.0 / curve.n_impostor)
    ax.set_xscale("log")
    ax.set_xlim(10 ** math.floor(math.log10(floor)), 1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR, %)")


def _det(ax: Any, curves: dict[str, Any], look: dict[str, dict[str, Any]]) -> None:
    """FRR against FAR on normal-deviate axes (probit of each rate, ticks in %), the DET
    convention of bob.measure and NIST: Gaussian score distributions give straight lines.
    Both axes run from the decade below the finest resolution of the data (one error in the
    larger of the genuine and impostor sets; at most 1%) to its mirror image; the dotted line
    is FAR = FRR."""
    from scipy.stats import norm

    floor = 1.0
    for model, curve in curves.items():
        frr = 1.0 - curve.tar
        keep = (curve.far > 0) & (frr > 0)
        ax.plot(norm.ppf(curve.far[keep]), norm.ppf(frr[keep]), drawstyle="steps-post",
                label=_plain(model), **look[model])
        floor = min(floor, 1.0 / curve.n_impostor, 1.0 / curve.n_genuine)
    low = min(0.01, 10 ** math.floor(math.log10(floor)))
    span = norm.ppf([low, 1 - low])
    ticks = [t for t in DET_TICKS if low <= t <= 1 - low]
    labels = [f"{100 * t:g}%" for t in ticks]
    ax.plot(span, span, color="0.6", linewidth=0.6, linestyle=":", zorder=0)
    ax.set_xticks(norm.ppf(ticks), labels)
    ax.set_yticks(norm.ppf(ticks), labels)
    ax.set_xlim(*span)
    ax.set_ylim(*span)
    ax.tick_params(labelsize=6.5)
    ax.set_xlabel("False accept rate (FAR, normal deviate scale)")
    ax.set_ylabel("False reject rate (FRR, normal deviate scale)")


def _histograms(fig: Any, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    cols = min(3, len(data))
    rows = math.ceil(len(data) / cols)
    everything = np.concatenate([s for s, _ in data.values()])
    bins = np.linspace(everything.min(), everything.max(), 41)
    for i, (model, (scores, labels)) in enumerate(data.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.hist(scores[labels], bins=bins, density=True, alpha=0.6, color=OKABE_ITO[3],
                label="genuine")
        ax.hist(scores[~labels], bins=bins, density=True, alpha=0.6, color=OKABE_ITO[4],
                label="impostor")
        ax.set_title(_plain(model))
        ax.set_xlabel("score")
        ax.set_yticks([])
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="upper center", ncols=2,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.28 / fig.get_figheight()))


def _families(grid: Grid, protocol: ProtocolKey, cond: str, look: dict[str, dict[str, Any]],
              out: Path, formats: Sequence[str], result: Plots) -> None:
    """EER per occluder family of the probe (Result ``metrics.verification_by_family``)."""
    label = grid.label(protocol)
    found = {m: fam for m in grid.models if (run := grid.run(m, protocol))
             and (section := VERIFICATION.read(run.result["metrics"]))
             and (fam := section.by_family.get(cond))}
    if not found:
        result.notes.append(f"Per-occluder-family bars for {label} {cond}: skipped, no Result "
                            "carries metrics.verification_by_family for this condition.")
        return
    families = sorted({f for fam in found.values() for f in fam})
    width = 0.8 / len(found)
    fig = _figure(SIZE)
    ax = fig.add_subplot()
    for i, (model, fam) in enumerate(found.items()):
        x = np.arange(len(families)) + (i - (len(found) - 1) / 2) * width
        values, errors = [], [[], []]
        for f in families:
            eer = fam[f].values.get("eer") or {} if f in fam else {}
            v, ci = eer.get("value"), eer.get("ci95")
            values.append(np.nan if v is None else 100 * v)
            errors[0].append(0 if v is None or ci is None else 100 * (v - ci[0]))
            errors[1].append(0 if v is None or ci is None else 100 * (ci[1] - v))
        ax.bar(x, values, width, yerr=errors, capsize=2, label=_plain(model),
               color=look[model]["color"], edgecolor="black", linewidth=0.4)
    ax.set_xticks(np.arange(len(families)), [_plain(f) for f in families])
    ax.set_ylabel("EER (%), whiskers: 95% CI")
    ax.set_xlabel("occluder family of the probe")
    _legend_outside(fig, ax)
    fig.suptitle(_plain(f"EER by occluder family · {label} · {cond}"))
    slug = grid.slug(protocol)
    result.plots.append(Plot("families", label, cond,
                             _save(fig, out, f"families__{slug}__{cond}", formats)))


def _identification(grid: Grid, protocol: ProtocolKey, look: dict[str, dict[str, Any]],
                    out: Path, formats: Sequence[str], result: Plots) -> None:
    found = {m: section.values for m in grid.models if (run := grid.run(m, protocol))
             and (section := IDENTIFICATION.read(run.result["metrics"])) and section.ok}
    if not found:
        return
    label, slug = grid.label(protocol), grid.slug(protocol)
    draws: list[tuple[str, str, Callable[[Any], None]]] = [
        ("cmc", "CMC", lambda ax: _cmc(ax, found, look))]
    if any(i["dir_at_fpir"] for i in found.values()):
        draws.append(("dir", "DIR vs FPIR", lambda ax: _dir(ax, found, look)))
    for kind, title, draw in draws:
        fig = _figure(SIZE)
        ax = fig.add_subplot()
        draw(ax)
        _legend_outside(fig, ax)
        fig.suptitle(_plain(f"{title} · {label}"))
        result.plots.append(Plot(kind, label, "identification",
                                 _save(fig, out, f"{kind}__{slug}", formats)))


def _cmc(ax: Any, found: dict[str, dict[str, Any]], look: dict[str, dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    for model, ident in found.items():
        ranks = np.arange(1, len(ident["cmc"]) + 1)
        ax.plot(ranks, 100 * np.asarray(ident["cmc"]), marker="o", markersize=2.5,
                label=_plain(model), **look[model])
    ax.set_ylim(0, 100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate (%)")


def _dir(ax: Any, found: dict[str, dict[str, Any]], look: dict[str, dict[str, Any]]) -> None:
    for model, ident in found.items():
        points = ident["dir_at_fpir"]
        if not points:
            continue
        x = np.array([p["fpir_target"] for p in points])
        y = np.array([100 * p["dir"] for p in points])
        cis = ident.get("ci95", {}).get("dir_at_fpir") or [None] * len(points)
        err = np.array([[0, 0] if ci is None else [y[i] - 100 * ci[0], 100 * ci[1] - y[i]]
                        for i, ci in enumerate(cis)]).T
        ax.errorbar(x, y, yerr=err, marker="o", markersize=3, capsize=2, label=_plain(model),
                    **look[model])
    ax.set_xscale("log")
    ax.set_ylim(0, min(100.0, max(5.0, 1.15 * ax.get_ylim()[1])))
    ax.set_xlabel("False positive identification rate (FPIR target)")
    ax.set_ylabel("Detection and identification rate (DIR, %)")


def _operational(grid: Grid, protocol: ProtocolKey, look: dict[str, dict[str, Any]],
                 out: Path, formats: Sequence[str], result: Plots) -> None:
    """FNMR with its 95% interval per condition and occluder family (rows) at each FMR target's
    threshold on UMR-UMP impostors (panels); a hollow dot is a threshold resting on fewer than
    10 false matches (†). Results without an operational section draw nothing."""
    found = {m: section.values["operating_points"] for m in grid.models
             if (run := grid.run(m, protocol))
             and (section := OPERATIONAL.read(run.result["metrics"])) and section.ok}
    if not found:
        return
    targets = sorted({p["target"] for points in found.values() for p in points}, reverse=True)
    rows = list(dict.fromkeys(c for points in found.values() for p in points
                              for c, _ in entries(p)))
    fig = _figure(operational_size(len(targets), len(rows), len(found)), OPERATIONAL_AXES, 0.15)
    axes = [fig.add_subplot(1, len(targets), i + 1) for i in range(len(targets))]
    step = 0.7 / len(found)
    for ax, target in zip(axes, targets, strict=True):
        for i, (model, points) in enumerate(found.items()):
            point = next((p for p in points if p["target"] == target), None)
            if point is None:
                continue
            y, x, err = [], [], [[], []]
            for cond, entry in entries(point):
                fnmr = entry["fnmr"]
                if fnmr["value"] is None:
                    continue
                v, ci = 100 * fnmr["value"], fnmr["ci95"]
                y.append(rows.index(cond) + (i - (len(found) - 1) / 2) * step)
                x.append(v)
                err[0].append(0 if ci is None else v - 100 * ci[0])
                err[1].append(0 if ci is None else 100 * ci[1] - v)
            colour = look[model]["color"]
            ax.errorbar(x, y, xerr=err, fmt="o", markersize=3.5, capsize=1.5, elinewidth=0.9,
                        color=colour, markerfacecolor=colour if point["reliable"] else "white",
                        label=_plain(model))
        ax.set_yticks(range(len(rows)), [_plain(r) for r in rows] if ax is axes[0] else [])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(f"FMR = {sci(target)}")
        ax.set_xlabel("FNMR (%)")
    right = min(100.0, max(5.0, 1.1 * max(ax.get_xlim()[1] for ax in axes)))
    for ax in axes:  # one scale for every panel
        ax.set_xlim(0, right)
    _legend_outside(fig, axes[-1])
    label = grid.label(protocol)
    fig.suptitle(_plain(f"FNMR at UMR-UMP impostor thresholds · {label} · hollow: † "
                        f"(< {MIN_FALSE_MATCHES} false matches)"))
    result.plots.append(Plot("operational", label, "operational",
                             _save(fig, out, f"operational__{grid.slug(protocol)}", formats)))


def _restoration(grid: Grid, protocol: ProtocolKey, out: Path, formats: Sequence[str],
                 result: Plots) -> None:
    """Masked input | each model's restoration | ground truth, for the Result's samples; each
    restorer's header says what it was given (:attr:`Run.restorer_given`)."""
    label = grid.label(protocol)
    runs = [r for m in grid.models if (r := grid.run(m, protocol))
            and (section := RESTORATION.read(r.result["metrics"])) and section.ok]
    if not runs:
        return
    samples = {r.model: found for r in runs if (found := r.samples()) is not None}
    if not samples:
        result.notes.append(f"Restoration grid for {label}: skipped, no restoration samples "
                            "archive (files.restoration_samples) lies next to its Results.")
        return
    first = next(iter(samples.values()))
    keys = first["keys"]
    models = [m for m, s in samples.items() if np.array_equal(s["keys"], keys)]
    fig = _figure(restoration_grid_size(len(models), len(keys)), (0.02, 0.02, 0.4, 0.35),
                  0.04, 0.04)
    columns = [("masked input", first["masked"])] + [
        (f"{m}\n{grid.run(m, protocol).restorer_given}", samples[m]["restored"])
        for m in models]
    columns.append(("ground truth", first["truth"]))
    for row in range(len(keys)):
        for col, (name, images) in enumerate(columns):
            ax = fig.add_subplot(len(keys), len(columns), row * len(columns) + col + 1)
            ax.imshow(images[row])
            ax.set_axis_off()
            if row == 0:
                ax.set_title(_plain(name), fontsize=5.5)
    fig.text(0.5, 0.02 / fig.get_figheight(), RESTORATION_CAPTION, ha="center", va="bottom",
             fontsize=5.5, wrap=True)
    slug = grid.slug(protocol)
    result.plots.append(Plot("restoration", label, "restoration",
                             _save(fig, out, f"restoration__{slug}", formats)))
    left = sorted(set(samples) - set(models))
    if left:
        result.notes.append(f"Restoration grid for {label}: {', '.join(left)} left out, their "
                            "samples are other images than the first model's.")
