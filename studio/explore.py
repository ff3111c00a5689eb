"""Explore tab: run ProbPose on one image, then re-decode from the cached outputs (decoder, threshold, credible
mass, keypoint, person). Also the simple public ``predict`` endpoint."""

from __future__ import annotations

import gradio as gr
import numpy as np

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, KEYPOINT_NAMES
from studio.examples import example_boxes, startup_example
from studio.figures import (
    chosen_map,
    draw_result,
    empty_figure,
    keypoint_figure,
    map_layer,
    merge_note,
    scores_figure,
)
from studio.inputs import BOX_AUTO, BOX_TYPED, keypoint_index, person_choice, unit_value
from studio.models import MODEL_EMBEDDED, banner, has_presence
from studio.settings import DEFAULT_MASS
from studio.state import (
    DECODER_EOKS,
    ExploreSession,
    decode_session,
    device,
    notify,
    result_json,
    run_session,
    temperature_note,
    user_message,
    write_json,
)


def _names(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def _person_summary(people, kind: str) -> str:
    rows = []
    for i, p in enumerate(people):
        present = np.asarray(p.present, dtype=bool)
        in_img = np.asarray(p.in_image, dtype=bool)
        out_img = int(np.sum(present & ~in_img))
        absent = [KEYPOINT_NAMES[k] for k in np.flatnonzero(~present)]
        what = "above the threshold" if has_presence(kind) else "with a heatmap peak above the threshold"
        line = f"- person {i}: {int(present.sum())}/17 keypoints {what}"
        if out_img:
            line += f", {out_img} of them outside the image (drawn on the grey padding)"
        if absent and has_presence(kind):
            line += f"; predicted outside the {'wide' if p.is_dual else 'activation'} window: " + _names(absent)
        if p.is_dual:
            wide = [KEYPOINT_NAMES[k] for k in np.flatnonzero(np.asarray(p.source) == 1)]
            line += (f"; source per keypoint (0 expert / 1 wide map): {''.join(str(int(v)) for v in p.source)}, "
                     f"{len(wide)} from the wide map (cyan rings)" + (f": {_names(wide)}" if wide else ""))
        rows.append(line)
    return "\n".join(rows)


def _status(session: ExploreSession, result, extra: str = "") -> str:
    head = (banner(session.spec) + "\n\n" if banner(session.spec) else "") + (
            f"**{session.spec.label}**: {len(result.people)} person(s), network {session.seconds * 1000:.0f} ms "
            f"on {device()} (cached: moving the sliders re-decodes without running it again).")
    notes = f"\n\n_Input: {'; '.join(session.notes)}._" if session.notes else ""
    return head + notes + "\n\n" + _person_summary(result.people, session.kind) + (f"\n\n{extra}" if extra else "")


def _explore_views(session: ExploreSession, decoder, threshold, mass, keypoint, person, calibrated,
                   redraw: bool = False):
    """redraw: a figure the browser already shows for these settings is not rebuilt nor sent (gr.skip())."""
    mass = unit_value(mass, "credible mass", low_open=True)
    result = decode_session(session, decoder, threshold, calibrated)
    k = keypoint_index(keypoint)
    i, person_note = person_choice(person, len(result.people))
    p = result.people[i]
    views = session.views
    # the map layer (overlay + credible region) moves with neither the threshold nor the decoder: reused
    layer_key = (i, k, round(float(mass), 6), bool(calibrated), chosen_map(p, k) if p.is_dual else "")
    cached = views.get("layer")
    if cached is None or cached[0] != layer_key:
        cached = (layer_key, map_layer(session.image, result, i, k, float(mass)))
        views["layer"] = cached
    drawing = draw_result(session.image, result, highlight_person=i, keypoint=k, layer=cached[1])
    json_key = (str(decoder), round(float(threshold), 6), bool(calibrated))
    if redraw and views.get("json") == json_key:  # keypoint / mass / person changes leave the JSON as it is
        data = file = gr.skip()
    else:
        data = result_json(session, result, decoder, threshold, calibrated)
        file = write_json(data)
    bars_key = (i, round(float(threshold), 6))
    kp_key = (i, k, round(float(mass), 6), str(decoder), bool(calibrated))
    if redraw and views.get("bars") == bars_key:
        bars = gr.skip()
    else:
        bars = scores_figure(p, float(threshold), session.kind, title=f"person {i}")
    if redraw and views.get("keypoint") == kp_key:
        kp = gr.skip()
    else:
        kp = keypoint_figure(session.image, p, k, float(mass), session.kind)
    views.update(bars=bars_key, keypoint=kp_key, json=json_key)
    notes = [person_note] if person_note else []
    if p.is_dual:
        e, w = p.expert_keypoints[k], p.wide_keypoints[k]
        notes.append(f"Person {i}: {merge_note(p, k)}; expert decode ({e[0]:.0f}, {e[1]:.0f}), wide decode "
                     f"({w[0]:.0f}, {w[1]:.0f}) image px.")
    note = temperature_note(session, bool(calibrated))
    if note:
        notes.append(note)
    return drawing, data, bars, kp, _status(session, result, "\n\n".join(notes)), file


def _explore_error(message: str):
    notify(message)
    empty = empty_figure("no result")
    return None, {"error": message}, empty, empty, f"**Could not run:** {message}", None


def explore_run(payload, box_mode=BOX_AUTO, boxes_text="", model_choice=MODEL_EMBEDDED, model_path="",
                decoder=DECODER_EOKS, threshold=DEFAULT_PRESENCE_THRESHOLD, mass=DEFAULT_MASS,
                keypoint=KEYPOINT_NAMES[0], person=0, calibrated=True):
    """Run the network once on an image and show everything.

    Returns (session, drawing, keypoints JSON, score bars, keypoint maps, status markdown, JSON file path). A
    person # outside the people found is clamped (the status says so; ``shown_person`` gives the field's value).
    """
    try:
        session = run_session(payload, box_mode, boxes_text, model_choice, model_path)
        return (session, *_explore_views(session, decoder, threshold, mass, keypoint, person, calibrated))
    except Exception as e:  # user errors become a message; the app keeps serving
        return (None, *_explore_error(user_message(e)))


def explore_redraw(session: ExploreSession | None, decoder=DECODER_EOKS, threshold=DEFAULT_PRESENCE_THRESHOLD,
                   mass=DEFAULT_MASS, keypoint=KEYPOINT_NAMES[0], person=0, calibrated=True):
    """Re-decode from the cached network outputs (threshold, decoder, keypoint, person, credible mass).

    Returns (drawing, keypoints JSON, score bars, keypoint maps, status markdown, JSON file path).
    """
    if session is None:
        empty = empty_figure("run an image first")
        return None, {}, empty, empty, "Upload an image (or click an example) and press **Run**.", None
    try:
        return _explore_views(session, decoder, threshold, mass, keypoint, person, calibrated, redraw=True)
    except Exception as e:
        session.views.clear()  # the error shows empty figures: the next redraw must send them again
        return _explore_error(user_message(e))


def predict(payload, boxes_text: str = "", model_choice: str = MODEL_EMBEDDED, model_path: str = "",
            decoder: str = DECODER_EOKS, threshold: float = DEFAULT_PRESENCE_THRESHOLD):
    """The simple public endpoint: image [+ optional boxes, one 'x1,y1,x2,y2' per line] -> (JSON, drawing)."""
    mode = BOX_TYPED if (boxes_text or "").strip() else BOX_AUTO
    try:
        session = run_session(payload, mode, boxes_text, model_choice, model_path)
        result = decode_session(session, decoder, threshold)
        return result_json(session, result, decoder, threshold), draw_result(session.image, result)
    except Exception as e:
        message = user_message(e)
        notify(message)
        return {"error": message}, None


def explore_example(payload, box_mode=BOX_AUTO, boxes_text="", *settings):
    """An example photo clicked: run it on its people's boxes (``examples.example_boxes``) with the other current
    settings. Returns (box mode, box text, *explore_run's outputs)."""
    box_mode, boxes_text = example_boxes(payload, box_mode, boxes_text)
    return (box_mode, boxes_text, *explore_run(payload, box_mode, boxes_text, *settings))


def startup_explore(query: dict):
    """`?tab=explore&example=i`: (input image, box mode, box text, session, explore outputs...) or None."""
    path = startup_example(query, "explore")
    return None if path is None else (path, *explore_example(path))


def shown_person(session: ExploreSession | None, person):
    """The person # field after a run / redraw: the number typed, clamped to the people of the session."""
    if session is None:
        return gr.skip()
    return person_choice(person, len(session.boxes))[0]
