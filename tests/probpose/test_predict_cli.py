"""`python -m probpose predict`: through probpose.__main__.main, with a tiny model saved to safetensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from probpose.boxes import parse_boxes


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_probpose):
    from probpose.weights import save_safetensors

    return save_safetensors(tiny_probpose, tmp_path_factory.mktemp("w") / "tiny.safetensors", dtype=None)


def _main(argv):
    from probpose.__main__ import main

    return main(argv)


def test_predict_json_viz_and_bad_image(tmp_path, tiny_weights, coco_val, capsys):
    folder, _ = coco_val
    good = folder / "000000000885.jpg"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out_json, viz = tmp_path / "out.json", tmp_path / "viz"
    rc = _main(["predict", str(good), str(bad), "--weights", str(tiny_weights), "--boxes", "277,190,417,398",
                "--json", str(out_json), "--viz", str(viz), "--no-flip", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "broken.jpg" in captured.err and "Traceback" not in captured.err
    assert "1 person" in captured.out
    data = json.loads(out_json.read_text())
    assert list(data) == [str(good)]
    person = data[str(good)]["people"][0]
    assert person["box"] == [277.0, 190.0, 417.0, 398.0] and len(person["keypoints"]) == 17
    drawn = np.asarray(Image.open(viz / "000000000885_pose.png"))
    assert drawn.shape[2] == 3 and drawn.shape[0] >= 427 and drawn.shape[1] >= 640


def test_predict_detector_and_boxes_json(tmp_path, tiny_weights, coco_val, capsys):
    folder, _ = coco_val
    img = folder / "000000000885.jpg"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({img.name: [[281, 90, 393, 259], [595, 26, 639, 253]]}))
    out_json = tmp_path / "o.json"
    assert _main(["predict", str(img), "--weights", str(tiny_weights), "--boxes-json", str(boxes),
                  "--json", str(out_json), "--threshold", "0.5", "--decoder", "argmax"]) == 0
    d = json.loads(out_json.read_text())[str(img)]
    assert len(d["people"]) == 2 and d["decoder"] == "argmax" and d["presence_threshold"] == 0.5
    assert _main(["predict", str(img), "--weights", str(tiny_weights), "--detector", "whole",
                  "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())[str(img)]["people"][0]["box_source"] == "whole"
    capsys.readouterr()


def test_predict_bad_arguments_exit_2(tmp_path, tiny_weights, capsys):
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(img)
    assert _main(["predict", str(img), "--weights", str(tiny_weights), "--boxes", "1,2,3"]) == 2
    assert "four finite numbers" in capsys.readouterr().err
    assert _main(["predict", str(img), "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err
    # A box entirely outside this image: the image fails with a BoxError message, exit 2.
    assert _main(["predict", str(img), "--weights", str(tiny_weights), "--boxes", "100,100,200,200"]) == 2
    assert "outside the 64x64 image" in capsys.readouterr().err


def test_parse_boxes():
    np.testing.assert_array_equal(parse_boxes("1,2,3,4; 5,6,7,8"), [[1, 2, 3, 4], [5, 6, 7, 8]])
