"""What the studio shows is true: the temperature checkbox, credible-region outlines of diffuse maps, the CropCOCO
ranking and its unannotated keypoints, and the example photos' boxes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from studio import calibration, cropcoco, examples, explore, figures, inputs

BOXES_885 = "277,190,417,398\n281,90,393,259"


@pytest.fixture(scope="module")
def calibrated_checkpoint(tmp_path_factory):
    """A tiny ProbPose saved as this repo's calibrated checkpoints are: the config runs at the fitted map
    temperature (2.0) and the metadata records it with the training temperature (0.5)."""
    import torch

    from probpose.models import probpose_test
    from probpose.models.probpose import ProbPose
    from probpose.weights import save_safetensors

    torch.manual_seed(0)
    base = probpose_test()
    model = ProbPose(replace(base.config, temperature=2.0))
    model.load_state_dict(base.state_dict())
    meta = {"calibration": {"map_temperature": 2.0, "train_temperature": 0.5, "presence_temperature": 1.0}}
    return save_safetensors(model.eval(), tmp_path_factory.mktemp("cal") / "cal.safetensors", metadata=meta)


def test_temperature_checkbox_switches_between_the_calibrated_and_the_training_temperature(
        studio_env, calibrated_checkpoint, monkeypatch):
    monkeypatch.setenv("PROBPOSE_WEIGHTS", str(calibrated_checkpoint))
    session, _, on, *_rest, status, _ = explore.explore_run("examples/coco_000000000885.jpg", inputs.BOX_TYPED,
                                                            BOXES_885)
    assert session is not None, status
    assert on["settings"]["map_temperature"] == 2.0 and on["settings"]["calibrated_temperature"] == 2.0
    assert "calibrated temperature T = 2" in status and "training temperature T = 0.5" in status
    off = explore.explore_redraw(session, calibrated=False)
    assert off[1]["settings"]["map_temperature"] == 0.5 and off[1]["settings"]["calibrated_temperature"] is None
    assert "Maps at the training temperature T = 0.5" in off[4]
    # the maps really change: sharper at the lower temperature
    sharp = np.asarray(off[1]["people"][0]["keypoint_scores"])
    flat = np.asarray(on["people"][0]["keypoint_scores"])
    assert not np.allclose(sharp, flat)
    assert session.outputs.temperature == 2.0  # the model as shipped runs at the calibrated temperature


def test_uncalibrated_checkpoint_says_the_box_changes_nothing(studio_env):
    session, _, data, *_rest, status, _ = explore.explore_run("examples/coco_000000000885.jpg", inputs.BOX_TYPED,
                                                              BOXES_885)
    assert "carries no calibrated temperature" in status and "T = 0.5" in status
    off = explore.explore_redraw(session, calibrated=False)
    assert off[1]["people"] == data["people"] and data["settings"]["calibrated_temperature"] is None


class _Person:
    """The parts of a PersonPose that ``figures.region_outlines`` reads, over a given map."""

    is_dual = False

    def __init__(self, pmap):
        self.map = pmap
        self.center, self.scale = np.array([96.0, 128.0]), np.array([192.0, 256.0])

    def credible_region(self, k, mass, which="expert"):
        from probpose import codec

        return codec.credible_region(self.map, mass)


def test_credible_region_outline_of_a_row_striped_map_is_an_area_not_stripes():
    from probpose import codec

    rng = np.random.default_rng(0)
    m = np.zeros((64, 48))
    m[20:40:2, 10:30] = 1.0 + 0.01 * rng.random((10, 20))  # every other row, as the demo model's maps
    m /= m.sum()
    raw = codec.region_outline(codec.credible_region(m, 0.75).mask)
    outlines, frac = figures.region_outlines(_Person(m), 0, 0.75)
    assert len(raw) >= 8 and len(outlines) == 1 and frac < 0.1
    # a diffuse map's region covers most of the window: not outlined at all
    flat = np.full((64, 48), 1.0 / (64 * 48)) + 1e-9 * rng.random((64, 48))
    outlines, frac = figures.region_outlines(_Person(flat / flat.sum()), 0, 0.75)
    assert outlines == [] and frac > figures.DIFFUSE_REGION


def _case(i, error, labelled, score):
    gt = [[10.0, 10.0, 2]] * labelled + [[0.0, 0.0, 0]] * (17 - labelled)
    return {"image_id": i, "file_name": f"{i}.jpg", "error": error, "exoks": 1 - error, "score": score,
            "gt_keypoints": gt, "pred_keypoints": [[5.0, 5.0]] * 17, "presence": [0.9] * 17,
            "per_keypoint_error": [error] * labelled + [None] * (17 - labelled),
            "labels": ["far"] * labelled + ["unlabelled"] * (17 - labelled), "width": 50, "height": 80}


def test_cropcoco_ties_are_broken_by_annotated_keypoints_then_confidence(studio_env):
    data = {"probpose": {"cases": [_case(1, 1.0, 3, 0.9), _case(2, 1.0, 17, 0.1), _case(3, 0.4, 17, 0.9),
                                   _case(4, 1.0, 17, 0.8), _case(5, 1.0, 3, 0.2)]}}
    info, table = cropcoco.cropcoco_table("probpose", data)
    assert [r[1] for r in table["data"]] == ["4.jpg", "2.jpg", "1.jpg", "5.jpg", "3.jpg"]
    assert table["headers"][4:] == ["annotated keypoints", "pose score"] and table["data"][0][4:] == [17, 0.8]
    assert "ties" in info
    data["data"] = {"num_people": 159}  # the set evaluated more people than it keeps as cases
    assert "the 5 worst of the 159 people evaluated" in cropcoco.cropcoco_table("probpose", data)[0]


def test_cropcoco_tab_says_where_the_presence_misses(studio_env):
    place = {"places": {"in_image": {"n": 40, "mean_presence": 0.96, "called_present": 1.0},
                        "out_window": {"n": 8, "mean_presence": 0.74, "called_present": 0.875}},
             "image_oracle": {"balanced_error": 0.13}, "image_auc": 0.778}
    data = {"threshold": 0.3, "probpose": {"cases": [_case(1, 0.5, 17, 0.9)]},
            "summary": {"probpose": {"presence_by_place": {"all": place, "other": place}}}}
    info, _ = cropcoco.cropcoco_table("probpose", data)
    assert "**Where the presence misses**" in info and "called present at 0.30" in info
    assert "| outside the window | 8: 0.74, 88% | 8: 0.74, 88% |" in info
    assert "outside the image, inside the window" not in info  # a place with no keypoints has no row
    assert "balanced error of 13.0%" in info and "AUC 0.778" in info
    heat = {**data, "summary": {"probpose": {"kind": "heatmap", "presence_by_place": {"all": place}}}}
    assert "mean heatmap peak" in cropcoco.cropcoco_table("probpose", heat)[0]  # the baseline's "presence"
    # a model without the split in its summary (a set made before it existed) gets no table
    assert "Where the presence misses" not in cropcoco.cropcoco_table("baseline", {
        **data, "baseline": {"cases": [_case(1, 0.5, 17, 0.9)]}})[0]


def test_unannotated_keypoints_are_not_shown_as_perfect(studio_env):
    data = {"probpose": {"cases": [_case(1, 0.7, 5, 0.5)]}}
    drawing, fig, md = cropcoco.cropcoco_case("probpose", 0, data)
    bars, na = fig.data
    assert np.isnan(np.asarray(bars.y, float)[5:]).all() and np.allclose(np.asarray(bars.y, float)[:5], 0.7)
    assert na.name == "not annotated" and list(na.text) == ["n/a"] * 12 and drawing is not None


def test_case_number_out_of_range_is_clamped_and_said(studio_env, monkeypatch):
    data = {"probpose": {"cases": [_case(i, 0.1 * i, 17, 0.5) for i in range(1, 4)]}}
    _, _, md = cropcoco.cropcoco_case("probpose", 9, data)
    assert md.startswith("Case # 9 does not exist here (3 cases, numbered 0 to 2): showing 2.")
    monkeypatch.setattr(cropcoco, "load_latest", lambda name, request=None: data)
    assert cropcoco.shown_case("probpose", 9) == 2 and cropcoco.shown_case("probpose", 1) == 1


def test_example_boxes_are_the_coco_ground_truth(coco_val):
    ann = json.loads(coco_val[1].read_text())
    for image_id, text in examples.EXAMPLE_BOXES.items():
        want = {tuple(round(v) for v in (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                         a["bbox"][1] + a["bbox"][3]))
                for a in ann["annotations"] if a["image_id"] == image_id and a["num_keypoints"] >= 10
                and not a.get("iscrowd")}
        got = {tuple(int(v) for v in line.split(",")) for line in text.splitlines()}
        assert got == want, image_id
    assert examples.example_boxes("x/astronaut.jpg") == (inputs.BOX_WHOLE, "")
    assert examples.example_boxes({"path": "/tmp/gradio/ab/c.jpg", "orig_name": "coco_000000000885.jpg"})[0] \
        == inputs.BOX_TYPED
    assert examples.example_boxes("mine.jpg", inputs.BOX_WHOLE, "") == (inputs.BOX_WHOLE, "")


def test_a_temperature_fit_on_its_search_bound_is_reported_as_such(studio_env):
    from analysis.calibration import MAP_TEMPERATURE_BOUNDS, at_bound

    assert at_bound(4.964, (0.05, 5.0)) and not at_bound(4.06, MAP_TEMPERATURE_BOUNDS)
    assert at_bound(0.0505, MAP_TEMPERATURE_BOUNDS) and MAP_TEMPERATURE_BOUNDS[1] > 5.0
    q = [0.25, 0.5, 0.75, 1.0]
    data = {"maps": {"temperature": 4.964, "model_temperature": 4.06, "at_bound": True, "bounds": [0.05, 5.0],
                     "before": {"levels": q, "hit_rate": q, "ece": 0.1}, "after": {"levels": q, "hit_rate": q,
                                                                                 "ece": 0.05}}}
    _, fig, _, table = calibration.calibration_views(data)
    assert table["data"][0][-1] == "at the search bound (no optimum inside [0.05, 5.0])"
    assert [t.name for t in fig.data][1:] == ["as the model runs (T=4.06) (ECE 0.100)",
                                             "refitted (T=4.96, at bound) (ECE 0.050)"]


def test_threshold_redraws_reuse_the_map_layer_and_draw_what_a_fresh_drawing_shows(studio_env):
    """The keypoint's map overlay and credible region (``figures.map_layer``) are cached across threshold redraws;
    the drawing still equals one made from scratch, and the skeleton follows the threshold."""
    from probpose.constants import KEYPOINT_NAMES
    from studio.settings import DEFAULT_MASS
    from studio.state import DECODER_ARGMAX, DECODER_EOKS, decode_session

    k = KEYPOINT_NAMES.index("left_knee")
    session, *_ = explore.explore_run("examples/coco_000000000885.jpg", inputs.BOX_TYPED, BOXES_885,
                                      keypoint="left_knee")
    layer = session.views["layer"]
    drawings = {}
    for thr in (0.05, 0.95):
        drawings[thr] = explore.explore_redraw(session, threshold=thr, keypoint="left_knee")[0]
        assert session.views["layer"] is layer  # reused, not rebuilt
        fresh = figures.draw_result(session.image, decode_session(session, DECODER_EOKS, thr, True),
                                    highlight_person=0, keypoint=k, mass=DEFAULT_MASS)
        np.testing.assert_array_equal(drawings[thr], fresh)
    assert not np.array_equal(drawings[0.05], drawings[0.95])  # keypoints above / below the threshold differ
    # the decoder moves the keypoints, not the map: same layer, the drawing still equals a fresh one
    argmax = explore.explore_redraw(session, decoder=DECODER_ARGMAX, threshold=0.95, keypoint="left_knee")[0]
    assert session.views["layer"] is layer
    np.testing.assert_array_equal(argmax, figures.draw_result(
        session.image, decode_session(session, DECODER_ARGMAX, 0.95, True), highlight_person=0, keypoint=k))
    # another credible mass is another layer
    other = explore.explore_redraw(session, threshold=0.95, mass=0.5, keypoint="left_knee")[0]
    assert session.views["layer"] is not layer
    np.testing.assert_array_equal(other, figures.draw_result(
        session.image, decode_session(session, DECODER_EOKS, 0.95, True), highlight_person=0, keypoint=k, mass=0.5))
