"""Plotly figures and numpy drawings of the app (keypoint maps, score bars, comparison panels, reliability and
sweep curves, CropCOCO cases). Plain functions: people / curves in, ``go.Figure`` or (H, W, 3) uint8 out."""

from __future__ import annotations

import base64
import copy
import functools

import cv2
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probpose.constants import KEYPOINT_NAMES
from probpose.inference import MAP_CHOICES as MAP_CHOICES_DH
from studio.models import has_presence
from studio.precomputed import pick
from studio.settings import DEFAULT_MASS

KEYPOINT_LABELS = [n.replace("_", " ") for n in KEYPOINT_NAMES]


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=260, xaxis_visible=False, yaxis_visible=False, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def scores_figure(person, threshold: float, kind: str = "probpose", title: str = "") -> go.Figure:
    """Per-keypoint presence / visibility / predicted-OKS bars (the baseline has only its heatmap peak)."""
    pres = np.asarray(person.presence, dtype=float)
    label = {"probpose": "presence P(in window)", "probpose_dh": "presence P(inside wide window)"}.get(
        kind, "heatmap peak (baseline 'presence')")
    colors = ["#2ca02c" if p >= threshold else "#d62728" for p in pres]
    bars = [go.Bar(x=KEYPOINT_LABELS, y=pres, name=label, marker_color=colors)]
    if has_presence(kind):
        bars.append(go.Bar(x=KEYPOINT_LABELS, y=np.asarray(person.visibility, dtype=float), name="visibility",
                           marker_color="#1f77b4"))
        bars.append(go.Bar(x=KEYPOINT_LABELS, y=np.asarray(person.oks, dtype=float), name="predicted OKS",
                           marker_color="#9467bd"))
    # the threshold line as add_hline draws it, given in the layout at once (add_hline alone costs ~20 ms)
    line = dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=threshold, y1=threshold,
                line=dict(dash="dash", color="black"))
    note = dict(text=f"threshold {threshold:.2f}", xref="x domain", x=1, xanchor="right", yref="y", y=threshold,
                yanchor="bottom", showarrow=False)
    return go.Figure(data=bars, layout=dict(
        barmode="group", height=320, yaxis_range=[0, 1.05], title=title or None, shapes=[line], annotations=[note],
        margin=dict(l=40, r=10, t=40 if title else 20, b=80), legend=dict(orientation="h", y=1.15)))


def crop_image(image: np.ndarray, center, scale) -> np.ndarray:
    from probpose.geometry import udp_warp_matrix, warp_image

    return warp_image(image, udp_warp_matrix(np.asarray(center), np.asarray(scale)))


def _map_axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # UDP: heatmap pixel j sits at crop pixel j * (192-1)/(W-1), so maps overlay the crop without resampling
    return np.arange(w) * (191.0 / (w - 1)), np.arange(h) * (255.0 / (h - 1))


def chosen_map(person, k: int) -> str:
    """"wide" when the ProbPose-DH merge took keypoint k from the wide map, else "expert" (every other model)."""
    return "wide" if person.is_dual and int(person.source[k]) == 1 else "expert"


def map_crop(person, which: str = "expert") -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of the UDP crop a map lies on: the activation window, or the DH wide window (its first / last
    map-pixel centres, as ``draw.warp_wide_map_to_image``)."""
    if which != "wide":
        return np.asarray(person.center, np.float64), np.asarray(person.scale, np.float64)
    win = np.asarray(person.wide_window, np.float64)
    return (win[:2] + win[2:]) / 2, win[2:] - win[:2]


def _to_crop(xy, center, scale) -> np.ndarray:
    """Image px -> px of the 192x256 UDP crop of (center, scale)."""
    c, s = np.asarray(center, np.float64), np.asarray(scale, np.float64)
    return (np.asarray(xy, np.float64) - (c - s / 2)) * np.array([191.0, 255.0]) / s


def image_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """(H,W,3) uint8 RGB -> a JPEG data URI: figures carry pictures as ~10 KB images, not as number lists."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def blend_map(crop: np.ndarray, z: np.ndarray, colormap: int, alpha: float) -> np.ndarray:
    """The crop (256,192,3) uint8 with map z (h,w) coloured by the OpenCV `colormap` (scaled to z's finite range,
    as a plotly heatmap) at opacity `alpha` where z is finite. Map cell j covers the crop pixels nearest to its UDP
    position j * (191 / (w - 1)), the cells a heatmap trace on ``_map_axes`` would draw."""
    h, w = z.shape
    ch, cw = crop.shape[:2]
    iy = np.rint(np.arange(ch) * (h - 1) / (ch - 1)).astype(int)
    ix = np.rint(np.arange(cw) * (w - 1) / (cw - 1)).astype(int)
    zz = np.asarray(z, np.float64)[iy][:, ix]
    valid = np.isfinite(zz)
    if not valid.any():
        return crop
    lo, hi = float(zz[valid].min()), float(zz[valid].max())
    u8 = np.clip((np.where(valid, zz, lo) - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(u8, colormap), cv2.COLOR_BGR2RGB)
    out = crop.copy()
    mixed = alpha * color.astype(np.float32) + (1 - alpha) * crop.astype(np.float32)
    out[valid] = np.rint(mixed[valid]).astype(np.uint8)
    return out


_REGION_COLOR = np.array([0, 200, 255], np.float32)  # "#00c8ff"


def _map_row(fig, row: int, crop: np.ndarray, pmap: np.ndarray, eoks: np.ndarray, mask: np.ndarray | None,
             marks) -> None:
    """One row of the keypoint panel: map and expected-OKS surface over the crop, then the credible region
    (``mask`` on the map grid) with ``marks`` = [(name, crop xy, marker dict)]. The three pictures are composed
    here and sent as JPEG images (a few 10 KB), the marks as plotly markers."""
    region = crop
    if mask is not None:
        in_region = _upsampled(mask, crop.shape[:2])
        region = crop.copy()
        region[in_region] = np.rint(0.45 * _REGION_COLOR + 0.55 * crop[in_region].astype(np.float32)).astype(np.uint8)
    pictures = (blend_map(crop, np.where(pmap > 0, pmap, np.nan), cv2.COLORMAP_HOT, 0.6),
                blend_map(crop, eoks, cv2.COLORMAP_VIRIDIS, 0.6), region)
    for col, picture in enumerate(pictures, 1):
        fig.add_trace(go.Image(source=image_uri(picture), hoverinfo="skip", **_axis_refs(row, col)))
    for name, xy, marker in marks:
        fig.add_trace(go.Scatter(x=[xy[0]], y=[xy[1]], mode="markers", name=name, marker=marker,
                                 **_axis_refs(row, 3)))


def _axis_refs(row: int, col: int) -> dict:
    """xaxis / yaxis names of panel (row, col) of a 3-column crop panel (make_subplots' numbering)."""
    n = (row - 1) * 3 + col
    return {"xaxis": f"x{'' if n == 1 else n}", "yaxis": f"y{'' if n == 1 else n}"}


@functools.lru_cache(maxsize=4)
def _panel_layout(rows: int, vertical_spacing: float | None) -> dict:
    """make_subplots' layout of a rows x 3 crop panel, axes hidden and locked to the 192x256 crop. Built once:
    plotly's subplot machinery and per-axis updates cost ~100 ms a figure, a copied dict almost nothing."""
    extra = {} if vertical_spacing is None else {"vertical_spacing": vertical_spacing}
    fig = make_subplots(rows=rows, cols=3, subplot_titles=[f"t{i}" for i in range(3 * rows)],
                        horizontal_spacing=0.04, **extra)
    for row in range(1, rows + 1):
        for col in (1, 2, 3):
            n = (row - 1) * 3 + col
            fig.update_xaxes(visible=False, range=[-0.5, 191.5], row=row, col=col)
            fig.update_yaxes(visible=False, range=[255.5, -0.5], scaleanchor=f"x{'' if n == 1 else n}", row=row,
                             col=col)
    return fig.to_dict()["layout"]


def _panel_figure(rows: int, titles, vertical_spacing: float | None = None) -> go.Figure:
    """An empty rows x 3 crop panel with these subplot titles (row-major)."""
    layout = copy.deepcopy(_panel_layout(rows, vertical_spacing))
    for annotation, title in zip(layout["annotations"], titles, strict=True):
        annotation["text"] = title
    return go.Figure(layout=layout)


def _upsampled(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map-grid bool mask -> crop grid (nearest UDP cell, as ``blend_map``)."""
    h, w = mask.shape
    iy = np.rint(np.arange(shape[0]) * (h - 1) / (shape[0] - 1)).astype(int)
    ix = np.rint(np.arange(shape[1]) * (w - 1) / (shape[1] - 1)).astype(int)
    return np.asarray(mask, bool)[iy][:, ix]


_ARGMAX_MARK = dict(symbol="x", size=12, color="red")
_EOKS_MARK = dict(symbol="circle-open", size=14, color="lime", line_width=3)


def keypoint_figure(image: np.ndarray, person, k: int, mass: float, kind: str = "probpose") -> go.Figure:
    """Three panels on the person's crop: the keypoint's map, its expected-OKS surface, and the credible
    region with the argmax and expected-OKS decodes (they disagree where the map is multi-modal or skewed).
    ProbPose-DH: ``dual_keypoint_figure`` (both maps, one row each)."""
    from probpose.codec import (
        credible_region,
        decode_argmax,
        decode_expected_oks,
        expected_oks_maps,
        keypoint_spreads,
    )

    if getattr(person, "is_dual", False):
        return dual_keypoint_figure(image, person, k, mass)
    maps = np.asarray(person.probmaps, dtype=np.float64)
    pmap = maps[k]
    crop = crop_image(image, person.center, person.scale)
    is_pp = has_presence(kind)
    if is_pp:
        titles = (f"P(location) of {KEYPOINT_LABELS[k]}", "expected OKS surface", f"{mass:.0%} credible region")
        spread = keypoint_spreads()[k:k + 1]  # keypoint k's own OKS spread: one map, not all 17
        eoks = expected_oks_maps(maps[k:k + 1], spread)[0]
    else:
        titles = (f"heatmap of {KEYPOINT_LABELS[k]}", "heatmap (no expected OKS)", f"{mass:.0%} of the positive mass")
        eoks = pmap
    fig = _panel_figure(1, titles)
    pos = np.where(np.isfinite(pmap), np.maximum(pmap, 0), 0)
    annotation, mask, marks = "", None, []
    if pos.sum() > 0:
        region = credible_region(pos, mass)
        mask = region.mask
        am = decode_argmax(maps[k:k + 1]).keypoints[0]
        marks.append(("argmax", am, _ARGMAX_MARK))
        if is_pp:
            eo = decode_expected_oks(maps[k:k + 1], spread).keypoints[0]
            marks.append(("expected-OKS", eo, _EOKS_MARK))
            d = float(np.hypot(*(am - eo)))
            annotation = f"argmax vs expected-OKS: {d:.1f} crop px apart; region {region.area} map px"
        else:
            annotation = f"credible region of the normalised heatmap: {region.area} map px"
    _map_row(fig, 1, crop, pmap, eoks, mask, marks)
    fig.update_layout(height=380, margin=dict(l=5, r=5, t=40, b=30), showlegend=True,
                      legend=dict(orientation="h", y=-0.02), title=None)
    if annotation:
        fig.add_annotation(text=annotation, showarrow=False, x=0.5, y=-0.09, xref="paper", yref="paper")
    return fig


def merge_note(person, k: int) -> str:
    """Which map the ProbPose-DH merge chose for keypoint k, and why (docs/dual.md, merge rule)."""
    which = chosen_map(person, k)
    why = ("the wide-map decode lies in the crop and on the person box" if which == "expert" else
           "the wide-map decode lies off the person box or outside the crop")
    return f"merge chose the {which} map for {KEYPOINT_LABELS[k]} ({why})"


def dual_keypoint_figure(image: np.ndarray, person, k: int, mass: float) -> go.Figure:
    """ProbPose-DH keypoint panel: one row per map (expert over the activation window, wide over the wide window),
    each with its normalised map (``map_distribution``: raw maps are clipped at 0 and normalised), its
    expected-OKS surface and credible region with the map's arg-max and its decode (as the predictor's decoder
    gives it); the keypoint the merge kept is starred, and the title says which map that was."""
    chosen = chosen_map(person, k)
    titles = []
    for which in MAP_CHOICES_DH:
        tag = " (merge's choice)" if which == chosen else ""
        titles += [f"{which} map of {KEYPOINT_LABELS[k]}{tag}", f"expected OKS ({which})", f"{mass:.0%} credible region"]
    fig = _panel_figure(2, titles, vertical_spacing=0.08)
    decodes = {"expert": person.expert_keypoints[k], "wide": person.wide_keypoints[k]}
    for row, which in enumerate(MAP_CHOICES_DH, 1):
        center, scale = map_crop(person, which)
        dist = person.map_distribution(k, which)
        marks, mask = [], None
        if dist.sum() > 0:
            mask = person.credible_region(k, mass, which).mask
            j, i = np.unravel_index(int(np.argmax(dist)), dist.shape)
            xs, ys = _map_axes(*dist.shape)
            marks.append((f"argmax ({which})", (xs[i], ys[j]), _ARGMAX_MARK))
        marks.append((f"decode ({which})", _to_crop(decodes[which], center, scale), _EOKS_MARK))
        if which == chosen:
            marks.append(("merged keypoint", _to_crop(person.keypoints[k], center, scale),
                          dict(symbol="star", size=16, color="magenta")))
        if which == "wide":  # where the activation window lies on the wide crop
            x0, y0 = _to_crop(person.window[:2], center, scale)
            x1, y1 = _to_crop(person.window[2:], center, scale)
            fig.add_trace(go.Scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines",
                                     name="activation window", line=dict(color="lime", width=2),
                                     **_axis_refs(2, 1)))
        _map_row(fig, row, crop_image(image, center, scale), dist, person.expected_oks_map(k, which), mask, marks)
    fig.update_layout(height=720, margin=dict(l=5, r=5, t=40, b=30), showlegend=True,
                      legend=dict(orientation="h", y=-0.02), title=None)
    fig.add_annotation(text=merge_note(person, k), showarrow=False, x=0.5, y=-0.05, xref="paper", yref="paper")
    return fig


# A credible region over more than this fraction of the map is not outlined on the canvas: the map is diffuse and
# an outline would cover the whole window (the status line says so instead).
DIFFUSE_REGION = 0.5


def region_outlines(person, k: int, mass: float, which: str = "expert") -> tuple[list[np.ndarray], float]:
    """(outlines in image px, fraction of the map the region covers) of keypoint k's ``mass`` credible region,
    for the canvas. One-pixel gaps are closed and specks under 4 map px dropped before outlining, so a diffuse or
    row-striped map (the demo model's maps alternate rows) gives areas, not stripes across the padding; no
    outlines when the region covers over ``DIFFUSE_REGION`` of the map."""
    import cv2

    from probpose import codec, dual_codec, geometry

    region = person.credible_region(k, mass, which)
    mask = np.asarray(region.mask, bool)
    frac = float(mask.mean())
    if frac > DIFFUSE_REGION:
        return [], frac
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    keep = np.isin(labels, [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 4])
    polys = codec.region_outline(keep if keep.any() else mask)
    if getattr(person, "is_dual", False):
        pad = person.map_paddings[MAP_CHOICES_DH.index(which)]
        return [dual_codec.map_to_image(q, pad, person.center, person.scale) for q in polys], frac
    return [geometry.heatmap_to_image(q, person.center, person.scale) for q in polys], frac


def map_layer(image: np.ndarray, result, highlight_person: int | None = None, keypoint: int | None = None,
              mass: float = DEFAULT_MASS) -> tuple[np.ndarray, np.ndarray]:
    """The padded canvas of ``draw_result`` before the poses: with a selected person and keypoint, that keypoint's
    map (normalised x presence, as the official visualiser) and its credible region. Returns (canvas (H', W', 3)
    uint8, offset (2,)). It does not depend on the presence threshold of a ProbPose model, so a threshold redraw
    can reuse it (ProbPose-DH: as long as the merge picks the same map)."""
    from probpose.draw import (
        draw_credible_region,
        overlay_map,
        padded_canvas,
        pose_windows,
        warp_map_to_image,
    )

    people = result.people
    canvas, offset = padded_canvas(image, pose_windows(people))
    if highlight_person is not None and keypoint is not None and people:
        i = int(np.clip(highlight_person, 0, len(people) - 1))
        p = people[i]
        which = chosen_map(p, keypoint)
        m = p.map_distribution(keypoint, which)
        if m.sum() > 0:
            shown = m * float(np.clip(p.presence[keypoint], 0, 1))
            center, scale = map_crop(p, which)
            warped = warp_map_to_image(shown, center, scale, (canvas.shape[1], canvas.shape[0]), offset)
            rows, cols = np.flatnonzero(warped.any(axis=1)), np.flatnonzero(warped.any(axis=0))
            if len(rows):  # blend only the map's bounding box (same pixels, a fraction of the canvas)
                y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                canvas = canvas.copy()
                canvas[y0:y1, x0:x1] = overlay_map(canvas[y0:y1, x0:x1], warped[y0:y1, x0:x1], alpha=0.55,
                                                   vmax=float(warped.max()) or None)
            outlines, _ = region_outlines(p, keypoint, mass, which)
            canvas = draw_credible_region(canvas, outlines, offset)
    return canvas, offset


def draw_result(image: np.ndarray, result, highlight_person: int | None = None, keypoint: int | None = None,
                mass: float = DEFAULT_MASS, layer: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Padded canvas with out-of-image keypoints, activation windows and presence-coloured skeletons; with a
    selected person and keypoint, also that keypoint's map and credible region (``map_layer``; pass its output
    as ``layer`` to reuse it). ProbPose-DH: the canvas also fits the wide windows (dashed cyan), and the overlay
    is the map the merge chose for that keypoint (expert or wide)."""
    from probpose.draw import draw_poses

    people = result.people
    if layer is None:
        layer = map_layer(image, result, highlight_person, keypoint, mass)
    highlight = None
    if highlight_person is not None and keypoint is not None and people:
        highlight = (int(np.clip(highlight_person, 0, len(people) - 1)), keypoint)
    return draw_poses(image, people, highlight=highlight, canvas=layer)


def case_error_figure(err, labels, annotated) -> go.Figure:
    """Per-keypoint error bars of a CropCOCO case: 1 - the keypoint's Ex-OKS similarity for annotated keypoints;
    keypoints without annotation have no error (not 0, "perfect"): grey "n/a" marks instead of bars.
    err (K,) with NaN / None where not annotated, labels (K,) str, annotated (K,) bool."""
    err = np.array([np.nan if v is None else v for v in err], dtype=float)
    annotated = np.asarray(annotated, bool) & np.isfinite(err)
    fig = go.Figure(go.Bar(x=KEYPOINT_LABELS, y=np.where(annotated, err, np.nan), marker_color="#d62728",
                           hovertext=list(labels), name="error (annotated)"))
    missing = [KEYPOINT_LABELS[k] for k in np.flatnonzero(~annotated)]
    if missing:
        fig.add_scatter(x=missing, y=[0.03] * len(missing), mode="text", text=["n/a"] * len(missing),
                        textfont=dict(color="grey"), name="not annotated", hoverinfo="x+name")
    fig.update_layout(height=320, yaxis_title="1 - keypoint Ex-OKS similarity", yaxis_range=[0, 1.05],
                      margin=dict(l=50, r=10, t=30, b=80), showlegend=bool(missing),
                      legend=dict(orientation="h", x=0, y=1.12))
    return fig


def compare_maps_figure(image: np.ndarray, pp_person, hm_person, k: int) -> go.Figure:
    """The same crop, the same keypoint: ProbPose's probability map next to the baseline's heatmap. ProbPose-DH:
    the (normalised) map the merge chose for that keypoint, on its own window's crop (the wide one can extend
    past the activation window)."""
    which = chosen_map(pp_person, k)
    left = (f"ProbPose-DH: {which} map of {KEYPOINT_LABELS[k]} (merge's choice)" if pp_person.is_dual
            else f"ProbPose: P(location) of {KEYPOINT_LABELS[k]}")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=(left, f"baseline: heatmap of {KEYPOINT_LABELS[k]}"))
    for col, person, colormap in ((1, pp_person, cv2.COLORMAP_HOT), (2, hm_person, cv2.COLORMAP_VIRIDIS)):
        dual = col == 1 and person.is_dual
        m = person.map_distribution(k, which) if dual else np.asarray(person.probmaps, dtype=np.float64)[k]
        center, scale_ = map_crop(person, which) if dual else (person.center, person.scale)
        picture = blend_map(crop_image(image, center, scale_), np.where(m > (0 if col == 1 else 0.02), m, np.nan),
                            colormap, 0.6)
        fig.add_trace(go.Image(source=image_uri(picture), hoverinfo="skip"), row=1, col=col)
        fig.update_xaxes(visible=False, range=[-0.5, 191.5], row=1, col=col)
        fig.update_yaxes(visible=False, range=[255.5, -0.5], scaleanchor="x" if col == 1 else "x2", row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=5, r=5, t=40, b=5))
    return fig


def compare_scores_figure(pp_person, hm_person, threshold: float) -> go.Figure:
    fig = go.Figure()
    name = "ProbPose-DH P(inside wide window)" if pp_person.is_dual else "ProbPose presence"
    fig.add_bar(x=KEYPOINT_LABELS, y=np.asarray(pp_person.presence, float), name=name, marker_color="#2ca02c")
    fig.add_bar(x=KEYPOINT_LABELS, y=np.asarray(hm_person.presence, float), name="baseline heatmap peak",
                marker_color="#ff7f0e")
    fig.add_hline(y=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(barmode="group", height=300, yaxis_range=[0, 1.05], margin=dict(l=40, r=10, t=20, b=80),
                      legend=dict(orientation="h", y=1.15))
    return fig


def inside(xy, box) -> bool:
    return bool(box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3])


def _curve_xy(curve: dict) -> tuple[np.ndarray, np.ndarray]:
    x = pick(curve, "confidence", "mean_confidence", "nominal", "levels", "expected", "bins", "bin_centers", "mass")
    y = pick(curve, "observed", "frequency", "hit_rate", "accuracy", "coverage", "empirical", "fraction_positive")
    x = np.asarray(x if x is not None else [], dtype=float)
    y = np.asarray(y if y is not None else [], dtype=float)
    n = min(len(x), len(y))
    return x[:n], y[:n]


def reliability_figure(curves: dict[str, dict], title: str, x_title: str, y_title: str) -> go.Figure:
    """Reliability / coverage diagram: one line per curve, the diagonal is perfect calibration."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                    line=dict(dash="dot", color="grey"))
    for name, curve in curves.items():
        x, y = _curve_xy(curve)
        if len(x):
            ece = pick(curve, "ece", "ECE")
            label = f"{name}" + (f" (ECE {float(ece):.3f})" if ece is not None else "")
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=label)
    fig.update_layout(title=title, height=380, xaxis_title=x_title, yaxis_title=y_title, xaxis_range=[0, 1],
                      yaxis_range=[0, 1], margin=dict(l=50, r=10, t=40, b=40), legend=dict(y=0.02, x=0.45))
    return fig


def sweep_figure(data: dict) -> go.Figure:
    thr = np.asarray(pick(data, "thresholds", "threshold", default=[]), dtype=float)
    models = pick(data, "models", default={k: v for k, v in data.items() if isinstance(v, dict)})
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mAP", "Ex-mAP", "presence error"), horizontal_spacing=0.07)
    colors = {"probpose": "#2ca02c", "baseline": "#ff7f0e", "heatmap": "#ff7f0e"}
    for name, m in models.items():
        for col, keys, best in ((1, ("mAP", "map", "AP"), max), (2, ("Ex-mAP", "ex_map", "exmap", "Ex-AP"), max),
                                (3, ("presence_error", "presence_err", "error"), min)):
            y = pick(m, *keys)
            if y is None:
                continue
            y = np.asarray(y, dtype=float)
            x = np.asarray(pick(m, "thresholds", default=thr), dtype=float)[: len(y)]
            c = colors.get(name, None)
            fig.add_scatter(x=x, y=y, mode="lines", name=name, line=dict(color=c), legendgroup=name,
                            showlegend=col == 1, row=1, col=col)
            if len(y) and np.isfinite(y).any():
                i = int(np.nanargmax(y) if best is max else np.nanargmin(y))
                # star labels may sit on the plot's edge (threshold 0 or 1, the top): never clipped
                side = "top left" if x[i] > 0.9 else "top right" if x[i] < 0.1 else "top center"
                fig.add_scatter(x=[x[i]], y=[y[i]], mode="markers+text", text=[f"{x[i]:.2f}"], legendgroup=name,
                                textposition=side, marker=dict(size=11, symbol="star", color=c), cliponaxis=False,
                                showlegend=False, row=1, col=col)
    fig.update_xaxes(title_text="presence threshold", range=[-0.02, 1.02])
    fig.update_yaxes(rangemode="tozero")
    # the top margin keeps the subplot titles below the Gradio label; the legend goes under the plots
    fig.update_layout(height=380, margin=dict(l=40, r=20, t=70, b=40),
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.22))
    return fig


def draw_case(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, presence: np.ndarray, threshold: float,
              box_xywh=None) -> np.ndarray:
    """Ground truth (white, v=3 keypoints outside the crop included) and prediction (side colours; absent =
    grey ring) on a canvas padded to hold both and the activation window."""
    import cv2

    from probpose.constants import SKELETON
    from probpose.draw import keypoint_color, padded_canvas

    labelled = gt[:, 2] > 0
    pts = np.concatenate([gt[labelled, :2], pred[np.all(np.isfinite(pred), axis=1)]])
    wins = [np.r_[pts.min(0), pts.max(0)]] if len(pts) else []
    if box_xywh is not None:
        from analysis.exoks import aw_xyxy

        wins.append(aw_xyxy(np.asarray(box_xywh, float)))
    canvas, off = padded_canvas(image, wins)
    t = max(1, round(max(image.shape[:2]) / 300))

    def pt(xy):
        return int(round(xy[0] + off[0])), int(round(xy[1] + off[1]))

    if len(wins) > 1:
        cv2.rectangle(canvas, pt(wins[-1][:2]), pt(wins[-1][2:]), (0, 200, 0), t)
    for a, b in SKELETON:
        if labelled[a] and labelled[b]:
            cv2.line(canvas, pt(gt[a]), pt(gt[b]), (255, 255, 255), t, cv2.LINE_AA)
        if presence[a] >= threshold and presence[b] >= threshold:
            cv2.line(canvas, pt(pred[a]), pt(pred[b]), keypoint_color(a), t, cv2.LINE_AA)
    for k in range(len(gt)):
        if labelled[k]:
            cv2.circle(canvas, pt(gt[k]), 2 * t + 2, (255, 255, 255), -1, cv2.LINE_AA)
        color = keypoint_color(k) if presence[k] >= threshold else (150, 150, 150)
        cv2.circle(canvas, pt(pred[k]), 2 * t + 2, color, -1 if presence[k] >= threshold else t, cv2.LINE_AA)
    return canvas

