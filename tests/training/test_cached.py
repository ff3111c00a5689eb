"""Trunk-feature cache (training.features) and head training on it (training.cached), end to end on real people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from probpose.weights import EMBEDDED_WEIGHTS
from training import features
from training.cached import CachedTrainConfig, export, head_forward, make_batch, train
from training.data import AugmentConfig

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "coco_subset" / "train2017").is_dir(), reason="../shared/data absent")


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    # Torch trunk (no sdist needed), only coco_subset/train, 6 views.
    monkeypatch.setenv("TFPOSE_SDIST", str(tmp_path / "absent.tar.gz"))
    monkeypatch.setattr(features, "TRAIN_SOURCES", features.TRAIN_SOURCES[:1])
    out = tmp_path / "cache"
    aug = AugmentConfig(crop_prob=0.0)
    n = features.build_cache(out, 1, 2, aug, 0.8, 0, EMBEDDED_WEIGHTS, batch=3, max_views=6, data_root=DATA)
    assert n == 6
    return out


@needs_data
def test_cache_is_resumable_and_deterministic(tiny_cache, monkeypatch):
    c = features.CombinedCache([tiny_cache])
    assert c.done == 6 and c.read(np.arange(6)).shape == (6, 185, 32, 24)
    assert np.isfinite(c.read(np.arange(6))).all()
    # Same view of the same person: same augmentation draw (a pure function of seed, view, person).
    p, v, s = c.samples[0]
    again = features.make_sample(features.read_image_rgb(c.people[p].image_path), c.people[p],
                                 features.view_augment(AugmentConfig(crop_prob=0.0), v, 0.8),
                                 np.random.default_rng((0, v, p)))
    np.testing.assert_allclose(again.keypoints, s.keypoints)
    # Asking for more continues where it stopped; other settings in the same folder are refused.
    aug = AugmentConfig(crop_prob=0.0)
    assert features.build_cache(tiny_cache, 1, 2, aug, 0.8, 0, EMBEDDED_WEIGHTS, batch=3, max_views=9,
                                data_root=DATA) == 9
    # A resumed run commits on its own count: interrupted (time limit) after one batch, that batch is kept.
    assert features.build_cache(tiny_cache, 1, 2, aug, 0.8, 0, EMBEDDED_WEIGHTS, batch=2, max_views=20,
                                data_root=DATA, limit_s=0.0, commit_every=2) == 11
    assert features.CombinedCache([tiny_cache]).done == 11
    with pytest.raises(SystemExit, match="other settings"):
        features.build_cache(tiny_cache, 1, 2, aug, 0.5, 0, EMBEDDED_WEIGHTS, max_views=9, data_root=DATA)


@needs_data
@pytest.mark.parametrize("kind", ["probpose", "heatmap", "probpose_dh"])
def test_heads_train_on_the_cache_and_export(kind, tiny_cache, tmp_path):
    cfg = CachedTrainConfig(kind=kind, cache=[str(tiny_cache)], trunk=str(EMBEDDED_WEIGHTS),
                            out_dir=str(tmp_path / kind), steps=2, batch_size=4, warmup=1, log_interval=1,
                            checkpoint_interval=1, coco_fraction=1.0, threads=1)
    ckpt = train(cfg)
    assert torch.load(ckpt, weights_only=False)["step"] == 2
    from probpose.models import build_model  # noqa: F401  (the exported file loads through load_pretrained)
    from probpose.weights import load_pretrained

    path = export(cfg, tmp_path / f"{kind}.safetensors", calibrate=False)
    model = load_pretrained(str(path))
    assert model.kind == kind
    # The cached path (neck + head on cached features) equals the full model on the same features.
    c = features.CombinedCache([tiny_cache])
    batch = make_batch(c, np.arange(2), kind, model.config)
    with torch.no_grad():
        out = head_forward(model, batch["feats"])
    maps = out.heatmaps if kind == "heatmap" else (out.expert_maps if kind == "probpose_dh" else out.probmaps)
    assert maps.shape == (2, 17, 64, 48) and torch.isfinite(maps).all()


def test_presence_absent_weight_scales_only_out_of_window_terms():
    """presence_absent_weight weighs out-of-window keypoints up in the presence BCE (1 in the shipped configs)."""
    from types import SimpleNamespace

    from training.cached import losses_for

    torch.manual_seed(0)
    b, k = 3, 17
    probmaps = torch.softmax(torch.randn(b, k, 64 * 48), -1).reshape(b, k, 64, 48)
    in_window = (torch.rand(b, k) > 0.3).float()
    batch = {"annotated": torch.ones(b, k), "in_window": in_window, "probmap": probmaps, "target_weight": torch.ones(b, k),
             "visible": torch.ones(b, k), "vis_weight": torch.ones(b, k)}
    out = SimpleNamespace(probmaps=probmaps, presence=torch.rand(b, k).clamp(0.05, 0.95), visibility=torch.rand(b, k),
                          oks=torch.rand(b, k))
    model = SimpleNamespace(kind="probpose")
    one = losses_for(model, out, batch)["loss_presence"]
    four = losses_for(model, out, batch, presence_absent_weight=4.0)["loss_presence"]
    absent_only = losses_for(model, out, {**batch, "annotated": 1 - in_window})["loss_presence"]
    torch.testing.assert_close(four, one + 3 * absent_only)


def test_window_clear_is_the_background_crops_test():
    """training.features.window_clear: the activation window (box x1.25) must not overlap a person box by more
    than 5% of that box; background_sample only returns crops that pass it."""
    person = np.array([100.0, 100.0, 200.0, 300.0])
    assert not features.window_clear(np.array([150.0, 150.0, 250.0, 350.0]), [person])
    assert features.window_clear(np.array([400.0, 100.0, 500.0, 300.0]), [person])
    # a box just beside the person: the box itself is clear, its 1.25x window is not
    assert not features.window_clear(np.array([203.0, 100.0, 303.0, 300.0]), [person])
    assert features.window_clear(np.array([0.0, 0.0, 10.0, 10.0]), [])


@needs_data
def test_cropcoco_style_people_cut_like_the_evaluation_and_combine_with_other_caches(tiny_cache, tmp_path,
                                                                                   monkeypatch):
    """`--cropcoco-seeds`: people of CropCOCO-style sets of the training images (the evaluation's cuts, neighbours
    included), out-of-image keypoints at their true place, read together with a cache of the plain people."""
    from analysis.exoks import pad_to_contain
    from probpose.codec import encode_probmaps

    monkeypatch.setattr(features, "TRAIN_SOURCES", features.TRAIN_SOURCES[:1])
    people, sources = features.cropcoco_training_people(tmp_path / "cc", seeds=1, progress=False, data_root=DATA)
    assert set(sources) == {"coco_subset"} and len(people) > 100
    # The sets are written once; a second call reads the same people back.
    again, _ = features.cropcoco_training_people(tmp_path / "cc", seeds=1, progress=False, data_root=DATA)
    assert len(again) == len(people)
    # Cut off, far enough to leave the window: the codec's in-window target agrees with Ex-OKS's geometry.
    out_codec = out_geom = 0
    for p in people:
        box = np.array([p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]])
        geom = (pad_to_contain(box, p.keypoints) > 1.25) & (p.keypoints[:, 2] > 0)
        s = features.make_sample(features.read_image_rgb(p.image_path), p, AugmentConfig(enabled=False), None)
        t = encode_probmaps(s.keypoints[None], s.annotated[None])
        codec = s.annotated & (np.asarray(t.in_window)[0] < 0.5)
        out_geom += geom.sum()
        out_codec += codec.sum()
        assert (codec <= geom).all()  # never out of window where the evaluation says in
    assert out_geom > 50 and out_codec >= 0.9 * out_geom  # a pixel's rounding at the window edge may differ

    aug = AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)
    cc = tmp_path / "cc"
    assert features.build_cache(cc, 1, 1, aug, 0.0, 0, EMBEDDED_WEIGHTS, batch=3, max_views=4, data_root=DATA,
                                cropcoco_seeds=1) == 4
    both = features.CombinedCache([tiny_cache, cc])
    plain = features.CombinedCache([tiny_cache])
    assert both.done == plain.done + 4 and len(both.people) == len(plain.people) + len(people)
    for pi, _, _ in both.samples[plain.done:]:  # person indices point into the appended people
        assert both.people[pi].image_path.parent.name == "val2017" and "sets" in str(both.people[pi].image_path)
    # More cuts in another folder (`--cropcoco-first-seed`): other people, appended after the first folder's.
    cc2 = tmp_path / "cc2"
    assert features.build_cache(cc2, 1, 1, aug, 0.0, 0, EMBEDDED_WEIGHTS, batch=3, max_views=2, data_root=DATA,
                                cropcoco_seeds=1, cropcoco_first_seed=1) == 2
    assert (cc2 / "sets" / "coco_subset_s1").is_dir() and not (cc2 / "sets" / "coco_subset_s0").exists()
    three = features.CombinedCache([tiny_cache, cc, cc2])
    assert three.done == both.done + 2 and len(three.people) > len(both.people)
    for pi, _, _ in three.samples[both.done:]:
        assert "coco_subset_s1" in str(three.people[pi].image_path)
    # A folder whose meta says "the training people" but whose people list differs is refused, not mis-indexed.
    import pickle
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(tiny_cache, odd)
    with open(odd / "people.pkl", "rb") as f:
        ppl, src = pickle.load(f)
    with open(odd / "people.pkl", "wb") as f:
        pickle.dump((ppl[:-1], src[:-1]), f)
    with pytest.raises(SystemExit, match="people lists differ"):
        features.CombinedCache([tiny_cache, odd])


@needs_data
def test_sliver_cuts_leave_more_of_each_person_outside_and_are_other_people(tiny_cache, tmp_path, monkeypatch):
    """`--cropcoco-keep 0.25 0.6 --cropcoco-context 2.5`: cuts that leave slivers of people (as CropCOCO leaves of
    the people around its target); their own sets folder and their own people in a CombinedCache."""
    from analysis.cropcoco import CropCocoConfig
    from analysis.exoks import pad_to_contain

    # the default cut is the evaluation's
    assert (features.CUT_KEEP, features.CUT_CONTEXT) == (CropCocoConfig().keep_range, CropCocoConfig().context)
    monkeypatch.setattr(features, "TRAIN_SOURCES", features.TRAIN_SOURCES[:1])

    def out_share(people):
        out = lab = 0
        for p in people:
            box = np.array([p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]])
            labelled = p.keypoints[:, 2] > 0
            out += ((pad_to_contain(box, p.keypoints) > 1.25) & labelled).sum()
            lab += labelled.sum()
        return out / lab

    plain, _ = features.cropcoco_training_people(tmp_path / "cc", seeds=1, progress=False, data_root=DATA)
    sliver, src = features.cropcoco_training_people(tmp_path / "cc", seeds=1, progress=False, data_root=DATA,
                                                    sources=("coco_subset",), keep_range=(0.25, 0.6), context=2.5)
    assert (tmp_path / "cc" / "sets" / "coco_subset_s0_k25-60_c250").is_dir() and set(src) == {"coco_subset"}
    assert out_share(sliver) > 1.5 * out_share(plain) > 0
    assert features.cropcoco_training_people(tmp_path / "cc", seeds=1, progress=False, data_root=DATA,
                                             sources=("lspet",)) == ([], [])

    aug = AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)
    kw = dict(batch=3, max_views=2, data_root=DATA, cropcoco_seeds=1)
    assert features.build_cache(tmp_path / "a", 1, 1, aug, 0.0, 0, EMBEDDED_WEIGHTS, **kw) == 2
    assert features.build_cache(tmp_path / "b", 1, 1, aug, 0.0, 0, EMBEDDED_WEIGHTS, cropcoco_keep=(0.25, 0.6),
                                cropcoco_context=2.5, **kw) == 2
    assert "cropcoco_cut" not in features.FeatureCache(tmp_path / "a").meta  # older caches' metas stay equal
    both = features.CombinedCache([tiny_cache, tmp_path / "a", tmp_path / "b"])
    one = features.CombinedCache([tiny_cache, tmp_path / "a"])
    assert len(both.people) == len(one.people) + len(sliver)  # same seeds, other cut: other people, appended
    for pi, _, _ in both.samples[one.done:]:
        assert "_k25-60_c250" in str(both.people[pi].image_path)


@pytest.mark.parametrize("args, message", [
    (["--cropcoco-keep", "0.9", "0.5"], "--cropcoco-keep needs 0 < LO <= HI <= 1"),
    (["--cropcoco-context", "0.5"], "--cropcoco-context must be >= 1"),
    (["--cropcoco-sources", "coco,lspet"], "--cropcoco-sources: unknown ['coco']"),
])
def test_features_cli_refuses_bad_cut_settings(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        features.main(["--out", str(tmp_path / "cc"), "--cropcoco-seeds", "1", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "cc").exists()


@needs_data
def test_init_from_a_checkpoint_with_other_branch_sizes_keeps_the_rest(tiny_cache, tmp_path, capsys):
    """`init_from` with a config that resizes part of the model (wider scalar branches): the resized tensors start
    fresh and are named, everything else (neck, map head) is copied."""
    base = CachedTrainConfig(kind="probpose", cache=[str(tiny_cache)], trunk=str(EMBEDDED_WEIGHTS),
                             out_dir=str(tmp_path / "a"), steps=1, batch_size=2, warmup=1, coco_fraction=1.0,
                             threads=1)
    first = torch.load(train(base), weights_only=False)["model"]
    wide = CachedTrainConfig(**{**base.__dict__, "out_dir": str(tmp_path / "b"), "init_from": str(tmp_path / "a" /
                                "last.pt"), "model": {"branch_channels": 32}, "lr": 0.0, "warmup": 10**6})
    second = torch.load(train(wide), weights_only=False)["model"]
    assert "start fresh: head." in capsys.readouterr().out
    assert second["head.probability_layers.0.weight"].shape[0] == 32 != first["head.probability_layers.0.weight"].shape[0]
    torch.testing.assert_close(second["head.final_layer.weight"], first["head.final_layer.weight"])  # lr 0: copied


@needs_data
def test_void_grids_are_the_views_black_pixels_and_a_void_model_grows_from_a_plain_checkpoint(tiny_cache, tmp_path,
                                                                                            capsys):
    """Caches made before the void channel get it from their views redrawn (kept in void.npy); `init_from` a model
    without it gives the layers that read the backbone a zero weight for the new channel: same outputs."""
    import pickle

    from training.cached import build_mbt_model, grow_input_channels

    c = features.FeatureCache(tiny_cache)
    void = features.ensure_void_masks(c, progress=False)
    assert void.shape == (6, 32, 24) and (tiny_cache / "void.npy").is_file()
    boxes = features.image_boxes(c.people)
    for p, v, s in c.samples[:3]:
        again = features.view_sample(c.people, p, v, AugmentConfig(crop_prob=0.0), 0.8, 0, boxes)
        np.testing.assert_allclose(again.keypoints, s.keypoints)
    p, v, _ = c.samples[0]
    redrawn = features.view_sample(c.people, p, v, AugmentConfig(crop_prob=0.0), 0.8, 0, boxes).image
    np.testing.assert_array_equal(void[0], features.void_grid(redrawn).astype(np.float16))
    both = features.CombinedCache([tiny_cache], void=True)
    np.testing.assert_array_equal(both.read_void(np.arange(6))[:, 0], void.astype(np.float32))
    # void.npy is derived data: an unreadable one is computed again, with a note, not a crash
    (tiny_cache / "void.npy").write_bytes(b"not an npy file")
    np.testing.assert_array_equal(features.ensure_void_masks(c, progress=False), void)
    assert "computing the void grids again" in capsys.readouterr().err
    # A cache whose data changed since it was made is refused, not silently given wrong grids.
    (tiny_cache / "void.npy").unlink()
    with open(tiny_cache / "samples.pkl", "rb") as f:
        samples = pickle.load(f)
    samples[0][2].keypoints = samples[0][2].keypoints + 5.0
    with open(tiny_cache / "samples.pkl", "wb") as f:
        pickle.dump(samples, f)
    with pytest.raises(SystemExit, match="no longer matches its data"):
        features.ensure_void_masks(features.FeatureCache(tiny_cache), progress=False)

    plain = build_mbt_model("probpose").eval()
    grown = build_mbt_model("probpose", {"backbone": {"void_channel": True}}).eval()
    state, names = grow_input_channels(grown, plain.state_dict())
    assert sorted(names) == ["head.deconv_layers.0.weight", "head.error_layers.0.weight",
                             "head.oks_layers.0.weight", "head.probability_layers.0.weight",
                             "head.visibility_layers.0.weight"]
    grown.load_state_dict(state)
    feats = torch.from_numpy(both.read(np.arange(2)))
    with torch.no_grad():
        a = head_forward(plain, feats)
        b = head_forward(grown, feats, torch.rand(2, 1, 32, 24))
    torch.testing.assert_close(a.probmaps, b.probmaps)
    torch.testing.assert_close(a.presence, b.presence)


@needs_data
def test_a_void_stage_trains_from_a_plain_checkpoint_and_exports_a_void_model(tiny_cache, tmp_path, capsys):
    """configs/probpose_mbt_neck.toml's path: stage 1 without the void channel, stage 2 with it."""
    from probpose.weights import load_pretrained

    base = CachedTrainConfig(kind="probpose", cache=[str(tiny_cache)], trunk=str(EMBEDDED_WEIGHTS),
                             out_dir=str(tmp_path / "a"), steps=1, batch_size=2, warmup=1, coco_fraction=1.0,
                             threads=1)
    first = torch.load(train(base), weights_only=False)["model"]
    stage2 = CachedTrainConfig(**{**base.__dict__, "out_dir": str(tmp_path / "b"), "init_from": str(tmp_path / "a" /
                                  "last.pt"), "model": {"backbone": {"void_channel": True}}, "steps": 2,
                                  "train_only": ["head.probability_layers"]})
    second = torch.load(train(stage2), weights_only=False)["model"]
    assert "one more input channel (the void channel)" in capsys.readouterr().out
    w = second["head.deconv_layers.0.weight"]  # not trained here: stage 1's weights and a zero row
    torch.testing.assert_close(w[:-1], first["head.deconv_layers.0.weight"])
    assert not w[-1].any()
    model = load_pretrained(str(export(stage2, tmp_path / "void.safetensors", calibrate=False)))
    assert model.config.backbone.void_channel and model.config.backbone.embed_dim == 65
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 192))
    assert out.probmaps.shape == (1, 17, 64, 48) and torch.isfinite(out.presence).all()


def test_features_cli_refuses_a_negative_first_seed(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        features.main(["--out", str(tmp_path / "cc"), "--cropcoco-seeds", "2", "--cropcoco-first-seed", "-1"])
    assert e.value.code == 2 and "--cropcoco-first-seed must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "cc").exists()


def test_features_cli_names_missing_data_in_one_line(tmp_path, capsys):
    """A wrong --data-root (here with --cropcoco-seeds) is a one-line error naming the file, exit code 2."""
    rc = features.main(["--out", str(tmp_path / "cc"), "--cropcoco-seeds", "1", "--views", "1", "--coco-views", "1",
                        "--data-root", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "person_keypoints_train2017.json" in err and "Traceback" not in err
    assert "--data-root" in err and "--ann" not in err  # this CLI has no --ann


@needs_data
def test_a_stage6_input_cache_fine_tunes_the_trunks_last_stage_and_exports_it(tiny_cache, tmp_path, monkeypatch):
    """`--stage6-input` caches stage 6's input; a run that names that stage in train_only trains and ships it."""
    from probpose.weights import load_pretrained

    aug = AugmentConfig(crop_prob=0.0)
    s6 = tmp_path / "s6"
    assert features.build_cache(s6, 1, 2, aug, 0.8, 0, EMBEDDED_WEIGHTS, batch=3, max_views=4, data_root=DATA,
                                stage6_input=True) == 4
    c6, c = features.CombinedCache([s6]), features.CombinedCache([tiny_cache])
    assert c6.stage6_input and not c.stage6_input and c6.read(np.arange(4)).shape == (4, 921, 32, 24)
    with pytest.raises(SystemExit, match="different features"):
        features.CombinedCache([tiny_cache, s6])
    # Same views, same seeds: stage 6 run on the cached input gives the cached outputs (fp16 storage apart).
    model = load_pretrained(str(EMBEDDED_WEIGHTS))
    with torch.no_grad():
        out = model.backbone.trunk.from_stage(torch.from_numpy(c6.read(np.arange(4))), 6)
    got = torch.cat([out[f] for f in model.config.backbone.features], 1).numpy()
    np.testing.assert_allclose(got, c.read(np.arange(4)), atol=0.05, rtol=0.02)

    stage = "backbone.trunk.layers.MConv_Stage6"
    cfg = CachedTrainConfig(kind="probpose", cache=[str(s6)], trunk=str(EMBEDDED_WEIGHTS),
                            out_dir=str(tmp_path / "run"), init_from=str(EMBEDDED_WEIGHTS), steps=2, batch_size=4,
                            warmup=1, lr=1e-2, coco_fraction=1.0, threads=1, scalar_grad_to_backbone=0.5,
                            train_only=[stage, "backbone.neck", "head"], trunk_lr_scale=0.5,
                            model={"backbone": {"void_channel": True}})
    saved = torch.load(train(cfg), weights_only=False)["model"]
    trunk_keys = [k for k in saved if k.startswith("backbone.trunk.")]
    assert trunk_keys and all(k.startswith(stage) for k in trunk_keys)  # only the trained stage is saved
    before = model.state_dict()
    assert any(not torch.equal(saved[k], before[k].float()) for k in trunk_keys)
    path = export(cfg, tmp_path / "s6.safetensors", calibrate=False)
    tuned = load_pretrained(str(path))
    import json

    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["probpose.extra"])["backbone"].endswith("fine-tuned: MConv_Stage6")
    sd = tuned.state_dict()
    for k in trunk_keys:  # the file holds the trained stage (fp16), the rest of the trunk as released
        torch.testing.assert_close(sd[k], saved[k].half().float())
    key = "backbone.trunk.layers.Conv2d_5.pw.weight"
    assert torch.equal(sd[key], before[key])
    # A later branch-only stage on the same caches keeps the tuned stage 6 (saved, exported as fine-tuned); one
    # that starts from the released trunk (the shipped file's fp16 copy) exports it as released ("frozen").
    branches = ["head.probability_layers", "head.visibility_layers", "head.oks_layers"]
    later = CachedTrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "later"), "train_only": branches,
                                 "init_from": str(tmp_path / "run" / "last.pt"), "steps": 1})
    kept = torch.load(train(later), weights_only=False)["model"]
    for k in trunk_keys:
        torch.testing.assert_close(kept[k], saved[k])
    plain = CachedTrainConfig(**{**later.__dict__, "out_dir": str(tmp_path / "plain"),
                                 "init_from": str(EMBEDDED_WEIGHTS)})
    train(plain)
    for c, word in ((later, "fine-tuned: MConv_Stage6"), (plain, "frozen")):
        with safe_open(str(export(c, tmp_path / f"{Path(c.out_dir).name}.safetensors", calibrate=False)), "pt") as f:
            assert json.loads(f.metadata()["probpose.extra"])["backbone"].endswith(word)
    # A trunk stage cannot train on caches of the trunk's outputs.
    bad = CachedTrainConfig(**{**cfg.__dict__, "cache": [str(tiny_cache)], "out_dir": str(tmp_path / "bad")})
    with pytest.raises(SystemExit, match="stage6-input"):
        train(bad)


def test_scalar_branches_train_the_backbone_only_when_asked():
    """Official head: the presence / visibility / OKS losses leave the backbone alone; the trainer's switch lets a
    share of their gradient through without changing the forward pass."""
    from probpose.models.mbt import probpose_mbt

    torch.manual_seed(0)
    model = probpose_mbt()
    feats = torch.randn(2, model.config.backbone.embed_dim, 32, 24, requires_grad=True)
    grads = []
    for share in (0.0, 0.5, 1.0):
        model.head.scalar_grad_to_backbone = share
        feats.grad = None
        out = model.head(feats, 1.0)
        out.presence.sum().backward()
        grads.append(feats.grad.clone() if feats.grad is not None else torch.zeros_like(feats))
    assert not grads[0].any() and grads[2].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[2] * 0.5)
