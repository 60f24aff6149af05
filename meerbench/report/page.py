"""The static HTML leaderboard: one self-contained file (inline CSS and JavaScript, no network).

Column headers sort the rows (best first, then reversed; ties by model name, missing values
always last); selects filter the columns by protocol, condition and metric; each row carries its
provenance.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from meerbench.report.tables import BOLD_LEGEND
from meerbench.tasks import DAGGER, DAGGER_LEGEND, PM_LEGEND

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin-top:1.6em}
form{display:flex;gap:1.2em;margin:.8em 0;flex-wrap:wrap}select{font:inherit}
.scroll{overflow:auto;max-height:80vh;border:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:.3em .55em;border-bottom:1px solid #ddd}
thead th{position:sticky;top:0;background:#f4f4f4;vertical-align:bottom;cursor:pointer;
text-align:right;white-space:nowrap}thead th:nth-child(-n+2){text-align:left}
thead th span{display:block;font-weight:normal;font-size:.85em;color:#555}
thead th span.m{font-weight:bold;color:#1b1b1b;font-size:1em}
th[aria-sort=descending]::after{content:" \\25BC"}th[aria-sort=ascending]::after{content:" \\25B2"}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td:nth-child(2){text-align:left;font-weight:600}td.prov{text-align:left;font-size:.85em}
tbody tr:nth-child(even){background:#fafafa}td.best{font-weight:700;color:#0072B2}
td.missing{color:#999}details table td,details table th{font-size:.9em;text-align:left;
position:static;background:none;cursor:auto}.notes li{color:#444}
"""

JS = """
(function () {
  const table = document.getElementById("board");
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  function key(row, i) {
    const v = row.cells[i].dataset.value;
    return v === undefined || v === "" ? null : v;
  }
  function sortBy(th) {
    const i = th.cellIndex, kind = th.dataset.better;
    const best = th.dataset.order !== "best";
    heads.forEach(h => { h.removeAttribute("aria-sort"); delete h.dataset.order; });
    th.dataset.order = best ? "best" : "worst";
    let up = kind === "lower" || kind === "text";
    if (!best) up = !up;
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a, i), y = key(b, i);
      if (x === null || y === null) return (x === null) - (y === null);
      const d = kind === "text" ? x.localeCompare(y) : Number(x) - Number(y);
      return d ? (up ? d : -d) : a.dataset.model.localeCompare(b.dataset.model);
    });
    rows.forEach(r => body.appendChild(r));
  }
  heads.forEach(th => { if (th.dataset.better) th.addEventListener("click", () => sortBy(th)); });
  const selects = Array.from(document.querySelectorAll("#filters select"));
  function filter() {
    const want = {};
    selects.forEach(s => { want[s.dataset.field] = s.value; });
    document.querySelectorAll("[data-protocol]").forEach(el => {
      el.hidden = Object.keys(want).some(f => want[f] && el.dataset[f] !== undefined &&
                                                el.dataset[f] !== want[f]);
    });
  }
  selects.forEach(s => s.addEventListener("change", filter));
})();
"""


def leaderboard_html(board: dict[str, Any]) -> str:
    """The leaderboard page from ``leaderboard.json`` data."""
    columns, aggs = board["columns"], board["aggregates"]
    head = ['<th data-better="lower" title="competition ranking; unranked last">Rank</th>',
            '<th data-better="text">Model</th>']
    head += [f'<th data-better="{"higher" if a["higher_is_better"] else "lower"}">'
             f'<span>all</span><span class="m">{escape(a["label"])} (%)</span></th>'
             for a in aggs]
    for c in columns:
        unit = f' ({escape(c["unit"])})' if c["unit"] else ""
        better = "higher" if c["higher_is_better"] else "lower"
        head.append(f'<th {_where(c)} data-better="{better}"'
                    f' title="{escape(c["key"])}"><span>{escape(c["protocol_label"])}</span>'
                    f'<span>{escape(c["condition"])}</span>'
                    f'<span class="m">{escape(c["label"])}{unit}</span></th>')
    head.append("<th>Provenance</th>")
    rows = [_row(board, m) for m in board["models"]]
    ranked = escape(ranking_note(board)) if aggs else "No aggregate to rank by."
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>meerbench leaderboard</title><style>{CSS}</style></head><body>\n"
        f"<h1>meerbench leaderboard</h1>\n<p>{ranked} Click a column header to sort (best "
        "first, click again to reverse). Hover a value for its 95% interval and rule.</p>\n"
        f"{_filters(columns)}\n"
        f'<div class="scroll"><table id="board"><thead><tr>{"".join(head)}</tr></thead>\n'
        "<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n"
        + _plots(board) + _notes(board) + f"<script>{JS}</script>\n</body></html>\n"
    )


def ranking_note(board: dict[str, Any]) -> str:
    """How the first aggregate ranks (plain text, for the page and ``leaderboard.md``):
    over how many distinct columns, and which repeated columns count once."""
    first = board["aggregates"][0]
    names = {c["key"]: f'{c["protocol_label"]} {c["condition"]}' for c in board["columns"]}
    repeats = "; ".join(f"{names[r]} repeats {names[k]}" for r, k in first["repeats"].items())
    once = f" ({repeats}: same images and pairs, counted once)" if repeats else ""
    label = first["label"][0].lower() + first["label"][1:]
    lower = "" if first["higher_is_better"] else " (lower is better)"
    return (f"Ranked by {label}{lower} over {len(first['columns'])} distinct "
            f"(protocol, condition) columns{once}, each protocol's newest version; a model "
            "without a value in every one of them is not ranked.")


def _where(c: dict[str, Any]) -> str:
    return (f'data-protocol="{escape(c["protocol_label"])}" '
            f'data-condition="{escape(c["condition"])}" data-metric="{escape(c["label"])}"')


def _filters(columns: list[dict[str, Any]]) -> str:
    parts = ['<form id="filters">']
    for field, title, source in (("protocol", "Protocol", "protocol_label"),
                                 ("condition", "Condition", "condition"),
                                 ("metric", "Metric", "label")):
        options = "".join(f'<option value="{escape(v)}">{escape(v)}</option>'
                          for v in dict.fromkeys(c[source] for c in columns))
        parts.append(f'<label>{title} <select id="filter-{field}" data-field="{field}">'
                     f'<option value="">all</option>{options}</select></label>')
    return "".join(parts) + "</form>"


def _row(board: dict[str, Any], m: dict[str, Any]) -> str:
    labels = {c["key"]: f'{c["protocol_label"]} {c["condition"]} {c["label"]}'
              for c in board["columns"]}
    cells = [f'<td data-value="{m["rank"] or ""}">{m["rank"] or "–"}</td>',
             f'<td data-value="{escape(m["model"])}">{escape(m["model"])}</td>']
    for a in board["aggregates"]:
        entry = m["aggregates"][a["key"]]
        if entry["value"] is None:
            missing = "; ".join(labels.get(k, k) for k in entry["missing"])
            cells.append(f'<td class="missing" data-value="" title="not ranked, no value for: '
                         f'{escape(missing)}">incomplete</td>')
        else:
            cells.append(f'<td data-value="{entry["value"]!r}">{100 * entry["value"]:.2f}</td>')
    for c in board["columns"]:
        cells.append(_cell(c, m["cells"].get(c["key"])))
    cells.append(f'<td class="prov">{_provenance(m["provenance"])}</td>')
    return f'<tr data-model="{escape(m["model"])}">' + "".join(cells) + "</tr>"


def _cell(c: dict[str, Any], cell: dict[str, Any] | None) -> str:
    where = _where(c)
    if cell is None or cell["value"] is None:
        why = "no Result" if cell is None else cell.get("note") or "not measured"
        text = "–" if cell is None else "n/a"
        return f'<td class="missing" {where} data-value="" title="{escape(why)}">{text}</td>'
    value, ci = cell["value"], cell["ci95"]
    text = f'{c["scale"] * value:.{c["digits"]}f}'
    title = []
    if ci:
        half = max(value - ci[0], ci[1] - value)
        text += f' ± {c["scale"] * half:.{c["digits"]}f}'
        title.append(f'95% CI [{c["scale"] * ci[0]:.{c["digits"]}f}, '
                     f'{c["scale"] * ci[1]:.{c["digits"]}f}]')
    if not cell["reliable"]:
        text += DAGGER
    if cell.get("note"):
        title.append(cell["note"])
    klass = ' class="best"' if cell["best"] else ""
    return (f'<td{klass} {where} data-value="{value!r}" title="{escape("; ".join(title))}">'
            f"{escape(text)}</td>")


def _provenance(entries: list[dict[str, Any]]) -> str:
    weights = list(dict.fromkeys((e["weights_sha256"] or "–")[:12] for e in entries))
    contract = entries[0]["contract"] or {}
    size = "x".join(str(v) for v in contract.get("input_size", []))
    summary = (f'{escape(size)} {escape(str(contract.get("channels", "")))} '
               f'{escape(str(contract.get("alignment", "")))}, weights '
               + escape(", ".join(weights)))
    rows = "".join(
        f'<tr><td>{escape(e["protocol"])} v{e["version"]} ({escape(e["protocol_sha256"][:8])})'
        f'</td><td>{escape((e["weights_sha256"] or "–")[:16])}</td>'
        f'<td>{escape(str(e["date"]))}</td><td>{escape(str(e["meerbench_version"]))} '
        f'{escape((e["git_commit"] or "–")[:10])}</td>'
        f'<td>{escape(str(e["device"]))} {escape(str(e["precision"]))}</td></tr>'
        for e in entries)
    return (f"<details><summary>{summary}</summary><table><tr><th>Protocol</th><th>Weights</th>"
            f"<th>Date</th><th>meerbench</th><th>Device</th></tr>{rows}</table></details>")


def _plots(board: dict[str, Any]) -> str:
    if not board["plots"]:
        return ""
    items = []
    for p in board["plots"]:
        pdf = f' (<a href="{escape(quote(p["pdf"]))}">pdf</a>)' if "pdf" in p else ""
        items.append(f'<li data-protocol="{escape(p["protocol"])}" '
                     f'data-condition="{escape(p["condition"])}">{escape(p["protocol"])} · '
                     f'<a href="{escape(quote(p["png"]))}">{escape(p["kind"])} '
                     f'{escape(p["condition"])}</a>{pdf}</li>')
    return '<h2>Plots</h2>\n<ul id="plots">' + "".join(items) + "</ul>\n"


def _notes(board: dict[str, Any]) -> str:
    notes = [f"{PM_LEGEND}.", f"{DAGGER_LEGEND}.", BOLD_LEGEND, *board["notes"]]
    return '<h2>Notes</h2>\n<ul class="notes">' + "".join(
        f"<li>{escape(n)}</li>" for n in notes) + "</ul>\n"
