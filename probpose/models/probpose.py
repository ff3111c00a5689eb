"""ProbPose: ViT backbone + probability-map head with presence / visibility / OKS / error branches (spec 1.3).

State-dict keys equal the official mmpose ones (`backbone.*`, `head.deconv_layers.*`, `head.final_layer.*`,
`head.{probability,visibility,oks,error}_layers.{0,1,4,5,8,9,12}.*`), so official checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from probpose.constants import NUM_KEYPOINTS
from probpose.errors import ProbPoseError
from probpose.models.vit import HeadConfigMixin, VisionTransformer, ViTConfig

__all__ = [
    "ModelInputError",
    "ProbPoseConfig",
    "ProbPose",
    "ProbPoseHead",
    "ScalarBranchesMixin",
    "ProbPoseOutput",
    "sparsemax",
    "make_deconv_layers",
    "make_scalar_branch",
    "init_head_weights",
    "check_input",
    "check_scalar_head_config",
    "PROBPOSE_S_CONFIG",
    "probpose_s",
    "PROBPOSE_T_CONFIG",
    "probpose_t",
    "PROBPOSE_TEST_CONFIG",
    "probpose_test",
]


class ModelInputError(ProbPoseError, ValueError):
    """The tensor given to a model has the wrong rank, channel count or size."""


# ----------------------------------------------------------------------------------------------- sparsemax


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        z = z - z.amax(dim=dim, keepdim=True)  # shift-invariant; keeps the cumsum small
        zs, _ = torch.sort(z, dim=dim, descending=True)
        cum = zs.cumsum(dim)
        shape = [1] * z.ndim
        shape[dim] = -1
        k = torch.arange(1, z.shape[dim] + 1, device=z.device, dtype=z.dtype).view(shape)
        # support size k* = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}; the condition holds for a prefix of k.
        k_star = (1 + k * zs > cum).sum(dim=dim, keepdim=True)
        tau = (cum.gather(dim, k_star - 1) - 1) / k_star.to(z.dtype)
        out = torch.clamp(z - tau, min=0)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (out,) = ctx.saved_tensors
        dim = ctx.dim
        support = (out > 0).to(g.dtype)
        # Jacobian is diag(s) - s s^T / |s|: subtract the mean of g over the support, zero elsewhere.
        mean = (g * support).sum(dim=dim, keepdim=True) / support.sum(dim=dim, keepdim=True)
        return support * (g - mean), None


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of z onto the probability simplex along `dim` (Martins & Astudillo 2016).

    Output has z's shape, is >= 0 with exact zeros, and sums to 1 along `dim`. Half / bfloat16 inputs are
    computed and returned in float32 (the threshold needs the precision).
    """
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    dim = dim % z.ndim
    return _Sparsemax.apply(z, dim)


# ----------------------------------------------------------------------------------------------- config


def check_scalar_head_config(config) -> None:
    """Checks shared by the ProbPose and ProbPose-DH configs: the scalar branches' pooling and the temperature."""
    hp, wp = config.backbone.grid_size
    if hp % 4 or wp % 4:
        raise ValueError(f"the scalar branches pool the {hp}x{wp} token grid to 4x4; both sides must be "
                         "divisible by 4 (use img_size 256x192 with patch 16)")
    if config.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature}")


@dataclass(frozen=True)
class ProbPoseConfig(HeadConfigMixin):
    """Architecture of a ProbPose model. `branch_channels=None` means embed_dim (the official layout)."""

    backbone: ViTConfig = field(default_factory=ViTConfig)
    num_keypoints: int = NUM_KEYPOINTS
    deconv_channels: tuple[int, ...] = (256, 256)
    deconv_kernel: int = 4
    branch_channels: int | None = None
    temperature: float = 0.5
    normalize: float = 1.0
    freeze_error: bool = True

    def __post_init__(self) -> None:
        self._normalize_fields()
        check_scalar_head_config(self)

    @property
    def scalar_channels(self) -> int:
        return self.branch_channels or self.backbone.embed_dim


# ----------------------------------------------------------------------------------------------- output


@dataclass
class ProbPoseOutput:
    """Network outputs for a batch of N crops with K keypoints (maps H x W = 64 x 48 for 256x192 crops)."""

    probmaps: torch.Tensor  # (N,K,H,W) sparsemax(logits / temperature) * normalize, clamped to [0,1]
    logits: torch.Tensor  # (N,K,H,W) final 1x1 conv output, before the temperature
    presence: torch.Tensor  # (N,K) sigmoid: P(keypoint inside the activation window)
    presence_logits: torch.Tensor  # (N,K)
    visibility: torch.Tensor  # (N,K) sigmoid
    oks: torch.Tensor  # (N,K) sigmoid, predicted OKS
    error: torch.Tensor  # (N,K) ReLU, frozen and untrained in the official model


# ----------------------------------------------------------------------------------------------- head pieces


def make_deconv_layers(in_channels: int, channels: tuple[int, ...], kernel: int = 4) -> nn.Sequential:
    """[ConvTranspose2d(stride 2, no bias), BN, ReLU] per entry of `channels`: (N,C,h,w) -> (N,c,h*2^n,w*2^n)."""
    # mmpose's padding / output_padding for the supported kernels, so that each layer exactly doubles the size.
    pads = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    if kernel not in pads:
        raise ValueError(f"deconv kernel must be 2, 3 or 4, got {kernel}")
    pad, out_pad = pads[kernel]
    layers: list[nn.Module] = []
    for c in channels:
        layers += [nn.ConvTranspose2d(in_channels, c, kernel, stride=2, padding=pad, output_padding=out_pad,
                                      bias=False),
                   nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        in_channels = c
    return nn.Sequential(*layers)


def make_scalar_branch(in_channels: int, channels: int, out_channels: int, grid: tuple[int, int],
                       final: nn.Module) -> nn.Sequential:
    """3 x [Conv3x3, BN, MaxPool, ReLU] then Conv1x1 and `final` (indices 0..13 as the official head).

    The first pool takes the (Hp, Wp) grid to 4x4 ((4,3) for 16x12), the next two halve it: (N,C,Hp,Wp) ->
    (N,out,1,1).
    """
    hp, wp = grid
    pools = [nn.MaxPool2d((hp // 4, wp // 4)), nn.MaxPool2d(2), nn.MaxPool2d(2)]
    layers: list[nn.Module] = []
    for pool in pools:
        layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), pool,
                   nn.ReLU(inplace=True)]
        in_channels = channels
    layers += [nn.Conv2d(channels, out_channels, 1), final]
    return nn.Sequential(*layers)


def run_scalar_branch(branch: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-activation, activated) outputs of a scalar branch, each (N, K)."""
    *body, final = branch
    for m in body:
        x = m(x)
    pre = x.flatten(1)
    return pre, final(pre)


def init_head_weights(module: nn.Module) -> None:
    """mmpose head init: conv / deconv weights N(0, 0.001^2), bias 0; BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_input(x: torch.Tensor, img_size: tuple[int, int], name: str) -> None:
    """Raise ModelInputError unless x is (N, 3, h, w) with (h, w) = img_size."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ModelInputError(f"{name} expects a float tensor (N, 3, {img_size[0]}, {img_size[1]}) of "
                              f"normalised RGB crops, got {shape}; add a batch dimension / convert to RGB")
    if tuple(x.shape[-2:]) != tuple(img_size):
        raise ModelInputError(f"{name} expects crops of {img_size[0]}x{img_size[1]} (h x w), got "
                              f"{x.shape[-2]}x{x.shape[-1]}; crop with probpose.geometry (UDP warp) first")
    if not x.is_floating_point():
        raise ModelInputError(f"{name} expects a floating-point tensor, got {x.dtype}; normalise the "
                              "uint8 crop with PIXEL_MEAN / PIXEL_STD first")


class ScalarBranchesMixin:
    """The presence / visibility / OKS / error branches (official names), shared by the ProbPose and DH heads."""

    def _add_scalar_branches(self, config) -> None:
        c, k, grid, b = (config.backbone.embed_dim, config.num_keypoints, config.backbone.grid_size,
                         config.scalar_channels)
        self.probability_layers = make_scalar_branch(c, b, k, grid, nn.Sigmoid())
        self.visibility_layers = make_scalar_branch(c, b, k, grid, nn.Sigmoid())
        self.oks_layers = make_scalar_branch(c, b, k, grid, nn.Sigmoid())
        self.error_layers = make_scalar_branch(c, b, k, grid, nn.ReLU())

    def _freeze_error_branch(self) -> None:
        # Official: frozen parameters; BN running stats still update in train mode.
        for p in self.error_layers.parameters():
            p.requires_grad_(False)

    def _scalar_outputs(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """presence, presence_logits, visibility, oks, error, each (N, K)."""
        # Only the map branch trains the backbone (detach_probability / detach_visibility, OKS and error).
        detached = feats.detach()
        presence_logits, presence = run_scalar_branch(self.probability_layers, detached)
        _, visibility = run_scalar_branch(self.visibility_layers, detached)
        _, oks = run_scalar_branch(self.oks_layers, detached)
        _, error = run_scalar_branch(self.error_layers, detached)
        return {"presence": presence, "presence_logits": presence_logits, "visibility": visibility, "oks": oks,
                "error": error}


class ProbPoseHead(ScalarBranchesMixin, nn.Module):
    """Probability-map branch on the deconv path plus four scalar branches on the detached backbone features."""

    def __init__(self, config: ProbPoseConfig) -> None:
        super().__init__()
        c = config.backbone.embed_dim
        k = config.num_keypoints
        self.config = config
        self.deconv_layers = make_deconv_layers(c, config.deconv_channels, config.deconv_kernel)
        self.final_layer = nn.Conv2d(config.deconv_channels[-1] if config.deconv_channels else c, k, 1)
        self._add_scalar_branches(config)
        init_head_weights(self)
        if config.freeze_error:
            self._freeze_error_branch()

    def normalize_maps(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """(N,K,H,W) logits -> probability maps: sparsemax over the H*W pixels of each map."""
        n, k, h, w = logits.shape
        p = sparsemax(logits.reshape(n, k, h * w) / temperature, dim=-1) * self.config.normalize
        return p.clamp(0, 1).reshape(n, k, h, w)

    def forward(self, feats: torch.Tensor, temperature: float) -> ProbPoseOutput:
        logits = self.final_layer(self.deconv_layers(feats))
        probmaps = self.normalize_maps(logits, temperature)
        return ProbPoseOutput(probmaps=probmaps, logits=logits, **self._scalar_outputs(feats))


class ProbPose(nn.Module):
    """ProbPose top-down model: forward(x (N,3,256,192) ImageNet-normalised RGB) -> ProbPoseOutput."""

    kind = "probpose"

    def __init__(self, config: ProbPoseConfig | None = None) -> None:
        super().__init__()
        config = config or ProbPoseConfig()
        self.config = config
        self.temperature = float(config.temperature)  # may be changed after calibration
        self.metadata: dict = {}
        self.backbone = VisionTransformer(config.backbone)
        self.head = ProbPoseHead(config)

    def forward(self, x: torch.Tensor) -> ProbPoseOutput:
        check_input(x, self.config.backbone.img_size, type(self).__name__)
        return self.head(self.backbone(x), self.temperature)


# ----------------------------------------------------------------------------------------------- factories

# Official ProbPose-s (ViT-S backbone, mmpose td-pm_ProbPose-small_8xb64-210e_coco-256x192): 40,265,699 params.
PROBPOSE_S_CONFIG = ProbPoseConfig(
    backbone=ViTConfig(embed_dim=384, depth=12, num_heads=12, ffn_dim=1536),
    deconv_channels=(256, 256),
)


def probpose_s(**overrides) -> ProbPose:
    """Official ProbPose-s architecture (random init); `overrides` replace ProbPoseConfig fields."""
    return ProbPose(replace(PROBPOSE_S_CONFIG, **overrides))


# Demo size for CPU training on a few hundred people.
PROBPOSE_T_CONFIG = ProbPoseConfig(
    backbone=ViTConfig(embed_dim=192, depth=6, num_heads=3, ffn_dim=768),
    deconv_channels=(128, 128),
    branch_channels=128,
)


def probpose_t(**overrides) -> ProbPose:
    """Small ProbPose for CPU training (~5.6 M params)."""
    return ProbPose(replace(PROBPOSE_T_CONFIG, **overrides))


# Tiny model for unit tests: a batch-2 forward takes milliseconds.
PROBPOSE_TEST_CONFIG = ProbPoseConfig(
    backbone=ViTConfig(embed_dim=32, depth=2, num_heads=2, ffn_dim=64),
    deconv_channels=(16, 16),
    branch_channels=16,
)


def probpose_test(**overrides) -> ProbPose:
    """Tiny ProbPose for tests."""
    return ProbPose(replace(PROBPOSE_TEST_CONFIG, **overrides))
