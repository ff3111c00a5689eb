"""ProbPose Studio: the Gradio research demo. `python app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured).

Only wiring lives here; every handler is a plain function in `studio.app_handlers` (tested without Gradio).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at start-up

import gradio as gr  # noqa: E402

from studio import app_handlers as H  # noqa: E402  (imports `spaces` before torch, for ZeroGPU)

KEYPOINTS = list(H.KEYPOINT_NAMES)
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
    return H.add_box_corner(pending, boxes_text, evt.index)


def _crop_row(model, evt: gr.SelectData):
    rank = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return (rank, *H.cropcoco_case(model, rank))


def build_demo() -> gr.Blocks:
    examples = H.example_images()
    with gr.Blocks(title="ProbPose Studio", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("Model: small demo model by default; how to load the official ProbPose-s", open=True):
            gr.Markdown(H.embedded_status())
            with gr.Row():
                model = gr.Dropdown(H.PROBPOSE_CHOICES, value=H.MODEL_EMBEDDED, label="ProbPose model", scale=2)
                model_path = gr.Textbox("", label="weights: local .pth / .safetensors path or Hub id", scale=2,
                                        placeholder="vrg-prague/ProbPose-s  or  /path/to/ProbPose-s.pth")

        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------------------------------- 1
            with gr.Tab("Explore an image", id="explore"):
                session = gr.State(None)
                corner = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _image_input("image (upload, webcam, paste)")
                        box_mode = gr.Radio(H.BOX_CHOICES, value=H.BOX_AUTO, label="person boxes")
                        boxes = gr.Textbox("", label="boxes: x1,y1,x2,y2 per line (or click two corners on the image)",
                                           lines=2)
                        with gr.Row():
                            box_hint = gr.Markdown("Click two opposite corners on the image to draw a box.")
                            clear = gr.Button("clear boxes", size="sm")
                        run = gr.Button("Run", variant="primary")
                        predict_btn = gr.Button("predict", visible=False)  # API-only trigger
                    with gr.Column(scale=2):
                        drawing = gr.Image(label="poses on a padded canvas", type="numpy", format="png",
                                           interactive=False, height=520)
                        status = gr.Markdown("Upload an image (or click an example) and press **Run**.")
                with gr.Row():
                    decoder = gr.Radio(H.DECODER_CHOICES, value=H.DECODER_EOKS, label="decoder")
                    threshold = gr.Slider(0.0, 1.0, value=H.DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                          label="presence threshold")
                    mass = gr.Slider(0.05, 0.99, value=H.DEFAULT_MASS, step=0.01, label="credible mass")
                with gr.Row():
                    keypoint = gr.Dropdown(KEYPOINTS, value=KEYPOINTS[0], label="keypoint")
                    person = gr.Number(value=0, precision=0, minimum=0, label="person #")
                    calibrated = gr.Checkbox(False, label="calibrated temperature (if the checkpoint has one)")
                with gr.Row():
                    kp_plot = gr.Plot(label="selected keypoint: map, expected OKS, credible region")
                with gr.Row():
                    bars = gr.Plot(label="per-keypoint presence, visibility, predicted OKS")
                with gr.Row():
                    with gr.Accordion("keypoints JSON", open=False):
                        result_json = gr.JSON(label="keypoints")
                    download = gr.DownloadButton("Download JSON", value=None)
                outputs = [drawing, result_json, bars, kp_plot, status, download]
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], outputs=[session, *outputs],
                                fn=H.explore_example, cache_examples=True, cache_mode="lazy", preprocess=False,
                                label="examples (cached after the first click)")
                run.click(H.explore_run, api_name="explore", preprocess=False,
                          inputs=[image, box_mode, boxes, model, model_path, decoder, threshold, mass, keypoint,
                                  person, calibrated],
                          outputs=[session, *outputs])
                gr.on([decoder.change, threshold.release, mass.release, keypoint.change, person.submit,
                       calibrated.change], H.explore_redraw, api_name="redraw", trigger_mode="always_last",
                      inputs=[session, decoder, threshold, mass, keypoint, person, calibrated], outputs=outputs)
                predict_btn.click(H.predict, api_name="predict", preprocess=False,
                                  inputs=[image, boxes, model, model_path, decoder, threshold],
                                  outputs=[result_json, drawing])
                image.select(_corner, inputs=[corner, boxes], outputs=[corner, boxes, box_mode,
                                                                                      box_hint],
                             api_visibility="private")
                clear.click(H.clear_boxes, outputs=[corner, boxes, box_hint], api_visibility="private")

            # ---------------------------------------------------------------------------------------- 2
            with gr.Tab("Compare with a heatmap baseline", id="compare"):
                cmp_state = gr.State(None)
                gr.Markdown("The same crops through ProbPose (model chosen above) and the ViTPose-style heatmap "
                            "baseline. ProbPose says *where* and *whether inside*; the baseline always answers "
                            "with a location inside the window and only a peak height.")
                with gr.Row():
                    with gr.Column(scale=1):
                        cmp_image = _image_input("image")
                        cmp_box_mode = gr.Radio(H.BOX_CHOICES, value=H.BOX_AUTO, label="person boxes")
                        cmp_boxes = gr.Textbox("", label="boxes: x1,y1,x2,y2 per line", lines=2)
                        cmp_run = gr.Button("Compare", variant="primary")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[cmp_image], label="examples")
                    with gr.Column(scale=2):
                        with gr.Row():
                            cmp_pp = gr.Image(label="ProbPose", type="numpy", format="png", interactive=False)
                            cmp_hm = gr.Image(label="heatmap baseline", type="numpy", format="png",
                                              interactive=False)
                        cmp_status = gr.Markdown()
                with gr.Row():
                    cmp_kp = gr.Dropdown(KEYPOINTS, value=KEYPOINTS[0], label="keypoint")
                    cmp_thr = gr.Slider(0.0, 1.0, value=H.DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                        label="presence / peak threshold")
                    cmp_person = gr.Number(value=0, precision=0, minimum=0, label="person #")
                cmp_maps = gr.Plot(label="maps of the selected keypoint")
                cmp_scores = gr.Plot(label="presence vs heatmap peak")
                cmp_table = gr.Dataframe(headers=H.COMPARE_HEADERS, label="what each model says", wrap=True)
                cmp_outputs = [cmp_pp, cmp_hm, cmp_maps, cmp_scores, cmp_table, cmp_status]
                cmp_run.click(H.compare_run, api_name="compare", preprocess=False,
                              inputs=[cmp_image, cmp_box_mode, cmp_boxes, model, model_path, cmp_kp, cmp_thr,
                                      cmp_person],
                              outputs=[cmp_state, *cmp_outputs])
                gr.on([cmp_kp.change, cmp_thr.release, cmp_person.submit], H.compare_redraw,
                      api_name="compare_redraw", trigger_mode="always_last",
                      inputs=[cmp_state, cmp_kp, cmp_thr, cmp_person], outputs=cmp_outputs)

            # ---------------------------------------------------------------------------------------- 3
            with gr.Tab("CropCOCO explorer", id="cropcoco"):
                crop_info = gr.Markdown()
                with gr.Row():
                    crop_model = gr.Radio(["probpose", "baseline"], value="probpose", label="predictions of")
                    crop_rank = gr.Number(value=0, precision=0, minimum=0, label="case # (0 = worst Ex-OKS)")
                    crop_show = gr.Button("Show case")
                crop_table = gr.Dataframe(label="cases ranked by Ex-OKS error (worst first)", max_height=260)
                with gr.Row():
                    crop_image = gr.Image(label="ground truth (white) and prediction", type="numpy", format="png",
                                          interactive=False, scale=2)
                    crop_err = gr.Plot(label="per-keypoint error", scale=1)
                crop_case_md = gr.Markdown()
                crop_compute = gr.Button("Recompute on a small subset (slow on CPU)")
                crop_table_outputs = [crop_info, crop_table]
                crop_case_outputs = [crop_image, crop_err, crop_case_md]
                crop_show.click(H.cropcoco_case, api_name="cropcoco_case", inputs=[crop_model, crop_rank],
                                outputs=crop_case_outputs)
                crop_table.select(_crop_row, inputs=[crop_model], outputs=[crop_rank, *crop_case_outputs],
                                  api_visibility="private")
                crop_model.change(H.cropcoco_table, inputs=[crop_model], outputs=crop_table_outputs,
                                  api_name="cropcoco_table")
                crop_compute.click(H.cropcoco_recompute, api_name="cropcoco_recompute", inputs=[crop_model],
                                   outputs=crop_table_outputs)

            # ---------------------------------------------------------------------------------------- 4
            with gr.Tab("Calibration", id="calibration"):
                cal_info = gr.Markdown()
                with gr.Row():
                    cal_maps = gr.Plot(label="probability maps: coverage of the credible regions")
                    cal_presence = gr.Plot(label="presence: reliability")
                cal_table = gr.Dataframe(label="expected calibration error (ECE)")
                cal_compute = gr.Button("Recompute on a small subset (slow on CPU)")
                cal_outputs = [cal_info, cal_maps, cal_presence, cal_table]
                cal_compute.click(H.calibration_recompute, api_name="calibration_recompute", outputs=cal_outputs)

            # ---------------------------------------------------------------------------------------- 5
            with gr.Tab("Threshold sweep", id="sweep"):
                sweep_info = gr.Markdown()
                sweep_plot = gr.Plot(label="mAP, Ex-mAP and presence error vs the presence threshold")
                with gr.Row():
                    with gr.Column(scale=1):
                        sweep_image = _image_input("image to try the threshold on")
                        sweep_thr = gr.Slider(0.0, 1.0, value=H.DEFAULT_PRESENCE_THRESHOLD, step=0.01,
                                              label="presence threshold")
                        sweep_go = gr.Button("Apply threshold", variant="primary")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[sweep_image], label="examples")
                    with gr.Column(scale=2):
                        sweep_draw = gr.Image(label="ProbPose at this threshold", type="numpy", format="png",
                                              interactive=False)
                        sweep_md = gr.Markdown()
                sweep_compute = gr.Button("Recompute the sweep on a small subset (slow on CPU)")
                sweep_state = gr.State(None)
                sweep_outputs = [sweep_info, sweep_plot]
                sweep_go.click(H.sweep_preview, api_name="sweep_preview", preprocess=False,
                               inputs=[sweep_state, sweep_image, sweep_thr, model, model_path],
                               outputs=[sweep_state, sweep_draw, sweep_md])
                sweep_thr.release(H.sweep_preview, api_visibility="private", preprocess=False,
                                  inputs=[sweep_state, sweep_image, sweep_thr, model, model_path],
                                  outputs=[sweep_state, sweep_draw, sweep_md])
                sweep_compute.click(H.sweep_recompute, api_name="sweep_recompute", outputs=sweep_outputs)

        # `?tab=<id>` selects a tab; `&example=<i>` also runs that example there (links, screenshot script)
        def _on_load(request: gr.Request):
            q = _query(request)
            return (gr.Tabs(selected=H.tab_from_query(q)),
                    *_or_skip(H.startup_explore(q), 2 + len(outputs)),
                    *_or_skip(H.startup_compare(q), 2 + len(cmp_outputs)),
                    *_or_skip(H.startup_sweep(q), 4))

        demo.load(_on_load, api_visibility="private",
                  outputs=[tabs, image, session, *outputs, cmp_image, cmp_state, *cmp_outputs,
                           sweep_image, sweep_state, sweep_draw, sweep_md])
        demo.load(H.analysis_views, api_name="analysis",
                  outputs=[*crop_table_outputs, *cal_outputs, *sweep_outputs])
    return demo


demo = build_demo()
# CPU: two requests at a time (2 cores); a GPU serves more. The queue holds the rest.
demo.queue(default_concurrency_limit=int(os.environ.get("PROBPOSE_APP_CONCURRENCY", "2")), max_size=64)

if __name__ == "__main__":
    demo.launch(theme=THEME, max_file_size="50mb", show_error=True, allowed_paths=H.allowed_paths())
