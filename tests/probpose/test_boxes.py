"""One box parser for the app's box field and the CLI's --boxes."""

import numpy as np
import pytest

from probpose.boxes import parse_boxes
from probpose.errors import BoxError


def test_lines_semicolons_brackets_and_corner_order():
    boxes = parse_boxes("[10, 20, 110, 220]\n300 400 250 350; -50,-50,40,60\n# a comment")
    np.testing.assert_allclose(boxes, [[10, 20, 110, 220], [250, 350, 300, 400], [-50, -50, 40, 60]])
    np.testing.assert_array_equal(parse_boxes("1,2,3,4; 5,6,7,8"), [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_never_clipped_only_checked_against_the_image():
    # boxes reaching past the border go to the predictor as typed (the official pipeline does not clip them)
    np.testing.assert_allclose(parse_boxes("-50,-50,40,60;300,400,900,900", (320, 480)),
                               [[-50, -50, 40, 60], [300, 400, 900, 900]])


@pytest.mark.parametrize(("text", "needle"), [
    ("1,2,3", "four finite numbers"), ("1,2,three,4", "not four numbers"), ("1,2,nan,4", "four finite"),
    ("5,5,6,6", "empty"), ("", "No boxes"), ("# only a comment", "No boxes"),
])
def test_bad_text_is_a_box_error(text, needle):
    with pytest.raises(BoxError, match=needle):
        parse_boxes(text)


def test_outside_the_image():
    with pytest.raises(BoxError, match="outside the 64x48 image"):
        parse_boxes("100,100,200,200", (64, 48))


def test_typed_boxes_are_capped_before_parsing():
    from probpose.boxes import MAX_BOXES

    text = "\n".join(["10,10,100,200"] * (MAX_BOXES + 1))
    with pytest.raises(BoxError, match=f"Too many boxes: {MAX_BOXES + 1} given, at most {MAX_BOXES}"):
        parse_boxes(text)
    assert parse_boxes("10,10,100,200;5,5,60,60", max_boxes=2).shape == (2, 4)
    with pytest.raises(BoxError, match="at most 1 per image"):
        parse_boxes("10,10,100,200;5,5,60,60", max_boxes=1)
    assert parse_boxes(text, max_boxes=None).shape == (MAX_BOXES + 1, 4)
