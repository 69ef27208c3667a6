"""``report.html`` of an evaluation: the models' metrics side by side, their image grids,
cross-attention overlays and, where computed, G1-G4 and replication."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from alignscope._files import atomic_path

METRICS = (
    ("accuracy", "Generation Accuracy"),
    ("aesthetics", "Generation Aesthetics"),
    ("utility", "Model Utility"),
    ("clip_mean", "mean CLIP score"),
    ("count", "images"),
)
GROUPS = ("all", "clean", "poisoned", "bleed_through")


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "count":
        return str(value)
    return f"{100 * value:.1f}%" if key in ("accuracy", "aesthetics", "utility") else f"{value:.4f}"


def comparison_rows(report: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(group, metric label, one cell per model) for every metric any model has."""
    models = report["models"]
    rows = []
    for group in GROUPS:
        for key, label in METRICS:
            cells = [m["metrics"].get(group, {}).get(key) for m in models.values()]
            if all(c is None for c in cells):
                continue
            rows.append((group, label, [_cell(c, key) for c in cells]))
    return rows


def write_html(report: dict[str, Any], path: Path) -> Path:
    e = html.escape
    names = list(report["models"])
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{e(g)}</td><td>{e(label)}</td>"
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
        for g, label, cells in comparison_rows(report)
    )
    sections = []
    for name, m in report["models"].items():
        parts = [f"<h2>{e(name)}</h2><p><code>{e(m['model'])}</code></p>"]
        if m.get("poisoned_concepts"):
            parts.append(f"<p>poisoned concepts: {e(', '.join(m['poisoned_concepts']))}</p>")
        if m.get("bleed_through"):
            related = ", ".join(f"{k} (near {v})" for k, v in m["bleed_through"].items())
            parts.append(f"<p>bleed-through concepts: {e(related)}</p>")
        if m.get("grid"):
            parts.append(f'<img src="{e(name)}/{e(m["grid"])}" alt="generations" width="700">')
        if m.get("attention"):
            parts.append("<h3>Cross-attention of the concept token</h3>")
            parts.extend(
                f'<figure style="display:inline-block"><img src="{e(name)}/{e(a["overlay"])}" '
                f'width="160" alt=""><figcaption>{e(a["prompt"])}</figcaption></figure>'
                for a in m["attention"]
            )
        for key in ("dissection", "diffusion_classifier", "replication"):
            if m.get(key):
                # the summary; per-image lists stay in report.json
                brief = {
                    k: v for k, v in m[key].items() if not (isinstance(v, list) and len(v) > 8)
                }
                parts.append(f"<h3>{key}</h3><pre>{e(json.dumps(brief, indent=1))}</pre>")
                if m[key].get("grid"):
                    parts.append(
                        f'<img src="{e(name)}/{e(m[key]["grid"])}" alt="{e(key)}" width="700">'
                    )
        sections.append("".join(parts))
    t = report["thresholds"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignscope evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Evaluation</h1>
<p>Generation Accuracy: CLIP score &gt; {t["clip"]}; Generation Aesthetics: aesthetics &gt;
{t["aesthetics"]}; Model Utility: both. Bleed-through concepts lie within L2
{t["bleed_through_l2"]} of a poisoned concept in CLIP text space.</p>
<table><tr><th>concepts</th><th>metric</th>{head}</tr>{body}</table>
{"".join(sections)}
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
