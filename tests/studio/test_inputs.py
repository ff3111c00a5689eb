"""User input in the studio: every mistake is a short user-level message (never "Internal error"), numbers out of
range are clamped visibly, and the notes on an input say each thing once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from probpose.errors import BoxError, ProbPoseError
from studio import compare, explore, inputs, state


@pytest.fixture()
def whole_photo():
    return "examples/coco_000000000885.jpg"


def test_unknown_box_mode_is_an_error_and_aliases_work():
    assert inputs.box_mode_choice(None) == inputs.BOX_AUTO
    assert inputs.box_mode_choice("whole") == inputs.BOX_WHOLE and inputs.box_mode_choice(" typed ") == inputs.BOX_TYPED
    with pytest.raises(BoxError, match="Unknown box mode 'detector'"):
        inputs.box_mode_choice("detector")


def test_whole_image_box_is_the_full_image():
    boxes, source, _ = inputs.resolve_boxes(np.zeros((40, 30, 3), np.uint8), inputs.BOX_WHOLE, "")
    np.testing.assert_array_equal(boxes, [[0, 0, 30, 40]]) and source == "whole"


@pytest.mark.parametrize(("value", "n", "shown", "said"), [
    (0, 3, 0, False), (2, 3, 2, False), (7, 3, 2, True), (-4, 3, 0, True), ("x", 3, 0, True), (1.5, 3, 1, True),
    (float("nan"), 2, 0, True), (None, 2, 0, False),
])
def test_person_choice_clamps_and_says_so(value, n, shown, said):
    i, note = inputs.person_choice(value, n)
    assert i == shown and bool(note) == said
    if said:
        assert f"showing {shown}" in note and f"{n} people" in note


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "abc", None])
def test_unit_value_rejects_with_the_fields_name(value):
    with pytest.raises(ProbPoseError, match="presence threshold must be a number from 0 to 1"):
        inputs.unit_value(value, "presence threshold")
    with pytest.raises(ProbPoseError, match="above 0"):
        inputs.unit_value(0, "credible mass", low_open=True)
    assert inputs.unit_value("0.25", "x") == 0.25


def test_tiny_image_is_a_plain_message(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(ProbPoseError, match=r"only 1x1 pixels: too small to hold a person"):
        inputs.load_input_image(str(path))


def test_each_input_note_once(tmp_path):
    rgba = np.zeros((60, 40, 4), np.uint8)
    rgba[..., 3] = 128
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    exif = tmp_path / "rotated.jpg"
    im = Image.new("RGB", (40, 60))
    ex = im.getexif()
    ex[0x0112] = 6  # rotate 90 degrees
    im.save(exif, exif=ex)
    for p in (path, exif):
        _, notes = inputs.load_input_image(str(p))
        assert notes and len(notes) == len(set(notes))
        topics = [("transparen" in n or "alpha" in n, "EXIF" in n) for n in notes]
        assert sum(t[0] for t in topics) <= 1 and sum(t[1] for t in topics) <= 1, notes


def test_messages_hide_server_temp_paths_and_keep_angle_brackets():
    import tempfile

    upload = f"{tempfile.gettempdir()}/gradio/0f3a9c1b/photo.jpg"
    msg = state.user_message(ProbPoseError(f"Cannot read {upload}: not an image; name it '<repo>/<file>.pth'"))
    assert "photo.jpg" in msg and tempfile.gettempdir() not in msg and "&lt;file&gt;" in msg


def test_hub_id_without_a_file_says_how_and_that_the_repo_may_not_exist():
    from probpose.weights import load_pretrained

    with pytest.raises(ProbPoseError) as e:
        load_pretrained("someone/NotARepo")
    assert "FILE.pth" in str(e.value) and "may not exist" in str(e.value) and "<" not in str(e.value)


@pytest.mark.parametrize(("kwargs", "needle"), [
    (dict(threshold=1.5), "presence threshold must be a number from 0 to 1"),
    (dict(threshold=float("nan")), "presence threshold"),
    (dict(threshold="abc"), "presence threshold"),
    (dict(mass=0), "credible mass must be a number above 0"),
    (dict(decoder="mode"), "Unknown decoder 'mode'"),
    (dict(keypoint="elbow"), "Unknown keypoint 'elbow'"),
    (dict(box_mode="detector"), "Unknown box mode"),
])
def test_bad_settings_are_user_messages(studio_env, whole_photo, kwargs, needle, caplog):
    kwargs = {"box_mode": inputs.BOX_WHOLE, **kwargs}
    with caplog.at_level(logging.ERROR, logger="probpose.app"), pytest.warns(UserWarning):
        session, drawing, data, *_rest, status, path = explore.explore_run(whole_photo, **kwargs)
    assert session is None and drawing is None and needle in status and needle in data["error"]
    assert "Internal error" not in status and not caplog.records  # a user mistake logs no traceback


def test_out_of_range_person_is_clamped_in_the_view_and_the_field(studio_env, whole_photo):
    boxes = "277,190,417,398\n281,90,393,259"
    session, drawing, data, bars, kp, status, _ = explore.explore_run(whole_photo, inputs.BOX_TYPED, boxes, person=5)
    assert session is not None and "Person # 5 does not exist here (2 people, numbered 0 to 1): showing 1" in status
    assert bars.layout.title.text == "person 1" and explore.shown_person(session, 5) == 1
    assert explore.shown_person(session, 0) == 0
    out = compare.compare_run(whole_photo, inputs.BOX_TYPED, boxes, person=-3)
    assert out[0] is not None and "showing 0" in out[-1] and compare.shown_person(out[0], -3) == 0
