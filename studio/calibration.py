"""Calibration tab: coverage of the maps' credible regions and presence reliability, before / after temperature."""

from __future__ import annotations

import gradio as gr

from studio.figures import empty_figure, reliability_figure
from studio.precomputed import (
    calibration_from_metrics,
    caption,
    forget,
    load_latest,
    metrics_files,
    model_sources,
    pick,
    recompute,
)
from studio.state import notify, user_message


def calibration_views(data: dict | None = None):
    """(info markdown, maps coverage figure, presence reliability figure, ECE table) from calibration.json."""
    if data is None:
        data = load_latest("calibration.json")
        data = data or calibration_from_metrics(metrics_files().get("probpose", {}))
    if not data:
        msg = ("No precomputed calibration results in `analysis/precomputed/calibration.json` yet. Press "
               "**Recompute** to run the calibration analysis on a small subset of the shared COCO val data.")
        return msg, empty_figure("no calibration results"), empty_figure("no calibration results"), []
    maps, presence, rows = {}, {}, []
    for part, store in (("maps", maps), ("presence", presence)):
        block = pick(data, part, f"{part}_calibration", default={})
        t = pick(block, "temperature", "fitted_temperature")
        t0 = pick(block, "model_temperature")
        bound = bool(pick(block, "at_bound", default=False))
        fit = ("" if t is None else "at the search bound (no optimum inside "
               f"{list(pick(block, 'bounds', default=[]))})" if bound else "optimum")
        for stage in ("before", "after"):
            curve = pick(block, stage)
            if isinstance(curve, dict):
                if stage == "before":
                    suffix = "as the model runs" + (f" (T={t0:.3g})" if t0 else "")
                else:
                    suffix = "refitted" + (f" (T={t:.3g}{', at bound' if bound else ''})" if t else "")
                store[suffix] = curve
        b, a = pick(pick(block, "before", default={}), "ece", "ECE"), pick(pick(block, "after", default={}),
                                                                              "ece", "ECE")
        if b is not None or a is not None:
            rows.append([part, None if b is None else round(float(b), 4), None if a is None else round(float(a), 4),
                         None if t is None else round(float(t), 4), fit])
    desc = pick(data, "description", "what", default="")
    n = pick(data, "n_people", "num_people", "people")
    info = "**Calibration** of ProbPose's probability maps (does the q-mass credible region hold the ground " \
           "truth a fraction q of the time?) and of its presence probability, before and after temperature " \
           "scaling." + (f" {desc}" if desc else "") + (f" ({n} people.)" if n else "") + caption(data)
    return (info, reliability_figure(maps, "probability maps", "credible mass q", "fraction of GT inside"),
            reliability_figure(presence, "presence", "predicted presence", "fraction actually inside"),
            {"headers": ["output", "ECE before", "ECE after", "temperature", "temperature fit"], "data": rows})


def calibration_recompute(progress=gr.Progress(), request: gr.Request = None):  # noqa: B008  (Gradio injects it)
    """Run the calibration analysis on a small subset (progress bar; this visitor's only); same outputs as
    ``calibration_views``."""
    try:
        data = recompute("compute_calibration", "calibration.json", progress, request, **model_sources())
        return calibration_views(data)
    except Exception as e:
        msg = user_message(e)
        notify(msg)
        return (f"**Could not recompute:** {msg}", *calibration_views()[1:])


def calibration_shipped(request: gr.Request = None):
    """Forget this visitor's recompute: back to the shipped calibration results."""
    forget(request, "calibration.json")
    return calibration_views()

