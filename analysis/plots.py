"""Plotly figures for the report and the app (reliability diagrams, coverage, threshold sweeps, failures), plus
PNG export: kaleido when it works (it needs a Chrome/Chromium), else a small built-in PIL renderer of the same
line data.

Every figure function takes plain dicts / dataclasses from ``evaluate_run`` and is cheap to call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

__all__ = [
    "reliability_figure",
    "coverage_figure",
    "sweep_figure",
    "failures_figure",
    "save_figure",
]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _layout(fig: go.Figure, title: str, xlabel: str, ylabel: str, square: bool = False) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white",
                      width=560 if square else 720, height=520 if square else 440,
                      legend=dict(x=0.02, y=0.98, bgcolor="rgba(255,255,255,0.7)"))
    return fig


def _centers(edges) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    return (e[:-1] + e[1:]) / 2


def reliability_figure(curves: dict[str, dict], title: str = "Presence reliability") -> go.Figure:
    """Reliability diagram. curves: name -> ``Reliability.to_dict()`` (edges, confidence, frequency, count, ece)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated",
                             line=dict(dash="dash", color="gray")))
    for i, (name, d) in enumerate(curves.items()):
        conf = np.array([np.nan if v is None else v for v in d["confidence"]], float)
        freq = np.array([np.nan if v is None else v for v in d["frequency"]], float)
        ok = np.isfinite(conf) & np.isfinite(freq)
        fig.add_trace(go.Scatter(x=conf[ok], y=freq[ok], mode="lines+markers",
                                 name=f"{name} (ECE {d['ece']:.3f})", line=dict(color=_COLORS[i % 6]),
                                 customdata=np.asarray(d["count"])[ok],
                                 hovertemplate="confidence %{x:.2f}<br>frequency %{y:.2f}<br>n=%{customdata}"))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "predicted probability (bin mean)", "fraction inside the window", square=True)


def coverage_figure(curves: dict[str, dict], title: str = "Probability-map credible regions") -> go.Figure:
    """Coverage check: share of GT keypoints inside the p-credible region vs p. curves: name -> ``Coverage``
    dict (levels, hit_rate, ece, n)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated",
                             line=dict(dash="dash", color="gray")))
    for i, (name, d) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=d["levels"], y=d["hit_rate"], mode="lines+markers",
                                 name=f"{name} (err {d['ece']:.3f}, n={d['n']})", line=dict(color=_COLORS[i % 6])))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "credible mass p", "GT inside the p-region", square=True)


def sweep_figure(sweeps: dict[str, dict], title: str = "Keypoint threshold sweep") -> go.Figure:
    """mAP, Ex-mAP and presence error vs threshold; the optimum of each curve is marked. sweeps: name ->
    ``SweepResult.to_dict()``."""
    fig = go.Figure()
    for i, (name, d) in enumerate(sweeps.items()):
        t = np.asarray(d["thresholds"], float)
        for j, (key, label, best_fn) in enumerate((("ap", "mAP", np.nanargmax), ("ex_ap", "Ex-mAP", np.nanargmax),
                                                   ("presence_error", "presence error", np.nanargmin))):
            y = np.array([np.nan if v is None else v for v in d[key]], float)
            color = _COLORS[(i * 3 + j) % 6]
            prefix = f"{name} " if len(sweeps) > 1 else ""
            fig.add_trace(go.Scatter(x=t, y=y, mode="lines", name=prefix + label, line=dict(color=color)))
            if np.isfinite(y).any():
                b = int(best_fn(y))
                fig.add_trace(go.Scatter(x=[t[b]], y=[y[b]], mode="markers", showlegend=False,
                                         marker=dict(size=11, symbol="star", color=color),
                                         hovertemplate=f"{prefix}{label} optimum: t=%{{x:.2f}}, %{{y:.3f}}"))
    fig.add_vline(x=0.3, line_dash="dot", line_color="gray", annotation_text="0.3 (paper)")
    fig.update_xaxes(range=[0, 1])
    return _layout(fig, title, "keypoint (presence) threshold", "value")


def failures_figure(rows: list[dict], title: str = "Instances: OKS vs Ex-OKS") -> go.Figure:
    """Scatter of OKS vs Ex-OKS per instance (rows from ``failures_table``), hover shows the problems."""
    ok = [r for r in rows if r["oks"] is not None and r["exoks"] is not None]
    fig = go.Figure(go.Scatter(
        x=[r["oks"] for r in ok], y=[r["exoks"] for r in ok], mode="markers",
        marker=dict(color=[r["missed"] + r["hallucinated"] + r["swapped"] + r["far"] for r in ok],
                    colorscale="Reds", showscale=True, colorbar=dict(title="failures")),
        text=[f"image {r['image_id']} ann {r['ann_id']}<br>{r['problems'] or 'no failures'}" for r in ok],
        hovertemplate="OKS %{x:.3f}, Ex-OKS %{y:.3f}<br>%{text}", name="instances"))
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "OKS", "Ex-OKS", square=True)


# ----------------------------------------------------------------------------------------------- export


def _png_with_pil(fig: go.Figure, path: Path) -> None:
    """Render the line / marker traces of a figure with PIL (axes 0..1 x, auto y): a dependency-free fallback."""
    w, h = int(fig.layout.width or 720), int(fig.layout.height or 440)
    left, right, top, bottom = 60, 20, 40, 50
    im = Image.new("RGB", (w, h), "white")
    dr = ImageDraw.Draw(im)
    traces = [t for t in fig.data if isinstance(t, go.Scatter) and t.x is not None and len(t.x)]
    xs = np.concatenate([np.asarray(t.x, float) for t in traces]) if traces else np.array([0.0, 1.0])
    ys = np.concatenate([np.asarray(t.y, float) for t in traces]) if traces else np.array([0.0, 1.0])
    x0, x1 = (min(0.0, np.nanmin(xs)), max(1.0, np.nanmax(xs))) if np.isfinite(xs).any() else (0.0, 1.0)
    y0, y1 = (min(0.0, np.nanmin(ys)), max(1.0, np.nanmax(ys))) if np.isfinite(ys).any() else (0.0, 1.0)

    def px(x, y):
        return (left + (x - x0) / (x1 - x0 or 1) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0 or 1) * (h - top - bottom))

    dr.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        dr.text((px(xv, y0)[0] - 10, h - bottom + 5), f"{xv:.2f}", fill="black")
        dr.text((5, px(x0, yv)[1] - 5), f"{yv:.2f}", fill="black")
        dr.line([px(x0, yv), px(x1, yv)], fill=(230, 230, 230))
    title = fig.layout.title.text or ""
    dr.text((left, 10), title, fill="black")
    dr.text((w // 2 - 60, h - 20), fig.layout.xaxis.title.text or "", fill="black")
    ly = top + 5
    for i, t in enumerate(traces):
        color = (t.line.color if t.line and t.line.color else None) or \
            (t.marker.color if t.marker and isinstance(t.marker.color, str) else None) or _COLORS[i % 6]
        pts = [px(x, y) for x, y in zip(np.asarray(t.x, float), np.asarray(t.y, float), strict=True)
               if np.isfinite(x) and np.isfinite(y)]
        mode = t.mode or "lines"
        if "lines" in mode and len(pts) > 1:
            dr.line(pts, fill=color, width=2)
        if "markers" in mode:
            for p in pts:
                dr.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)
        if t.showlegend is not False and t.name:
            dr.line([(left + 10, ly + 6), (left + 30, ly + 6)], fill=color, width=3)
            dr.text((left + 35, ly), str(t.name), fill="black")
            ly += 14
    im.save(path)


def save_figure(fig: go.Figure, path_stem: str | Path, png: bool = True, engine: str = "auto") -> dict[str, str]:
    """Write ``<stem>.html`` (plotly.js from the CDN) and, if asked, ``<stem>.png``.

    engine: "auto" (kaleido, else PIL), "kaleido" or "pil". kaleido 1.x needs a Chrome/Chromium (~5 s start).

    Returns:
        {'html': path, 'png': path or '', 'png_engine': 'kaleido' | 'pil' | ''}.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    fig.write_html(html, include_plotlyjs="cdn")
    out = {"html": str(html), "png": "", "png_engine": ""}
    if png:
        p = stem.with_suffix(".png")
        if engine not in ("auto", "kaleido", "pil"):
            raise ValueError(f"engine must be 'auto', 'kaleido' or 'pil', got {engine!r}")
        try:
            if engine == "pil":
                raise RuntimeError("PIL renderer requested")
            fig.write_image(p)
            out.update(png=str(p), png_engine="kaleido")
        except Exception:
            if engine == "kaleido":
                raise  # kaleido missing, no Chrome, sandbox refusal: fall back to the simple renderer
            _png_with_pil(fig, p)
            out.update(png=str(p), png_engine="pil")
    return out
