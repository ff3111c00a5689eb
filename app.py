"""ProbPose Studio: the Gradio research demo. `python app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured).

Only wiring lives here; every handler is a plain function in the `studio` package, one module per tab
(`studio.explore`, `.compare`, `.cropcoco`, `.calibration`, `.sweep`), tested without Gradio in tests/studio/.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at start-up


from studio import memory  # noqa: E402  (ctypes only: before torch and Gradio start threads)

memory.bound_malloc(int(os.environ.get("PROBPOSE_APP_MALLOC_ARENAS", "2")))  # RSS bounded under concurrent visitors

import gradio as gr  # noqa: E402

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, KEYPOINT_NAMES  # noqa: E402
from studio import (  # noqa: E402  (studio/__init__ imports `spaces` before torch, for ZeroGPU)
    calibration,
    compare,
    cropcoco,
    examples,
    explore,
    gradio_fixes,
    inputs,
    models,
    settings,
    state,
    sweep,
)

gradio_fixes.install()  # concurrent visitors of the same picture must not get a half-written image

KEYPOINTS = list(KEYPOINT_NAMES)
# System fonts only: the default theme would fetch Google fonts, and the app must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
INTRO = """# ProbPose Studio
**ProbPose** (CVPR 2025) predicts, for every keypoint, a *probability map* over the activation window (not a
heatmap), a **presence** probability (is the keypoint inside the window at all?), visibility and a predicted OKS, and
decodes the location that maximises the *expected OKS*. Upload a photo: keypoints outside the image are drawn on the
grey padding, the green rectangle is the activation window, and the sliders re-decode without re-running the net."""


def _image_input(label: str) -> gr.Image:
    # type="filepath" and preprocess=False on the events: our loader (EXIF, 16-bit, CMYK, size cap) reads the file
    return gr.Image(label=label, sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                    height=340)


def _query(request: gr.Request | None) -> dict:
    return dict(request.query_params) if request is not None else {}


def _or_skip(values, n: int):
    return values if values is not None else tuple(gr.skip() for _ in range(n))


def _corner(pending, boxes_text, evt: gr.SelectData):
    return inputs.add_box_corner(pending, boxes_text, evt.index)


def _crop_row(model, evt: gr.SelectData, request: gr.Request):
    rank = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return (rank, *cropcoco.cropcoco_case(model, rank, request=request))


def _examples(paths: list[str], image: gr.Image, fn=None, inputs=None, outputs=None) -> gr.helpers.Examples | None:
    """Example photos under an image input; with ``fn``, a click also runs it (see ``_run_example``)."""
    if not paths:
        return None
    ex = gr.Examples(examples=[[p] for p in paths], inputs=[image], label="examples (click one to run it)")
    if fn is not None:
        _run_example(ex, fn, inputs, outputs)
    return ex


def _run_example(ex: gr.helpers.Examples | None, fn, inputs, outputs) -> None:
    """After an example fills the image, run the tab's handler on it with the tab's current settings. Not cached:
    Gradio's example cache writes every output to a CSV row, and the session state is megabytes."""
    if ex is not None:
        ex.load_input_event.then(fn, inputs=inputs, outputs=outputs, preprocess=False, api_visibility="private")


def analysis_views():
    """Everything the analysis tabs show on page load (cheap: precomputed JSON only)."""
    return (*cropcoco.cropcoco_table("probpose"), *calibration.calibration_views(), *sweep.sweep_views())


# Gradio 6 fires a slider's `release` (our redraw trigger) on pointer-up only, so moving a slider with the arrow keys
# changed its value without a redraw. A key that moves a range input ends with the same pointer-up event.
SLIDER_KEYS_JS = """() => {
  const keys = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"];
  document.addEventListener("keyup", (e) => {
    if (e.target && e.target.type === "range" && keys.includes(e.key)) {
      e.target.dispatchEvent(new PointerEvent("pointerup", {bubbles: true}));
    }
  });
}"""


def build_demo() -> gr.Blocks:
    example_paths = examples.example_images()
    with gr.Blocks(title="ProbPose Studio", analytics_enabled=False,
                   delete_cache=(settings.CACHE_SWEEP_SECONDS, settings.CACHE_MAX_AGE_SECONDS)) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion(models.header_title(), open=True):
            gr.Markdown(models.embedded_status())
            with gr.Row():
                model = gr.Dropdown(models.PROBPOSE_CHOICES, value=models.MODEL_DEFAULT, label="ProbPose model", scale=2)
                model_path = gr.Textbox("", label="weights: local .pth / .safetensors path or Hub id", scale=2,
                                        placeholder="vrg-prague/ProbPose-s  or  /path/to/ProbPose-s.pth")

        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------------------------------- 1
            with gr.Tab("Explore an image", id="explore"):
                session = gr.State(None, time_to_live=settings.SESSION_TTL_SECONDS)
                corner = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _image_input("image (upload, webcam, paste)")
                        box_mode = gr.Radio(inputs.BOX_CHOICES, value=inputs.BOX_AUTO, label="person boxes")
                        boxes = gr.Textbox("", label="boxes: x1,y1,x2,y2 per line (or click two corners on the image)",
                                           lines=2)
                        with gr.Row():
                            box_hint = gr.Markdown("Click two opposite corners on the image to draw a box.", label="box hint")
                            clear = gr.Button("clear boxes", size="sm")
                        run = gr.Button("Run", variant="primary")
                        predict_btn = gr.Button("predict", visible=False)  # API-only trigger
                    with gr.Column(scale=2):
                        drawing = gr.Image(label="poses on a padded canvas", type="numpy", format="jpeg",
                                           interactive=False, height=520, elem_id="explore-drawing")
                        status = gr.Markdown("Upload an image (or click an example) and press **Run**.",
                                             elem_id="explore-status", label="status")
                with gr.Row():
                    decoder = gr.Radio(state.DECODER_CHOICES, value=state.DECODER_EOKS, label="decoder")
                    threshold = gr.Slider(0.0, 1.0, value=DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                          label="presence threshold", elem_id="explore-threshold")
                    mass = gr.Slider(0.05, 0.99, value=settings.DEFAULT_MASS, step=0.01, label="credible mass")
                with gr.Row():
                    keypoint = gr.Dropdown(KEYPOINTS, value=KEYPOINTS[0], label="keypoint")
                    person = gr.Number(value=0, precision=0, minimum=0, label="person #")
                    calibrated = gr.Checkbox(True, label="calibrated map temperature (untick: the training temperature)")
                with gr.Row():
                    kp_plot = gr.Plot(label="selected keypoint: map, expected OKS, credible region")
                with gr.Row():
                    bars = gr.Plot(label="per-keypoint presence, visibility, predicted OKS", elem_id="explore-bars")
                with gr.Row():
                    with gr.Accordion("keypoints JSON", open=False):
                        result_json = gr.JSON(label="keypoints")
                    download = gr.DownloadButton("Download JSON", value=None)
                outputs = [drawing, result_json, bars, kp_plot, status, download]

                explore_inputs = [image, box_mode, boxes, model, model_path, decoder, threshold, mass, keypoint,
                                  person, calibrated]
                fix_person = dict(fn=explore.shown_person, inputs=[session, person], outputs=[person],
                                  api_visibility="private")  # the field shows the person # drawn (clamped)
                run.click(explore.explore_run, api_name="explore", preprocess=False, inputs=explore_inputs,
                          outputs=[session, *outputs]).then(**fix_person)
                # an example click fills the image and runs it on its people's boxes with the other current
                # settings (never cached: Gradio's example cache cannot hold the session state)
                _examples(example_paths, image, explore.explore_example, explore_inputs,
                          [box_mode, boxes, session, *outputs])
                gr.on([decoder.change, threshold.release, mass.release, keypoint.change, person.submit,
                       calibrated.change], explore.explore_redraw, api_name="redraw", trigger_mode="always_last",
                      inputs=[session, decoder, threshold, mass, keypoint, person, calibrated],
                      outputs=outputs).then(**fix_person)
                predict_btn.click(explore.predict, api_name="predict", preprocess=False,
                                  inputs=[image, boxes, model, model_path, decoder, threshold],
                                  outputs=[result_json, drawing])
                image.select(_corner, inputs=[corner, boxes], outputs=[corner, boxes, box_mode,
                                                                                      box_hint],
                             api_visibility="private")
                clear.click(inputs.clear_boxes, outputs=[corner, boxes, box_hint], api_visibility="private")

            # ---------------------------------------------------------------------------------------- 2
            with gr.Tab("Compare with a heatmap baseline", id="compare"):
                cmp_state = gr.State(None, time_to_live=settings.SESSION_TTL_SECONDS)
                gr.Markdown("The same crops through ProbPose (model chosen above) and the ViTPose-style heatmap "
                            "baseline. ProbPose says *where* and *whether inside*; the baseline always answers "
                            "with a location inside the window and only a peak height.")
                with gr.Row():
                    with gr.Column(scale=1):
                        cmp_image = _image_input("image")
                        cmp_box_mode = gr.Radio(inputs.BOX_CHOICES, value=inputs.BOX_AUTO, label="person boxes")
                        cmp_boxes = gr.Textbox("", label="boxes: x1,y1,x2,y2 per line", lines=2)
                        cmp_run = gr.Button("Compare", variant="primary")
                        cmp_examples = _examples(example_paths, cmp_image)
                    with gr.Column(scale=2):
                        with gr.Row():
                            cmp_pp = gr.Image(label="ProbPose", type="numpy", format="png", interactive=False,
                                              elem_id="compare-drawing")
                            cmp_hm = gr.Image(label="heatmap baseline", type="numpy", format="png",
                                              interactive=False)
                        cmp_status = gr.Markdown(elem_id="compare-status", label="status")
                with gr.Row():
                    cmp_kp = gr.Dropdown(KEYPOINTS, value=KEYPOINTS[0], label="keypoint")
                    cmp_thr = gr.Slider(0.0, 1.0, value=DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                        label="presence / peak threshold")
                    cmp_person = gr.Number(value=0, precision=0, minimum=0, label="person #")
                cmp_maps = gr.Plot(label="maps of the selected keypoint")
                cmp_scores = gr.Plot(label="presence vs heatmap peak")
                cmp_table = gr.Dataframe(headers=compare.COMPARE_HEADERS, label="what each model says", wrap=True)
                cmp_outputs = [cmp_pp, cmp_hm, cmp_maps, cmp_scores, cmp_table, cmp_status]
                cmp_inputs = [cmp_image, cmp_box_mode, cmp_boxes, model, model_path, cmp_kp, cmp_thr, cmp_person]
                cmp_fix = dict(fn=compare.shown_person, inputs=[cmp_state, cmp_person], outputs=[cmp_person],
                               api_visibility="private")
                cmp_run.click(compare.compare_run, api_name="compare", preprocess=False, inputs=cmp_inputs,
                              outputs=[cmp_state, *cmp_outputs]).then(**cmp_fix)
                _run_example(cmp_examples, compare.compare_example, cmp_inputs,
                             [cmp_box_mode, cmp_boxes, cmp_state, *cmp_outputs])
                gr.on([cmp_kp.change, cmp_thr.release, cmp_person.submit], compare.compare_redraw,
                      api_name="compare_redraw", trigger_mode="always_last",
                      inputs=[cmp_state, cmp_kp, cmp_thr, cmp_person], outputs=cmp_outputs).then(**cmp_fix)

            # ---------------------------------------------------------------------------------------- 3
            with gr.Tab("CropCOCO explorer", id="cropcoco"):
                crop_info = gr.Markdown(label="about the cases")
                with gr.Row():
                    crop_model = gr.Radio(["probpose", "baseline"], value="probpose", label="predictions of")
                    crop_rank = gr.Number(value=0, precision=0, minimum=0, label="case # (0 = worst Ex-OKS)")
                    crop_show = gr.Button("Show case")
                crop_table = gr.Dataframe(label="cases ranked by Ex-OKS error (worst first)", max_height=260)
                with gr.Row():
                    crop_image = gr.Image(label="ground truth (white) and prediction", type="numpy", format="png",
                                          interactive=False, scale=2)
                    crop_err = gr.Plot(label="per-keypoint error", scale=1)
                crop_case_md = gr.Markdown(label="case", elem_id="cropcoco-case")
                with gr.Row():
                    crop_compute = gr.Button("Recompute on a small subset (slow on CPU)")
                    crop_back = gr.Button("Back to the shipped results")
                crop_table_outputs = [crop_info, crop_table]
                crop_case_outputs = [crop_image, crop_err, crop_case_md]
                # the case at the rank field, redrawn after the table changes (page load, model radio)
                show_case = dict(fn=cropcoco.cropcoco_case, inputs=[crop_model, crop_rank], outputs=crop_case_outputs,
                                 api_visibility="private")
                crop_show.click(cropcoco.cropcoco_case, api_name="cropcoco_case", inputs=[crop_model, crop_rank],
                                outputs=crop_case_outputs).then(cropcoco.shown_case, inputs=[crop_model, crop_rank],
                                                                outputs=[crop_rank], api_visibility="private")
                crop_table.select(_crop_row, inputs=[crop_model], outputs=[crop_rank, *crop_case_outputs],
                                  api_visibility="private")
                crop_model.change(cropcoco.cropcoco_table, inputs=[crop_model], outputs=crop_table_outputs,
                                  api_name="cropcoco_table").then(**show_case)
                crop_compute.click(cropcoco.cropcoco_recompute, api_name="cropcoco_recompute", inputs=[crop_model],
                                   outputs=crop_table_outputs)
                crop_back.click(cropcoco.cropcoco_shipped, inputs=[crop_model], outputs=crop_table_outputs,
                                api_visibility="private")

            # ---------------------------------------------------------------------------------------- 4
            with gr.Tab("Calibration", id="calibration"):
                cal_info = gr.Markdown(label="about the calibration")
                with gr.Row():
                    cal_maps = gr.Plot(label="probability maps: coverage of the credible regions")
                    cal_presence = gr.Plot(label="presence: reliability")
                cal_table = gr.Dataframe(label="expected calibration error (ECE)")
                with gr.Row():
                    cal_compute = gr.Button("Recompute on a small subset (slow on CPU)")
                    cal_back = gr.Button("Back to the shipped results")
                cal_outputs = [cal_info, cal_maps, cal_presence, cal_table]
                cal_compute.click(calibration.calibration_recompute, api_name="calibration_recompute", outputs=cal_outputs)
                cal_back.click(calibration.calibration_shipped, outputs=cal_outputs, api_visibility="private")

            # ---------------------------------------------------------------------------------------- 5
            with gr.Tab("Threshold sweep", id="sweep"):
                sweep_info = gr.Markdown(label="about the sweep")
                sweep_plot = gr.Plot(label="mAP, Ex-mAP and presence error vs the presence threshold")
                with gr.Row():
                    with gr.Column(scale=1):
                        sweep_image = _image_input("image to try the threshold on")
                        sweep_thr = gr.Slider(0.0, 1.0, value=DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                              label="presence threshold")
                        sweep_box_mode = gr.Radio(inputs.BOX_CHOICES, value=inputs.BOX_AUTO, label="person boxes")
                        sweep_boxes = gr.Textbox("", label="boxes: x1,y1,x2,y2 per line", lines=2)
                        sweep_go = gr.Button("Apply threshold", variant="primary")
                        sweep_examples = _examples(example_paths, sweep_image)
                    with gr.Column(scale=2):
                        sweep_draw = gr.Image(label="ProbPose at this threshold", type="numpy", format="png",
                                              interactive=False, elem_id="sweep-drawing")
                        sweep_md = gr.Markdown(elem_id="sweep-status", label="status")
                with gr.Row():
                    sweep_compute = gr.Button("Recompute the sweep on a small subset (slow on CPU)")
                    sweep_back = gr.Button("Back to the shipped results")
                sweep_state = gr.State(None, time_to_live=settings.SESSION_TTL_SECONDS)
                sweep_outputs = [sweep_info, sweep_plot]
                sweep_inputs = [sweep_state, sweep_image, sweep_thr, model, model_path, sweep_box_mode, sweep_boxes]
                sweep_go.click(sweep.sweep_preview, api_name="sweep_preview", preprocess=False, inputs=sweep_inputs,
                               outputs=[sweep_state, sweep_draw, sweep_md])
                sweep_thr.release(sweep.sweep_preview, api_visibility="private", preprocess=False,
                                  inputs=sweep_inputs, outputs=[sweep_state, sweep_draw, sweep_md])
                _run_example(sweep_examples, sweep.sweep_example, sweep_inputs,
                             [sweep_box_mode, sweep_boxes, sweep_state, sweep_draw, sweep_md])
                sweep_compute.click(sweep.sweep_recompute, api_name="sweep_recompute", outputs=sweep_outputs)
                sweep_back.click(sweep.sweep_shipped, outputs=sweep_outputs, api_visibility="private")

        # `?tab=<id>` selects a tab; `&example=<i>` also runs that example there (links, screenshot script)
        def _on_load(request: gr.Request):
            q = _query(request)
            return (gr.Tabs(selected=examples.tab_from_query(q)),
                    *_or_skip(explore.startup_explore(q), 4 + len(outputs)),
                    *_or_skip(compare.startup_compare(q), 4 + len(cmp_outputs)),
                    *_or_skip(sweep.startup_sweep(q), 6))

        demo.load(_on_load, api_visibility="private",
                  outputs=[tabs, image, box_mode, boxes, session, *outputs,
                           cmp_image, cmp_box_mode, cmp_boxes, cmp_state, *cmp_outputs,
                           sweep_image, sweep_box_mode, sweep_boxes, sweep_state, sweep_draw, sweep_md])
        demo.load(analysis_views, api_name="analysis",
                  outputs=[*crop_table_outputs, *cal_outputs, *sweep_outputs]).then(**show_case)
        demo.load(None, js=SLIDER_KEYS_JS)  # browser only: arrow keys on a slider redraw as a mouse release does
    return demo


demo = build_demo()
# CPU: two requests at a time (2 cores); a GPU serves more. The queue holds the rest.
demo.queue(default_concurrency_limit=int(os.environ.get("PROBPOSE_APP_CONCURRENCY", "2")), max_size=64)

if __name__ == "__main__":
    demo.launch(theme=THEME, max_file_size="50mb", show_error=True, allowed_paths=settings.allowed_paths(),
                state_session_capacity=settings.MAX_SESSIONS)
