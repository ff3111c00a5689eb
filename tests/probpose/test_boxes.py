"""One box parser for the app's box field and the CLI's --boxes."""

import numpy as np
import pytest

from probpose.boxes import parse_boxes
from probpose.errors import BoxError


def test_lines_semicolons_brackets_and_corner_order():
    boxes = parse_boxes("[10, 20, 110, 220]\n300 400 250 350; -50,-50,40,60\n# a comment")
    np.testing.assert_allclose(boxes, [[10, 20, 110, 220], [250, 350, 300, 400], [-50, -50, 40, 60]])
    np.testing.assert_array_equal(parse_boxes("1,2,3,4; 5,6,7,8"), [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_clipped_to_the_image_when_its_size_is_known():
    np.testing.assert_allclose(parse_boxes("-50,-50,40,60;300,400,900,900", (320, 480)),
                               [[0, 0, 40, 60], [300, 400, 319, 479]])


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
