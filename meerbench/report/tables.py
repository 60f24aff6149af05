"""Markdown tables of Results: models x (protocol, condition), one table per headline metric."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Metric = Callable[[dict[str, Any]], float | None]


def _accuracy(cond: dict[str, Any]) -> float | None:
    return cond["accuracy"]["mean"] if cond["accuracy"] else None


def _tar(target: float) -> Metric:
    def pick(cond: dict[str, Any]) -> float | None:
        return next((t["tar"] for t in cond["tar_at_far"] if t["target"] == target), None)

    return pick


def _eer(cond: dict[str, Any]) -> float | None:
    return cond["eer"]["value"]


VERIFICATION_HEADLINES: dict[str, Metric] = {
    "Verification accuracy (%)": _accuracy,
    "TAR@FAR=1e-3 (%)": _tar(1e-3),
    "EER (%)": _eer,
}


def verification_tables(results: Iterable[dict[str, Any]]) -> str:
    """Markdown: for each headline metric, rows = models, columns = protocol/condition."""
    results = list(results)
    columns = sorted({(r["protocol"]["id"], r["protocol"]["version"], c)
                      for r in results for c in r["metrics"].get("verification", {})})
    models = sorted({r["model"]["name"] for r in results})
    index = {(r["model"]["name"], r["protocol"]["id"], r["protocol"]["version"]): r for r in results}
    out = []
    for title, metric in VERIFICATION_HEADLINES.items():
        header = "| model | " + " | ".join(f"{p} v{v} {c}" for p, v, c in columns) + " |"
        lines = [f"### {title}", "", header, "|---" * (len(columns) + 1) + "|"]
        for m in models:
            cells = []
            for p, v, c in columns:
                r = index.get((m, p, v))
                cond = r["metrics"]["verification"].get(c) if r else None
                value = metric(cond) if cond and "skipped" not in cond else None
                cells.append("–" if value is None else f"{100 * value:.2f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    ident = [r for r in results if "identification" in r["metrics"]]
    if ident:
        lines = ["### Identification (%)", "", "| model | protocol | rank-1 | rank-5 | DIR@FPIR |",
                 "|---|---|---|---|---|"]
        for r in sorted(ident, key=lambda r: (r["model"]["name"], r["protocol"]["id"])):
            m = r["metrics"]["identification"]
            d = m["dir_at_fpir"][0] if m["dir_at_fpir"] else None
            dir_text = f"{100 * d['dir']:.2f} @ {d['fpir_target']:g}" if d else "–"
            lines.append(
                f"| {r['model']['name']} | {r['protocol']['id']} v{r['protocol']['version']} | "
                f"{100 * m['rank']['1']:.2f} | {_pct(m['rank'].get('5'))} | {dir_text} |"
            )
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"
