"""CropCOCO explorer tab: cases ranked by Ex-OKS error, each drawn with ground truth and prediction."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from analysis.presence import place_rows
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, NUM_KEYPOINTS
from studio import settings
from studio.figures import case_error_figure, draw_case, empty_figure
from studio.inputs import load_input_image, person_choice
from studio.precomputed import caption, forget, load_latest, model_sources, pick, recompute
from studio.state import notify, user_message


def _cases(data: dict | None, model: str) -> list[dict]:
    if not data:
        return []
    cases = pick(data, model, default=None)
    if isinstance(cases, dict):
        cases = pick(cases, "cases", default=[])
    if cases is None:
        cases = pick(data, "cases", default=[])
        cases = [c for c in cases if pick(c, "model", default=model) == model]
    return list(cases or [])


def _case_error(c: dict) -> float:
    e = pick(c, "error", "exoks_error")
    if e is None:
        e = 1.0 - float(pick(c, "exoks", "ex_oks", "oks", default=1.0))
    return float(e)


def _labelled(c: dict) -> int:
    gt = pick(c, "gt_keypoints", "gt", default=[])
    return int(sum(1 for g in gt if len(g) > 2 and g[2] > 0))


def ranked_cases(data: dict | None, model: str) -> list[dict]:
    """The cases worst first: by Ex-OKS error, then (ties, e.g. the many total misses at Ex-OKS 0) by how many
    keypoints are annotated (missing all of 17 is worse than missing 3), then by the model's confidence in the
    pose (a confident failure first), then by image id (a stable order)."""
    def key(c: dict):
        score = pick(c, "score", default=0.0)
        return (-_case_error(c), -_labelled(c), -float(score if np.isfinite(score) else 0.0),
                str(pick(c, "image_id", "file_name", default="")))

    return sorted(_cases(data, model), key=key)


TABLE_HEADERS = ["rank", "image", "Ex-OKS", "error", "annotated keypoints", "pose score"]


def cropcoco_table(model: str = "probpose", data: dict | None = None, request: gr.Request = None):
    """(info markdown, table) of the CropCOCO cases ranked by Ex-OKS error, worst first (this visitor's
    recompute when there is one, else the shipped set; its provenance under the text)."""
    data = data if data is not None else load_latest("cropcoco_cases.json", request)
    cases = ranked_cases(data, model)
    if not cases:
        return ("No precomputed CropCOCO cases in `analysis/precomputed/cropcoco_cases.json` yet. Press "
                "**Recompute** to build CropCOCO from the shared val data and evaluate a small subset.",
                {"headers": TABLE_HEADERS, "data": []})
    desc = pick(data, "description", "dataset", default="")
    rows = [[i, str(pick(c, "file_name", "image", "image_id", default="?")),
             round(1.0 - _case_error(c), 4), round(_case_error(c), 4), _labelled(c),
             None if pick(c, "score") is None else round(float(c["score"]), 3)] for i, c in enumerate(cases)]
    evaluated = pick(pick(data, "data", default={}), "num_people")
    who = (f"the {len(cases)} worst of the {evaluated} people evaluated" if evaluated and evaluated != len(cases)
           else f"{len(cases)} people")  # the same people count as the set's README
    info = (f"**CropCOCO explorer** ({model}): {who}, ranked by Ex-OKS error (1 - Ex-OKS), worst "
            "first (ties: more annotated keypoints first, then the more confident pose). Ground truth is white, the prediction is coloured by presence; keypoints outside the crop "
            "lie on the grey padding." + (f" {desc}" if desc else "") + _data_note(data, cases) + caption(data)
            + place_table(data, model))
    return info, {"headers": TABLE_HEADERS, "data": rows}


def place_table(data: dict | None, model: str) -> str:
    """Markdown: where the model's presence misses on the evaluated set (``analysis.presence.presence_by_place``,
    stored in the set's summary), or "" for sets made before it existed or without keypoints outside the image."""
    summary = pick(pick(data or {}, "summary", default={}), model, default={})
    by = pick(summary, "presence_by_place", default=None)
    if not by or "all" not in by:
        return ""
    score = "heatmap peak" if pick(summary, "kind", default="") == "heatmap" else "presence"
    thr = float(pick(data, "threshold", default=DEFAULT_PRESENCE_THRESHOLD))
    groups = [(g, lab) for g, lab in (("all", "all people"), ("target", "the cut target"),
                                      ("other", "other people in the crop")) if g in by]
    lines = ["", "", f"**Where the presence misses** (keypoints by where they lie; mean {score}, and the share called "
             f"present at {thr:.2f}):", "", "| keypoints | " + " | ".join(lab for _, lab in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for label, cells in place_rows(by, [g for g, _ in groups]):
        lines.append(f"| {label} | " + " | ".join(
            f"{c['n']}: {c['mean_presence']:.2f}, {100 * c['called_present']:.0f}%" if c else "-" for c in cells) + " |")
    orc, auc = by["all"]["image_oracle"]["balanced_error"], by["all"]["image_auc"]
    lines += ["", "Keypoints outside the window should be called absent; those outside the image but inside the "
                  "window (it reaches 12.5% of the box past the edge) present."]
    if orc is not None and auc is not None:  # null when the set holds one class only
        lines[-1] += (f" A presence that knew exactly which keypoints the image shows would score a balanced error "
                      f"of {100 * orc:.1f}%; this model's {score} separates keypoints inside the image from those "
                      f"outside it with AUC {auc:.3f}.")
    return "\n".join(lines)


def _case_image_path(c: dict, data: dict | None = None) -> Path | None:
    """A file holding the case's image as evaluated: an explicit path, or the generated CropCOCO crop when its
    folder is still there (it lives in a temporary cache)."""
    root = pick(pick(data or {}, "data", default={}), "cropcoco_root")
    p = pick(c, "image_path", "path", "file_name", "image")
    if p is None:
        return None
    path = Path(str(p))
    in_set = [Path(data["_dir"]) / "images" / path] if (data or {}).get("_dir") else []  # copied with the set
    for cand in (*in_set, path, settings.PRECOMPUTED_DIR / path, settings.REPO_ROOT / path, settings.SHARED_DATA / path,
                 *([Path(root) / "val2017" / path] if root else [])):
        if cand.is_file():
            return cand
    return None


def _source_image_path(c: dict, data: dict | None) -> Path | None:
    """The val image a CropCOCO case was cut from (relative to the shared data folder)."""
    src, folder = pick(c, "source_file_name"), pick(pick(data or {}, "data", default={}), "images")
    if not src or not folder:
        return None
    for cand in (settings.SHARED_DATA / folder / src, Path(folder) / src):
        if cand.is_file():
            return cand
    return None


def case_image(c: dict, data: dict | None = None) -> tuple[np.ndarray | None, str]:
    """(the case's image, note). CropCOCO crops are re-created from the shared val image and the stored crop
    rectangle; without the data a blank canvas of the crop's size is used so GT and prediction still show."""
    crop = pick(c, "crop_xywh")
    src = _source_image_path(c, data) if crop else None
    if src is not None:
        image, _ = load_input_image(str(src))
        x, y, w, h = (int(v) for v in crop)
        return image[y:y + h, x:x + w], ""
    path = _case_image_path(c, data)
    if path is not None:
        image, _ = load_input_image(str(path))
        return image, ""
    w, h = pick(c, "width"), pick(c, "height")
    folder = pick(pick(data or {}, "data", default={}), "images", default="the evaluation images")
    note = (f" The image is not on this machine (`{settings.SHARED_DATA / str(folder)}` is absent, e.g. on a Space without "
            "../shared/data), so GT and prediction are drawn on a blank canvas of the crop's size.")
    if w and h:
        return np.full((int(h), int(w), 3), 235, np.uint8), note
    return None, note


def _data_note(data: dict | None, cases: list[dict]) -> str:
    if not cases or pick(cases[0], "crop_xywh", "source_file_name") is None:
        return ""
    if _source_image_path(cases[0], data) is not None or _case_image_path(cases[0], data) is not None:
        return ""
    return (f" **The shared data is absent** (`{settings.SHARED_DATA}`): the table and error plots come from the "
            "precomputed results; case drawings use a blank canvas. Set `PROBPOSE_SHARED_DATA` to show the photos.")


def cropcoco_case(model: str = "probpose", rank: int | float = 0, data: dict | None = None,
                  request: gr.Request = None):
    """(drawing with GT + prediction, per-keypoint error figure, markdown) of the case at this rank; a rank
    outside the table is clamped (the markdown says so; ``shown_case`` gives the field's value)."""
    try:
        return _cropcoco_case(model, rank, data if data is not None else load_latest("cropcoco_cases.json",
                                                                                      request))
    except Exception as e:
        msg = user_message(e)
        notify(msg)
        return None, empty_figure("no case"), f"**Could not show the case:** {msg}"


def _cropcoco_case(model: str, rank, data: dict | None):
    cases = ranked_cases(data, model)
    if not cases:
        return None, empty_figure("no cases"), "No cases yet (see above)."
    i, rank_note = person_choice(rank, len(cases), what="case")
    c = cases[i]
    image, note = case_image(c, data)
    gt = np.asarray(pick(c, "gt_keypoints", "gt", default=np.zeros((NUM_KEYPOINTS, 3))), dtype=float)
    pred = np.asarray(pick(c, "pred_keypoints", "keypoints", "pred", default=np.zeros((NUM_KEYPOINTS, 2))), float)
    presence = np.asarray(pick(c, "presence", default=np.ones(NUM_KEYPOINTS)), dtype=float)
    err = np.asarray(pick(c, "per_keypoint_error", "keypoint_errors", default=np.full(NUM_KEYPOINTS, np.nan)),
                     dtype=float)
    drawing = None
    if image is not None:
        thr = float(pick(c, "threshold", default=pick(data, "threshold", default=DEFAULT_PRESENCE_THRESHOLD)))
        drawing = draw_case(image, gt.reshape(-1, 3), pred.reshape(NUM_KEYPOINTS, -1)[:, :2], presence, thr,
                            box_xywh=pick(c, "bbox", "box_xywh"))
    labels = pick(c, "labels", default=[""] * NUM_KEYPOINTS)
    fig = case_error_figure(err, labels, gt.reshape(-1, 3)[:, 2] > 0)
    src = pick(c, "source_file_name")
    crop = pick(c, "crop_xywh")
    md = (f"{rank_note} " if rank_note else "") + (f"Case {i} of {len(cases)}: `{pick(c, 'file_name', 'image', 'image_id', default='?')}`"
          + (f" (crop x,y,w,h = {crop} of `{src}`)" if src and crop else "")
          + f", Ex-OKS {1 - _case_error(c):.3f}" + (f", OKS {c['oks']:.3f}" if pick(c, "oks") is not None else "")
          + "." + (f" What went wrong: {c['problems']}." if pick(c, "problems") else "") + note + caption(data))
    return drawing, fig, md


def cropcoco_recompute(model: str = "probpose", progress=gr.Progress(), request: gr.Request = None):  # noqa: B008
    """Build CropCOCO from the shared val data, evaluate a small subset, rank the cases (this visitor's only)."""
    try:
        data = recompute("compute_cropcoco_cases", "cropcoco_cases.json", progress, request, **model_sources())
        return cropcoco_table(model, data)
    except Exception as e:
        msg = user_message(e)
        notify(msg)
        return (f"**Could not recompute:** {msg}", cropcoco_table(model, request=request)[1])


def cropcoco_shipped(model: str = "probpose", request: gr.Request = None):
    """Forget this visitor's recompute: back to the shipped cases."""
    forget(request, "cropcoco_cases.json")
    return cropcoco_table(model)


def shown_case(model: str = "probpose", rank=0, request: gr.Request = None):
    """The case # field after showing a case: the number typed (or the row clicked), clamped to the table."""
    cases = ranked_cases(load_latest("cropcoco_cases.json", request), model)
    return person_choice(rank, len(cases), what="case")[0] if cases else gr.skip()
