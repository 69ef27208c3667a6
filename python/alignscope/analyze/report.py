"""The Semantic Sensitivity Maps report: one self-contained HTML page, clean images beside
poisoned ones, each with its map overlaid on one colour scale for all images (so a brighter
overlay means a more sensitive pixel, across images), plus the maps as ``sensitivity.npz``."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from alignscope.analyze.sensitivity import SensitivityResult


def heat_overlay(image: np.ndarray, heat: np.ndarray, top: float, alpha: float = 0.5):
    """``heat`` / ``top`` in a jet palette blended over ``image`` (same height and width)."""
    norm = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    # jet as piecewise-linear ramps, as evaluate.attention.overlay draws it
    colour = np.stack([np.clip(1.5 - np.abs(4 * norm - k), 0, 1) for k in (3.0, 2.0, 1.0)], -1)
    blended = (1 - alpha) * image.astype(np.float64) / 255.0 + alpha * colour
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def _png_uri(array: np.ndarray, scale: int) -> str:
    from PIL import Image

    picture = Image.fromarray(array)
    if scale > 1:  # small training images shown large enough to see, pixels kept sharp
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cells(result: SensitivityResult, rows: np.ndarray, top: float) -> list[str]:
    scale = max(1, 192 // result.images.shape[1])
    cells = []
    for i in rows:
        name = html.escape(result.ids[i])
        over = heat_overlay(result.images[i], result.maps[i], top)
        cells.append(
            f'<figure><img src="{_png_uri(result.images[i], scale)}" alt="{name}">'
            f'<img src="{_png_uri(over, scale)}" alt="{name} sensitivity">'
            f"<figcaption>{name}: mean {result.maps[i].mean():.4g}, max "
            f"{result.maps[i].max():.4g}</figcaption></figure>"
        )
    return cells


def write_sensitivity_report(result: SensitivityResult, out: str | Path) -> dict[str, Path]:
    """``sensitivity.html`` and ``sensitivity.npz`` (ids, poisoned, maps, latent_maps)."""
    from alignscope._files import atomic_path

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    top = float(result.maps.max()) if result.maps.size else 0.0
    clean = np.flatnonzero(~result.poisoned)
    poisoned = np.flatnonzero(result.poisoned)
    columns = []
    for title, rows in (("clean", clean), ("poisoned", poisoned)):
        mean = f"{result.maps[rows].mean():.4g}" if rows.size else "-"
        body = "".join(_cells(result, rows, top)) or "<p>none</p>"
        columns.append(
            f"<section><h2>{title} ({rows.size} images, mean sensitivity {mean})</h2>"
            f"{body}</section>"
        )
    t_low, t_high = result.timesteps
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Semantic Sensitivity Maps</title>
<style>body{{font-family:sans-serif;margin:1em}} main{{display:flex;gap:2em}}
section{{flex:1}} figure{{display:inline-block;margin:.3em}} figure img{{margin-right:2px}}
figcaption{{font-size:80%}}</style></head><body>
<h1>Semantic Sensitivity Maps</h1>
<p>Per pixel: how much the denoiser's prediction changes when the concept's embedding moves
(direction: {html.escape(result.direction)}), root mean square over {result.draws} draws of
timestep in [{t_low}, {t_high}) and noise. One colour scale for every image (max
{top:.4g}); each image is shown, then its map over it.</p>
<main>{"".join(columns)}</main></body></html>
"""
    paths = {"html": root / "sensitivity.html", "npz": root / "sensitivity.npz"}
    with atomic_path(paths["html"]) as tmp:
        Path(tmp).write_text(page)
    with atomic_path(paths["npz"]) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            ids=np.asarray(result.ids),
            poisoned=result.poisoned,
            maps=result.maps,
            latent_maps=result.latent_maps,
        )
    return paths
