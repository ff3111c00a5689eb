"""Threshold-sweep tab: mAP / Ex-mAP / presence error vs the presence threshold, and the threshold on one image."""

from __future__ import annotations

import gradio as gr
import numpy as np

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from studio.examples import example_boxes, startup_example
from studio.figures import draw_result, empty_figure, sweep_figure
from studio.inputs import BOX_AUTO, payload_key
from studio.models import MODEL_EMBEDDED, banner
from studio.precomputed import (
    caption,
    forget,
    load_latest,
    metrics_files,
    model_sources,
    pick,
    recompute,
    sweep_from_metrics,
)
from studio.state import DECODER_EOKS, decode_session, notify, run_session, user_message


def sweep_views(data: dict | None = None):
    """(info markdown, curves figure) from sweep.json."""
    if data is None:
        data = load_latest("sweep.json") or sweep_from_metrics(metrics_files())
    if not data:
        return ("No precomputed sweep in `analysis/precomputed/sweep.json` yet. Press **Recompute** to run it on "
                "a small subset.", empty_figure("no sweep results"))
    desc = pick(data, "description", "what", default="")
    return ("**Threshold sweep**: how mAP, Ex-mAP (Ex-OKS) and the presence-classification error change with the "
            "presence threshold, for ProbPose and the heatmap baseline (the star marks each optimum)."
            + (f" {desc}" if desc else "") + caption(data), sweep_figure(data))


def sweep_preview(state, payload, threshold=DEFAULT_PRESENCE_THRESHOLD, model_choice=MODEL_EMBEDDED,
                  model_path="", box_mode=BOX_AUTO, boxes_text=""):
    """The threshold's effect on one image: the network runs once per image and boxes (cached in `state`), the
    slider only re-decodes. Returns (state, drawing, markdown)."""
    try:
        key = (payload_key(payload), model_choice, model_path, box_mode, boxes_text)
        if state is None or state[0] != key or key[0] is None:
            state = (key, run_session(payload, box_mode, boxes_text, model_choice, model_path))
        session = state[1]
        result = decode_session(session, DECODER_EOKS, threshold)
        n = sum(int(np.sum(p.present)) for p in result.people)
        window = "wide" if session.kind == "probpose_dh" else "activation"
        md = (banner(session.spec) + "\n\n" if banner(session.spec) else "") + (
              f"Threshold **{float(threshold):.2f}**: {n} of {17 * len(result.people)} keypoints are called "
              f"present (inside the {window} window); the others are hidden. Lower thresholds keep more "
              "keypoints (more false 'inside'), higher ones drop more (more false 'outside').")
        return state, draw_result(session.image, result), md
    except Exception as e:
        message = user_message(e)
        notify(message)
        return state, None, f"**Could not run:** {message}"


def sweep_example(state, payload, threshold=DEFAULT_PRESENCE_THRESHOLD, model_choice=MODEL_EMBEDDED,
                  model_path="", box_mode=BOX_AUTO, boxes_text=""):
    """An example photo clicked: the threshold on its people's boxes. Returns (box mode, box text,
    *sweep_preview's outputs)."""
    box_mode, boxes_text = example_boxes(payload, box_mode, boxes_text)
    return (box_mode, boxes_text,
            *sweep_preview(state, payload, threshold, model_choice, model_path, box_mode, boxes_text))


def startup_sweep(query: dict):
    """`?tab=sweep&example=i`: (input image, box mode, box text, state, drawing, markdown) or None."""
    path = startup_example(query, "sweep")
    return None if path is None else (path, *sweep_example(None, path))


def sweep_recompute(progress=gr.Progress(), request: gr.Request = None):  # noqa: B008  (Gradio injects it)
    """Run the threshold sweep on a small subset (this visitor's only); same outputs as ``sweep_views``."""
    try:
        return sweep_views(recompute("compute_sweep", "sweep.json", progress, request, **model_sources()))
    except Exception as e:
        msg = user_message(e)
        notify(msg)
        return (f"**Could not recompute:** {msg}", sweep_views()[1])


def sweep_shipped(request: gr.Request = None):
    """Forget this visitor's recompute: back to the shipped sweep."""
    forget(request, "sweep.json")
    return sweep_views()

