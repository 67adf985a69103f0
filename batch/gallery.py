"""``OUT/index.html``: every asset's contact sheet with its figures, sortable, one self-contained file.

Rewritten (to a temporary name, then renamed) as results come in, so a browser never reads half a
page. The score is the held-out line F-score when the batch ran with ``--evaluate``; without it the
cards sort by held-out loss (lower first) instead.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import time

from . import index

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SplatSketch batch: {title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} .sub {{ color: #666; margin-bottom: 16px; }}
.bar {{ display: flex; gap: 8px; align-items: center; margin-bottom: 16px; flex-wrap: wrap; }}
.bar button {{ border: 1px solid #bbb; background: #fff; border-radius: 4px; padding: 4px 10px; cursor: pointer; }}
.bar button.on {{ background: #222; color: #fff; border-color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }}
.card {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; }}
.card img {{ width: 100%; display: block; background: #fff; border-bottom: 1px solid #eee; }}
.card .none {{ height: 120px; display: flex; align-items: center; justify-content: center; color: #a33;
  background: #fff5f5; border-bottom: 1px solid #eee; padding: 0 12px; text-align: center; }}
.meta {{ padding: 8px 10px; }} .name {{ font-weight: 600; word-break: break-all; }}
.figs {{ color: #444; font-variant-numeric: tabular-nums; }} .score {{ font-size: 18px; font-weight: 600; }}
.st {{ display: inline-block; border-radius: 3px; padding: 0 6px; font-size: 12px; color: #fff; }}
.st.ok {{ background: #2a7d3b; }} .st.failed, .st.crashed {{ background: #b23a3a; }}
.st.partial, .st.timeout {{ background: #b27a1a; }}
a {{ color: #245; }}
</style></head><body>
<h1>SplatSketch batch: {title}</h1>
<div class="sub">{summary} &middot; updated {updated}</div>
<div class="bar">Sort by:
<button data-key="score" class="on">score</button><button data-key="name">name</button>
<button data-key="seconds">time</button><button data-key="status">status</button></div>
<div class="grid" id="grid"></div>
<script>
const rows = {rows};
const grid = document.getElementById("grid");
const ENTITIES = {{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}};
function esc(s) {{ return String(s).replace(/[&<>"]/g, c => ENTITIES[c]); }}
function card(r) {{
  const img = `<img loading="lazy" src="${{esc(r.sheet)}}" alt="${{esc(r.name)}}">`;
  const pic = r.sheet ? `<a href="${{esc(r.sheet)}}">${{img}}</a>`
                      : `<div class="none">${{esc(r.reason || "no picture")}}</div>`;
  const score = r.score === null ? "" : `<span class="score">${{esc(r.score_label)}} ${{r.score.toFixed(3)}}</span> `;
  const links = r.blend ? ` &middot; <a href="${{esc(r.blend)}}">.blend</a>`
                          + ` &middot; <a href="${{esc(r.metrics)}}">metrics</a>` : "";
  const log = r.log ? ` &middot; <a href="${{esc(r.log)}}">log</a>` : "";
  return `<div class="card">${{pic}}<div class="meta"><div class="name">${{esc(r.name)}}</div>
    <div>${{score}}<span class="st ${{esc(r.status)}}">${{esc(r.status)}}</span>
    ${{r.seconds.toFixed(0)}} s${{links}}${{log}}</div>
    <div class="figs">${{esc(r.figures)}}</div></div></div>`;
}}
function show(key) {{
  const sorted = rows.slice().sort((a, b) => {{
    if (key === "name") return a.name.localeCompare(b.name);
    if (key === "seconds") return b.seconds - a.seconds;
    if (key === "status") return a.status.localeCompare(b.status) || a.name.localeCompare(b.name);
    if (a.score === null || b.score === null) return (a.score === null) - (b.score === null);
    return a.higher_better ? b.score - a.score : a.score - b.score;
  }});
  grid.innerHTML = sorted.map(card).join("");
  document.querySelectorAll(".bar button").forEach(b => b.classList.toggle("on", b.dataset.key === key));
}}
document.querySelectorAll(".bar button").forEach(b => b.onclick = () => show(b.dataset.key));
show("score");
</script></body></html>
"""


def _num(value, fmt: str) -> str:
    """A figure as text; anything but a number (a hand-edited index) shows as a dash."""
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _row(record: dict) -> dict:
    metrics, outputs = record.get("metrics") or {}, record.get("outputs", {})
    scored = index.score(record)
    label, score, higher = scored if scored else ("", None, True)
    if label == "F":
        figures = (f"worst view {_num(metrics.get('f_min'), '.2f')}, "
                   f"chamfer {_num(metrics.get('chamfer_px_mean'), '.1f')} px"
                   + (f", {metrics['looping_strokes']} looping" if "looping_strokes" in metrics else ""))
    else:
        figures = str(((record.get("assets") or [{}])[0]).get("summary", ""))
    return {"name": os.path.basename(record.get("source", record["asset"])), "status": record.get("status", "?"),
            "reason": record.get("reason", ""), "seconds": float(record.get("seconds") or 0), "score": score,
            "score_label": label, "higher_better": higher, "figures": figures,
            "sheet": outputs.get("sheet"), "blend": outputs.get("blend"), "metrics": outputs.get("metrics"),
            "log": record.get("log")}


def write(out: str, records: list[dict]) -> str:
    """Write the page; on a full disk the temporary file goes and the OSError is raised (the previous
    page stays as it was)."""
    rows = [_row(r) for r in records if r.get("status") != index.RENAMED]
    counts = {status: sum(r["status"] == status for r in rows) for status in dict.fromkeys(r["status"] for r in rows)}
    others = ", ".join(f"{n} {status}" for status, n in counts.items() if status != "ok")
    summary = f"{len(rows)} assets: {counts.get('ok', 0)} sketched" + (f", {others}" if others else "")
    page = PAGE.format(title=html.escape(os.path.basename(os.path.abspath(out))), summary=summary,
                       updated=time.strftime("%Y-%m-%d %H:%M"),
                       rows=json.dumps(rows).replace("</", "<\\/"))
    path = os.path.join(out, "index.html")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path
