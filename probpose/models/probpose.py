"""ProbPose: ViT backbone + probability-map head with presence / visibility / OKS / error branches (spec 1.3).

State-dict keys equal the official mmpose ones (`backbone.*`, `head.deconv_layers.*`, `head.final_layer.*`,
`head.{probability,visibility,oks,error}_layers.{0,1,4,5,8,9,12}.*`), so official checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from probpose.constants import NUM_KEYPOINTS
from probpose.errors import ProbPoseError
from probpose.models.backbones import build_backbone
from probpose.models.vit import HeadConfigMixin, ViTConfig

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
    "run_deconv_layers",
    "inference_fast_path",
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


# Largest values examined by the sorted pass of the threshold search; trained maps' supports are far smaller.
_SPARSEMAX_TOP = 64


def _sparsemax_threshold(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Threshold tau (keepdim shape) with sum(max(z - tau, 0)) = 1 along `dim`.

    Sorted pass over the top `_SPARSEMAX_TOP` values only: support size k* = max{k : 1 + k z_(k) > sum_{j<=k}
    z_(j)} (the condition holds for a prefix of k), exact whenever k* is below that count -- always so for
    trained, peaked maps, and much cheaper than sorting every pixel. Rows whose support may be larger (flat maps,
    e.g. random weights) continue with Michelot's fixed point tau <- (sum_{z > tau} z - 1) / #{z > tau}, started
    from a lower bound (every (sum_{j<=k} z_(j) - 1) / k is one); it rises monotonically to the exact tau in a
    few steps.
    """
    n = z.shape[dim]
    top = z.topk(min(n, _SPARSEMAX_TOP), dim=dim).values
    m = top.shape[dim]
    cum = top.cumsum(dim)
    shape = [1] * z.ndim
    shape[dim] = -1
    k = torch.arange(1, m + 1, device=z.device, dtype=z.dtype).view(shape)
    k_star = (1 + k * top > cum).sum(dim=dim, keepdim=True)
    tau = (cum.gather(dim, k_star - 1) - 1) / k_star.to(z.dtype)
    open_rows = k_star == m
    if m == n or not bool(open_rows.any()):
        return tau
    tau = torch.where(open_rows, torch.maximum(tau, (z.sum(dim, keepdim=True) - 1) / n), tau)
    for _ in range(n):
        inside = z > tau
        new = ((z * inside).sum(dim, keepdim=True) - 1) / inside.sum(dim, keepdim=True).to(z.dtype)
        new = torch.where(open_rows, torch.maximum(new, tau), tau)
        if torch.equal(new, tau):
            break
        tau = new
    return tau


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        z = z - z.amax(dim=dim, keepdim=True)  # shift-invariant; keeps the sums small
        out = torch.clamp(z - _sparsemax_threshold(z, dim), min=0)
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
    # (N,K) ReLU, frozen and untrained in the official model: computed in training mode (its BN statistics update
    # there, as in the official code) or when asked (`forward(x, with_error=True)`), else None.
    error: torch.Tensor | None = None


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


# ----------------------------------------------------------------------------------------------- inference fast path
# In eval mode without autograd, BatchNorm is a fixed affine map, so each conv + BN pair folds into one conv, the
# three (four) scalar branches run as one wide convolution and two grouped ones, and the deconvolutions run on
# channels_last maps (oneDNN's faster layout on CPU). Same outputs up to float rounding (~1e-6); training mode and
# autograd keep the plain module path. Folded weights are cached per module and rebuilt when any source tensor
# changes (its storage or in-place version: load_state_dict, an optimiser step, .to(), BN statistics).


def inference_fast_path(module: nn.Module) -> bool:
    """True in eval mode with autograd off (torch.inference_mode / no_grad): BN uses its running statistics."""
    return not module.training and not torch.is_grad_enabled()


def _tensor_key(t: torch.Tensor) -> tuple:
    try:
        version = t._version
    except RuntimeError:  # inference tensors carry no version counter (and cannot change in place outside it)
        version = -1
    return t.data_ptr(), version, t.dtype, t.device


def cached_fold(owner: nn.Module, name: str, sources: Sequence[torch.Tensor], build: Callable[[], object]):
    """`build()` (run without autograd, as normal tensors), cached on `owner` until a tensor in `sources` changes."""
    key = tuple(_tensor_key(t) for t in sources)
    hit = owner.__dict__.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    owner.__dict__[name] = (key, value)  # one assignment: concurrent readers see a consistent (key, value)
    return value


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d,
            out_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv -> eval-mode BN as one conv; `out_dim` is the output-channel dim of weight (1 for a
    ConvTranspose2d)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = [1] * weight.ndim
    shape[out_dim] = -1
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.view(shape), (b - bn.running_mean) * scale + bn.bias


def _cpu_layout(w: torch.Tensor) -> torch.Tensor:
    """Conv weights in channels_last on the CPU, the layout oneDNN uses with channels_last maps (otherwise every
    call re-orders them)."""
    return w.contiguous(memory_format=torch.channels_last) if w.device.type == "cpu" and w.ndim == 4 else w


def _module_tensors(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    return [t for m in modules for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
            if t.is_floating_point()]


def run_deconv_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`make_deconv_layers`' stack on (N,C,h,w) -> (N,c,h*2^n,w*2^n); BN-folded and channels_last on the fast
    path (see `inference_fast_path`)."""
    if not len(layers) or not inference_fast_path(layers):
        return layers(x)
    deconvs, bns = list(layers[0::3]), list(layers[1::3])
    folded = cached_fold(layers, "_folded", _module_tensors(layers),
                         lambda: [(_cpu_layout(w), b) for w, b in (fold_bn(d.weight, None, bn, out_dim=1)
                                                                    for d, bn in zip(deconvs, bns, strict=True))])
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    for d, (w, b) in zip(deconvs, folded, strict=True):
        x = F.conv_transpose2d(x, w, b, d.stride, d.padding, d.output_padding).relu_()
    return x


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
    """The presence / visibility / OKS / error branches (official names), shared by the ProbPose and DH heads.

    `scalar_grad_to_backbone` 0 (the official head: detached inputs) keeps their losses out of the backbone; the
    embedded model's trainer (`training.cached`) may let a share of their gradient through for a run. Not saved
    with the weights: the forward pass is the same either way."""

    scalar_grad_to_backbone = 0.0

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

    def _scalar_outputs(self, feats: torch.Tensor, with_error: bool | None = None) -> dict[str, torch.Tensor | None]:
        """presence, presence_logits, visibility, oks, each (N, K), and error (N, K) or None.

        with_error None: computed in training mode only (the official model never trained it; its BN statistics
        still update there), skipped in eval mode.
        """
        if with_error is None:
            with_error = self.training
        names = ("probability_layers", "visibility_layers", "oks_layers") + (("error_layers",) if with_error else ())
        branches = [getattr(self, n) for n in names]
        # Only the map branch trains the backbone (detach_probability / detach_visibility, OKS and error).
        detached = feats.detach()
        if self.scalar_grad_to_backbone:  # same values; the backbone gets this share of the branches' gradient
            detached = detached + self.scalar_grad_to_backbone * (feats - detached)
        if inference_fast_path(self):
            outs = self._fused_scalar_branches(branches, detached)
        else:
            outs = [run_scalar_branch(b, detached) for b in branches]
        (presence_logits, presence), (_, visibility), (_, oks) = outs[:3]
        return {"presence": presence, "presence_logits": presence_logits, "visibility": visibility, "oks": oks,
                "error": outs[3][1] if with_error else None}

    def _fused_scalar_branches(self, branches: list[nn.Sequential],
                               feats: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`run_scalar_branch` of every branch at once: the first 3x3 convs (all reading `feats`) concatenated into
        one conv, the later stages as grouped convs, BN folded in. Returns (pre-activation, activated) per branch."""
        nb = len(branches)

        def build():
            stages = []
            for i in (0, 4, 8):  # [Conv3x3, BN, MaxPool, ReLU] x 3, then the 1x1 conv at 12
                ws, bs = zip(*(fold_bn(b[i].weight, b[i].bias, b[i + 1]) for b in branches), strict=True)
                stages.append((_cpu_layout(torch.cat(ws)), torch.cat(bs)))
            stages.append((_cpu_layout(torch.cat([b[12].weight for b in branches])),
                           torch.cat([b[12].bias for b in branches])))
            return stages

        stages = cached_fold(self, f"_fused_scalars_{nb}", _module_tensors([m for b in branches for m in b]), build)
        ref = branches[0]
        y = feats
        for s, i in enumerate((0, 4, 8)):
            w, b = stages[s]
            y = ref[i + 2](F.conv2d(y, w, b, padding=ref[i].padding, groups=1 if s == 0 else nb)).relu_()
        w, b = stages[3]
        pre = F.conv2d(y, w, b, groups=nb).flatten(1).chunk(nb, dim=1)  # nb x (N, K)
        return [(p.contiguous(), branch[13](p)) for p, branch in zip(pre, branches, strict=True)]


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

    def forward(self, feats: torch.Tensor, temperature: float, with_error: bool | None = None) -> ProbPoseOutput:
        logits = self.final_layer(run_deconv_layers(self.deconv_layers, feats)).contiguous()
        probmaps = self.normalize_maps(logits, temperature)
        return ProbPoseOutput(probmaps=probmaps, logits=logits, **self._scalar_outputs(feats, with_error))


class ProbPose(nn.Module):
    """ProbPose top-down model: forward(x (N,3,256,192) ImageNet-normalised RGB) -> ProbPoseOutput."""

    kind = "probpose"

    def __init__(self, config: ProbPoseConfig | None = None) -> None:
        super().__init__()
        config = config or ProbPoseConfig()
        self.config = config
        self.temperature = float(config.temperature)  # may be changed after calibration
        self.metadata: dict = {}
        self.backbone = build_backbone(config.backbone)
        self.head = ProbPoseHead(config)

    def forward(self, x: torch.Tensor, with_error: bool | None = None) -> ProbPoseOutput:
        """with_error: compute the frozen error branch (None: in training mode only; `error` is None otherwise)."""
        check_input(x, self.config.backbone.img_size, type(self).__name__)
        return self.head(self.backbone(x), self.temperature, with_error)


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
