"""Models: shapes, ranges, official keys / parameter counts, sparsemax, gradient flow, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from probpose.errors import ProbPoseError
from probpose.models import (
    HeatmapConfig,
    HeatmapPose,
    ModelInputError,
    ProbPose,
    ProbPoseConfig,
    VisionTransformer,
    ViTConfig,
    build_model,
    config_from_dict,
    sparsemax,
)
from probpose.models.heatmap import VITPOSE_TEST_CONFIG, vitpose_s, vitpose_test
from probpose.models.probpose import (
    PROBPOSE_S_CONFIG,
    PROBPOSE_T_CONFIG,
    PROBPOSE_TEST_CONFIG,
    probpose_s,
    probpose_test,
)

SPEC_JSON = Path(__file__).resolve().parents[3] / "shared" / "spec" / "probpose_s_state_dict.json"


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC_JSON.exists():
        pytest.skip(f"spec JSON not found at {SPEC_JSON}")
    return json.loads(SPEC_JSON.read_text())


@pytest.fixture(scope="module")
def model_s() -> ProbPose:
    torch.manual_seed(0)
    return probpose_s().eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(1))


def _sharp_test_model(seed: int = 0) -> ProbPose:
    """Tiny model whose final layer varies enough for sparsemax to leave exact zeros."""
    torch.manual_seed(seed)
    m = probpose_test().eval()
    with torch.no_grad():
        m.head.final_layer.weight.normal_(0, 1.0)
    return m


# ----------------------------------------------------------------------------------------------- sparsemax


def test_sparsemax_hand_example():
    # sorted z = (1, .5, -1): k=2 passes (1 + 2*.5 = 2 > 1.5), k=3 fails -> tau = (1.5 - 1)/2 = .25
    z = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 1.0]])
    out = sparsemax(z)
    expected = torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)


def test_sparsemax_dim_and_shift_invariance():
    z = torch.tensor([[1.0, 0.0], [0.5, 0.0], [-1.0, 0.0]])  # first column is the hand example along dim 0
    out = sparsemax(z + 7.0, dim=0)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(out.sum(0), torch.ones(2))


def test_sparsemax_sums_to_one_with_exact_zeros():
    z = torch.randn(4, 17, 3072, generator=torch.Generator().manual_seed(0)) * 4
    p = sparsemax(z)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 17), atol=1e-5, rtol=0)
    assert ((p == 0).sum(-1) > 0).all()


def test_sparsemax_gradient_hand_example():
    z = torch.tensor([1.0, 0.5, -1.0], requires_grad=True)
    sparsemax(z)[0].backward()
    # support {0, 1}: d p0 / d z = e0 - mean over support = (1 - .5, 0 - .5, 0)
    torch.testing.assert_close(z.grad, torch.tensor([0.5, -0.5, 0.0]))


def test_sparsemax_gradcheck():
    z = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sparsemax(t, dim=-1), (z,))
    assert torch.autograd.gradcheck(lambda t: sparsemax(t, dim=0), (z,))


def test_sparsemax_half_input_is_computed_in_float32():
    p = sparsemax(torch.tensor([1.0, 0.5, -1.0], dtype=torch.float16))
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, torch.tensor([0.75, 0.25, 0.0]))


# ----------------------------------------------------------------------------------------------- ProbPose


def test_test_model_outputs_shapes_and_ranges(crops):
    m = _sharp_test_model()
    with torch.no_grad():
        out = m(crops, with_error=True)
    n, k = 2, 17
    assert out.probmaps.shape == out.logits.shape == (n, k, 64, 48)
    for t in (out.presence, out.presence_logits, out.visibility, out.oks, out.error):
        assert t.shape == (n, k)
    torch.testing.assert_close(out.probmaps.sum((2, 3)), torch.ones(n, k), atol=1e-5, rtol=0)
    assert out.probmaps.min() >= 0 and out.probmaps.max() <= 1
    assert ((out.probmaps == 0).flatten(2).any(-1)).all(), "sparsemax maps must have exact zeros"
    for t in (out.presence, out.visibility, out.oks):
        assert ((t > 0) & (t < 1)).all()
    assert (out.error >= 0).all()
    torch.testing.assert_close(out.presence, torch.sigmoid(out.presence_logits))


def test_probmaps_use_model_temperature(crops):
    m = _sharp_test_model()
    with torch.no_grad():
        out = m(crops)
        m.temperature = 0.25
        sharper = m(crops)
    torch.testing.assert_close(sharper.logits, out.logits)
    # a lower temperature spreads the same logits further apart: fewer pixels in the support
    assert (sharper.probmaps > 0).sum() < (out.probmaps > 0).sum()
    flat = out.logits.flatten(2) / 0.5
    torch.testing.assert_close(out.probmaps.flatten(2), sparsemax(flat).clamp(0, 1))


def test_tiny_fixture_forward(tiny_probpose, crops):
    with torch.no_grad():
        out = tiny_probpose(crops)
    assert out.probmaps.shape == (2, 17, 64, 48)
    assert tiny_probpose.temperature == 0.5 and tiny_probpose.metadata == {}


def test_input_validation(tiny_probpose, tiny_heatmap):
    bad = [(torch.zeros(3, 256, 192), "(3, 256, 192)"), (torch.zeros(1, 1, 256, 192), "(1, 1, 256, 192)"),
           (torch.zeros(1, 3, 128, 96), "128x96"), (torch.zeros(1, 3, 256, 192, dtype=torch.uint8), "uint8")]
    for x, shown in bad:
        for m in (tiny_probpose, tiny_heatmap):
            with pytest.raises(ModelInputError) as e:
                m(x)
            assert isinstance(e.value, ProbPoseError) and isinstance(e.value, ValueError)
            assert shown in str(e.value)


def test_only_map_branch_reaches_backbone(crops):
    torch.manual_seed(0)
    m = probpose_test().train()
    out = m(crops)
    (out.presence.sum() + out.visibility.sum() + out.oks.sum()).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.backbone.parameters())
    assert m.head.probability_layers[0].weight.grad.abs().sum() > 0
    assert m.head.oks_layers[0].weight.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    out = m(crops)
    (out.probmaps * torch.randn_like(out.probmaps)).sum().backward()
    assert m.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.backbone.pos_embed.grad.abs().sum() > 0
    assert m.head.probability_layers[0].weight.grad is None


def test_error_branch_frozen_but_others_trainable():
    m = probpose_test()
    assert not any(p.requires_grad for p in m.head.error_layers.parameters())
    assert all(p.requires_grad for p in m.head.oks_layers.parameters())
    assert all(p.requires_grad for p in probpose_test(freeze_error=False).head.error_layers.parameters())


def test_head_init_follows_spec():
    torch.manual_seed(0)
    m = probpose_s()
    w = m.head.probability_layers[0].weight
    assert abs(w.std().item() - 0.001) < 5e-5 and m.head.probability_layers[0].bias.abs().max() == 0
    assert abs(m.head.deconv_layers[0].weight.std().item() - 0.001) < 5e-5
    assert (m.head.deconv_layers[1].weight == 1).all() and (m.head.deconv_layers[1].bias == 0).all()
    assert abs(m.backbone.pos_embed.std().item() - 0.02) < 1e-3  # bounds (-2, 2) are absolute, as in mmengine
    fc1 = m.backbone.layers[0].ffn.layers[0][0]
    bound = math.sqrt(6 / (384 + 1536))  # xavier-uniform
    assert fc1.weight.abs().max() <= bound and fc1.weight.abs().max() > 0.9 * bound
    assert fc1.bias.abs().max() < 1e-5


# ----------------------------------------------------------------------------------------------- official size


def test_probpose_s_keys_shapes_and_counts_equal_spec(model_s, spec):
    sd = model_s.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == spec["keys"]
    # spec JSON num_params counts every state-dict element (BN buffers included)
    assert sum(v.numel() for v in sd.values()) == spec["num_params"] == 40_265_699
    # spec section 2: 40,255,445 parameters = backbone 21,663,360 + head 18,592,085
    assert sum(p.numel() for p in model_s.backbone.parameters()) == 21_663_360
    assert sum(p.numel() for p in model_s.head.parameters()) == 18_592_085


def test_probpose_s_layout(model_s, crops):
    assert model_s.backbone.grid_size == (16, 12)
    branch = model_s.head.probability_layers
    types = [type(m) for m in branch]
    assert types[:4] == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU]
    assert branch[2].kernel_size == (4, 3) and branch[6].kernel_size == 2 and branch[10].kernel_size == 2
    assert isinstance(branch[13], nn.Sigmoid) and isinstance(model_s.head.error_layers[13], nn.ReLU)
    assert all(ln.eps == 1e-6 for ln in model_s.backbone.modules() if isinstance(ln, nn.LayerNorm))
    with torch.no_grad():
        out = model_s(crops[:1])
    assert out.probmaps.shape == (1, 17, 64, 48) and out.presence.shape == (1, 17)


def test_vitpose_s_keys_are_the_official_backbone_and_heatmap_head(spec):
    torch.manual_seed(0)
    sd = vitpose_s().state_dict()
    expected = {k: v for k, v in spec["keys"].items()
                if k.startswith(("backbone.", "head.deconv_layers.", "head.final_layer."))}
    assert {k: list(v.shape) for k, v in sd.items()} == expected


# ----------------------------------------------------------------------------------------------- backbone


def test_attention_matches_explicit_softmax_formula():
    torch.manual_seed(0)
    cfg = ViTConfig(embed_dim=8, depth=1, num_heads=2, ffn_dim=16, img_size=(32, 32), drop_path_rate=0.0)
    attn = VisionTransformer(cfg).layers[0].attn
    x = torch.randn(2, 5, 8)
    qkv = attn.qkv(x)  # rows [q; k; v], each split into 2 heads of 4 contiguous channels
    q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)  # scale 4 ** -0.5
        heads.append(a @ v[..., sl])
    expected = attn.proj(torch.cat(heads, -1))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_backbone_grid_and_pos_embed_resize():
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(embed_dim=16, depth=1, num_heads=2, ffn_dim=32)).eval()
    assert vit.pos_embed.shape == (1, 192, 16)
    assert vit.resized_pos_embed((16, 12)) is vit.pos_embed
    with torch.no_grad():
        assert vit(torch.zeros(1, 3, 256, 192)).shape == (1, 16, 16, 12)
        # (128 + 4 - 16) // 16 + 1 = 8, (96 + 4 - 16) // 16 + 1 = 6
        assert vit(torch.zeros(1, 3, 128, 96)).shape == (1, 16, 8, 6)
        vit.pos_embed.fill_(0.25)
        torch.testing.assert_close(vit.resized_pos_embed((8, 6)), torch.full((1, 48, 16), 0.25))


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(embed_dim=16, depth=3, num_heads=2, ffn_dim=32, drop_path_rate=0.9))
    assert [round(layer.drop_path_rate, 6) for layer in vit.layers] == [0.0, 0.45, 0.9]
    x = torch.randn(4, 3, 256, 192)
    vit.eval()
    with torch.no_grad():
        torch.testing.assert_close(vit(x), vit(x))
        vit.train()
        assert not torch.equal(vit(x), vit(x))


def test_gelu_is_exact_erf():
    vit = VisionTransformer(ViTConfig(embed_dim=8, depth=1, num_heads=2, ffn_dim=16))
    gelu = vit.layers[0].ffn.layers[0][1]
    t = torch.tensor([-1.0, 0.5, 2.0])
    torch.testing.assert_close(gelu(t), 0.5 * t * (1 + torch.erf(t / math.sqrt(2))))


# ----------------------------------------------------------------------------------------------- heatmap, configs


def test_heatmap_test_model(tiny_heatmap, crops):
    with torch.no_grad():
        out = tiny_heatmap(crops)
    assert out.heatmaps.shape == (2, 17, 64, 48)
    assert tiny_heatmap.kind == "heatmap"


def test_build_model_dispatch_and_config_round_trip():
    assert isinstance(build_model(PROBPOSE_TEST_CONFIG), ProbPose)
    assert isinstance(build_model(VITPOSE_TEST_CONFIG), HeatmapPose)
    with pytest.raises(TypeError):
        build_model(ViTConfig())
    for kind, cfg in (("probpose", PROBPOSE_S_CONFIG), ("probpose", PROBPOSE_T_CONFIG),
                      ("heatmap", VITPOSE_TEST_CONFIG)):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert config_from_dict(kind, d) == cfg
    assert PROBPOSE_S_CONFIG.heatmap_size == (64, 48)
    assert isinstance(ProbPoseConfig.from_dict(PROBPOSE_TEST_CONFIG.to_dict()).backbone, ViTConfig)
    assert isinstance(HeatmapConfig(), HeatmapConfig)


def test_factory_overrides(crops):
    m = probpose_test(num_keypoints=5).eval()
    with torch.no_grad():
        out = m(crops)
    assert out.probmaps.shape == (2, 5, 64, 48) and out.presence.shape == (2, 5)
    assert vitpose_test(num_keypoints=5)(crops).heatmaps.shape[1] == 5


def test_heatmap_output_has_no_activation(crops):
    torch.manual_seed(0)
    m = vitpose_test().eval()
    with torch.no_grad():
        m.head.final_layer.bias.fill_(-3.0)
        out = m(crops)
    # raw conv output: no sigmoid / ReLU clips the negative bias away
    assert (out.heatmaps < -2.5).all()


# ----------------------------------------------------------------------------------------------- inference fast path


def _sort_sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Reference: the textbook full-sort sparsemax along the last dim."""
    z = z - z.amax(-1, keepdim=True)
    zs = z.sort(-1, descending=True).values
    cum = zs.cumsum(-1)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    k_star = (1 + k * zs > cum).sum(-1, keepdim=True)
    tau = (cum.gather(-1, k_star - 1) - 1) / k_star.to(z.dtype)
    return (z - tau).clamp(min=0)


@pytest.mark.parametrize("scale", [1e-4, 0.01, 0.3, 3.0, 30.0])
def test_sparsemax_equals_full_sort_for_flat_and_peaked_maps(scale):
    # Flat rows (support beyond the top-64 pass, as with random weights) and peaked rows (trained maps).
    z = torch.randn(3, 17, 3072, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    p = sparsemax(z)
    torch.testing.assert_close(p, _sort_sparsemax(z), atol=1e-12, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 17, dtype=torch.float64))


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and conv weights, so that folding BN into the convs is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return model.eval()


@pytest.mark.parametrize("factory", ["probpose_test", "probpose_test_dh", "vitpose_test"])
def test_fast_inference_path_equals_module_path(factory, crops):
    import probpose.models as models

    model = _randomise(getattr(models, factory)())
    kw = {} if factory == "vitpose_test" else {"with_error": True}
    slow = model(crops, **kw)  # eval with autograd on: the plain module path (unfused, BN as modules)
    with torch.inference_mode():
        fast = model(crops, **kw)  # BN folded, fused scalar branches, channels_last deconvolutions
    for name, ref in vars(slow).items():
        torch.testing.assert_close(getattr(fast, name), ref.detach(), atol=1e-5, rtol=1e-5, msg=name)
        assert getattr(fast, name).is_contiguous(), name


def test_error_branch_only_when_asked(crops):
    m = _randomise(probpose_test())
    with torch.inference_mode():
        plain, asked = m(crops), m(crops, with_error=True)
    assert plain.error is None and asked.error.shape == (2, 17)
    torch.testing.assert_close(plain.presence, asked.presence, atol=1e-6, rtol=0)
    m.train()
    assert m(crops).error.shape == (2, 17)  # training mode: computed (its BN statistics update, as official)


def test_folded_weights_follow_weight_changes(crops):
    m = _randomise(probpose_test())
    with torch.inference_mode():
        before = m(crops)
    m.load_state_dict(_randomise(probpose_test(), seed=1).state_dict())
    slow = m(crops)
    with torch.inference_mode():
        after = m(crops)
    assert not torch.allclose(after.logits, before.logits)
    torch.testing.assert_close(after.logits, slow.logits.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after.oks, slow.oks.detach(), atol=1e-5, rtol=1e-5)
