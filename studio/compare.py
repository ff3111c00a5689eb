"""Compare tab: the same crops through ProbPose and the ViTPose-style heatmap baseline."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, KEYPOINT_NAMES, NUM_KEYPOINTS
from probpose.errors import ProbPoseError
from studio.examples import example_boxes, startup_example
from studio.figures import (
    chosen_map,
    compare_maps_figure,
    compare_scores_figure,
    draw_result,
    empty_figure,
    inside,
)
from studio.inputs import BOX_AUTO, keypoint_index, person_choice, unit_value
from studio.models import (
    MODEL_EMBEDDED,
    banner,
    baseline_spec,
    has_presence,
    load_model,
    model_kind,
    model_spec,
)
from studio.state import (
    DECODER_EOKS,
    ExploreSession,
    decode_session,
    notify,
    run_network,
    run_session,
    user_message,
)


def compare_table(pp_person, hm_person, image_size) -> list[list]:
    """Per keypoint: what each model says (location, inside the image?, its score). ProbPose-DH: absent means
    outside the wide window, and keypoints taken from the wide map say so."""
    rows = []
    for k in range(NUM_KEYPOINTS):
        pk, hk = np.asarray(pp_person.keypoints)[k], np.asarray(hm_person.keypoints)[k]
        p_in, h_in = bool(pp_person.present[k]), bool(hm_person.present[k])
        p_img, h_img = bool(pp_person.in_image[k]), bool(hm_person.in_image[k])
        says = ("in image" if p_img else "outside image") if p_in else "outside window (absent)"
        if pp_person.is_dual:
            says = says.replace("outside window", "outside wide window")
            says += f"; {chosen_map(pp_person, k)} map" + (", outside the activation window"
                                                          if not inside(pk, pp_person.window) else "")
        rows.append([
            KEYPOINT_NAMES[k],
            f"({pk[0]:.0f}, {pk[1]:.0f})", round(float(pp_person.presence[k]), 3), says,
            f"({hk[0]:.0f}, {hk[1]:.0f})", round(float(hm_person.presence[k]), 3),
            ("in image" if h_img else "outside image") if h_in else "low peak (no outside notion)",
        ])
    return rows


COMPARE_HEADERS = ["keypoint", "ProbPose xy", "presence", "ProbPose says", "baseline xy", "heatmap peak",
                   "baseline says"]


def _compare_views(state, keypoint, threshold, person):
    pp_session, hm_session = state
    threshold = unit_value(threshold, "presence / peak threshold")
    pp = decode_session(pp_session, DECODER_EOKS, threshold)
    hm = decode_session(hm_session, DECODER_EOKS, threshold)
    k = keypoint_index(keypoint)
    i, person_note = person_choice(person, len(pp.people))
    pp_draw = draw_result(pp_session.image, pp, highlight_person=i, keypoint=k)
    hm_draw = draw_result(hm_session.image, hm, highlight_person=i, keypoint=k)
    a, b = pp.people[i], hm.people[i]
    h, w = pp_session.image.shape[:2]
    n_pp_out = int(np.sum(~np.asarray(a.present, bool)))
    n_hm_low = int(np.sum(~np.asarray(b.present, bool)))
    says = f"ProbPose says {n_pp_out} keypoint(s) lie outside the activation window"
    if a.is_dual:
        wide = np.flatnonzero(np.asarray(a.source) == 1)
        n_out_aw = sum(not inside(a.keypoints[k], a.window) for k in wide)
        says = (f"ProbPose-DH takes {len(wide)} keypoint(s) from its wide map ({n_out_aw} of them outside the "
                f"activation window, cyan rings) and says {n_pp_out} lie outside even the wide window")
    banners = "".join(b + "\n\n" for b in (banner(pp_session.spec), banner(hm_session.spec)) if b)
    status = banners + (f"{person_note}\n\n" if person_note else "") + (
              f"Same {len(pp.people)} crop(s) through **{pp_session.spec.label}** and **{hm_session.spec.label}**. "
              f"Person {i}: {says} (presence < "
              f"{threshold:.2f}); the baseline has no such output - it always places every keypoint inside the "
              f"window, and {n_hm_low} of its heatmap peaks fall below the threshold (the 'heatmap-peak rule').")
    return (pp_draw, hm_draw, compare_maps_figure(pp_session.image, a, b, k),
            compare_scores_figure(a, b, float(threshold)), compare_table(a, b, (w, h)), status)


def _compare_error(message: str):
    notify(message)
    return None, None, empty_figure("no result"), empty_figure("no result"), [], f"**Could not run:** {message}"


def compare_run(payload, box_mode=BOX_AUTO, boxes_text="", model_choice=MODEL_EMBEDDED, model_path="",
                keypoint=KEYPOINT_NAMES[0], threshold=DEFAULT_PRESENCE_THRESHOLD, person=0):
    """ProbPose and the baseline on the same crops. Returns (state, ProbPose drawing, baseline drawing,
    maps figure, scores figure, per-keypoint table rows, status markdown)."""
    try:
        spec = model_spec(model_choice, model_path)
        pp_session = run_session(payload, box_mode, boxes_text, None, spec=spec)
        if not has_presence(pp_session.kind):
            raise ProbPoseError("Pick a ProbPose model on the left: the comparison is ProbPose vs the baseline.")
        hm_spec, hm_model = load_model(baseline_spec())  # official ViTPose-S when available
        t0 = time.perf_counter()
        hm_out = run_network(hm_spec, pp_session.image, pp_session.boxes, pp_session.box_source)
        hm_session = ExploreSession(image=pp_session.image, outputs=hm_out, spec=hm_spec, kind=model_kind(hm_model),
                                    boxes=pp_session.boxes, box_source=pp_session.box_source,
                                    notes=pp_session.notes, seconds=time.perf_counter() - t0)
        state = (pp_session, hm_session)
        return (state, *_compare_views(state, keypoint, threshold, person))
    except Exception as e:
        return (None, *_compare_error(user_message(e)))


def compare_redraw(state, keypoint=KEYPOINT_NAMES[0], threshold=DEFAULT_PRESENCE_THRESHOLD, person=0):
    """Re-decode both cached results (keypoint, threshold, person) without the network."""
    if state is None:
        return None, None, empty_figure("run first"), empty_figure("run first"), [], "Press **Compare** first."
    try:
        return _compare_views(state, keypoint, threshold, person)
    except Exception as e:
        return _compare_error(user_message(e))


def compare_example(payload, box_mode=BOX_AUTO, boxes_text="", *settings):
    """An example photo clicked: compare on its people's boxes. Returns (box mode, box text, *compare_run's)."""
    box_mode, boxes_text = example_boxes(payload, box_mode, boxes_text)
    return (box_mode, boxes_text, *compare_run(payload, box_mode, boxes_text, *settings))


def startup_compare(query: dict):
    """`?tab=compare&example=i`: (input image, box mode, box text, state, compare outputs...) or None."""
    path = startup_example(query, "compare")
    return None if path is None else (path, *compare_example(path))


def shown_person(state, person):
    """The person # field after a comparison / redraw: the number typed, clamped to the people compared."""
    if state is None:
        return gr.skip()
    return person_choice(person, len(state[0].boxes))[0]
