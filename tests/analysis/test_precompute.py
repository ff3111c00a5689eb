"""analysis.precompute: the files behind the app's tabs 3-5, from the tiny random models on a few real people."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import precompute as P


@pytest.fixture(scope="module")
def written(tmp_path_factory, coco_val, tiny_probpose, tiny_heatmap):
    tmp = tmp_path_factory.mktemp("pre")
    seen = []
    paths = P.precompute_all(tmp / "out", tiny_probpose, tiny_heatmap, data_dir=coco_val[0], ann=coco_val[1],
                             max_people=4, progress=lambda f, t="": seen.append(f), work_dir=tmp / "crops")
    return paths, seen, tmp


def test_files_are_consistent(written):
    paths, seen, _ = written
    assert set(paths) == {"calibration", "sweep", "cases", "readme", "provenance", "index"}
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert sum(p.stat().st_size for p in paths.values()) < 200_000
    # one set folder per (models, data), with its provenance in every file and in the index
    prov = json.loads(paths["provenance"].read_text())
    assert paths["cases"].parent.name == prov["set"] == "custom_cropcoco-style"  # in-memory models: not official
    assert {m["official"] for m in prov["models"].values()} == {False}
    assert prov["data"]["key"] == "cropcoco-style" and prov["data"]["num_people"] >= 1 and prov["created"]
    for key in ("calibration", "sweep", "cases"):
        assert json.loads(paths[key].read_text())["provenance"] == prov
    index = json.loads(paths["index"].read_text())
    assert list(index["sets"]) == ["custom_cropcoco-style"]
    assert "custom_cropcoco-style" in (paths["index"].parent / "README.md").read_text()
    cases = json.loads(paths["cases"].read_text())
    for model in ("probpose", "baseline"):
        cs = cases[model]["cases"]
        assert cs and [c["rank"] for c in cs] == list(range(len(cs)))
        assert [c["error"] for c in cs] == sorted((c["error"] for c in cs), reverse=True)
        for c in cs:
            assert np.asarray(c["gt_keypoints"]).shape == (17, 3) and np.asarray(c["pred_keypoints"]).shape == (17, 2)
            assert len(c["presence"]) == len(c["per_keypoint_error"]) == len(c["labels"]) == 17
            assert abs(c["error"] - (1 - c["exoks"])) < 1e-3 and len(c["crop_xywh"]) == 4
            assert c["source_file_name"].endswith(".jpg") and len(c["bbox"]) == 4
    assert cases["data"]["images"] == "coco_subset/val2017"  # relative to the shared data folder
    sweep = json.loads(paths["sweep"].read_text())
    for m in sweep["models"].values():
        err = np.array([np.inf if v is None else v for v in m["presence_error"]])
        assert m["best"]["presence_error"] == sweep["thresholds"][int(np.argmin(err))]
        assert m["best"]["Ex-mAP"] == sweep["thresholds"][int(np.argmax(m["Ex-mAP"]))]
    cal = json.loads(paths["calibration"].read_text())
    assert {"before", "after", "temperature"} <= set(cal["presence"]) and "levels" in cal["maps"]["before"]
    assert "seed 0" in paths["readme"].read_text()


def test_app_tabs_render_the_files(written, monkeypatch):
    from studio import calibration, cropcoco, settings, sweep

    paths, _, tmp = written
    monkeypatch.setattr(settings, "PRECOMPUTED_DIR", paths["cases"].parent)
    info, table = cropcoco.cropcoco_table("baseline")
    assert "CropCOCO" in info and len(table["data"]) == len(json.loads(paths["cases"].read_text())["baseline"]
                                                             ["cases"])
    drawing, fig, md = cropcoco.cropcoco_case("probpose", 0)
    assert drawing is not None and drawing.ndim == 3 and "crop x,y,w,h" in md and len(fig.data[0].y) == 17
    info, maps_fig, pres_fig, ece = calibration.calibration_views()
    assert len(maps_fig.data) == 3 and len(pres_fig.data) == 3 and [r[0] for r in ece["data"]] == ["maps",
                                                                                                  "presence"]
    info, fig = sweep.sweep_views()
    assert len([t for t in fig.data if t.mode == "markers+text"]) == 6  # 3 curves x 2 models, each starred
    # no shared data and no cached crops (a Space): the tab says so and draws on a blank canvas
    monkeypatch.setattr(settings, "SHARED_DATA", tmp / "nowhere")
    shutil.rmtree(tmp / "crops")
    assert "shared data is absent" in cropcoco.cropcoco_table("probpose")[0]
    drawing, _, md = cropcoco.cropcoco_case("probpose", 0)
    assert drawing is not None and "blank canvas" in md


def test_cli_and_app_recompute(tmp_path, coco_val, tiny_probpose, tiny_heatmap, monkeypatch):
    from analysis.__main__ import main
    from probpose.weights import save_safetensors
    from studio import cropcoco, models, settings

    pp = save_safetensors(tiny_probpose, tmp_path / "pp.safetensors")
    hm = save_safetensors(tiny_heatmap, tmp_path / "hm.safetensors")
    out = tmp_path / "pre"
    assert main(["precompute", "--weights", str(pp), "--baseline-weights", str(hm), "--data", str(coco_val[0]),
                 "--ann", str(coco_val[1]), "--out", str(out), "--max-people", "2"]) == 0
    (set_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert {p.name for p in out.iterdir()} == {"index.json", "README.md", set_dir.name}
    assert {p.name for p in set_dir.iterdir()} == {"calibration.json", "sweep.json", "cropcoco_cases.json",
                                                   "provenance.json", "README.md"}
    prov = json.loads((set_dir / "provenance.json").read_text())
    assert "command" in prov and prov["models"]["probpose"]["name"].startswith("probpose checkpoint pp")
    # the app's Recompute button: the result is shown, later views of the same visitor (case, table) read it,
    # nothing is written where the shipped files live, and another visitor still sees the shipped results
    from types import SimpleNamespace

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROBPOSE_WEIGHTS", str(pp))
    monkeypatch.setenv(models.ENV_BASELINE, str(hm))
    monkeypatch.setattr(settings, "PRECOMPUTED_DIR", tmp_path / "app")
    monkeypatch.setattr(settings, "RECOMPUTE_PEOPLE", 2)
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    info, table = cropcoco.cropcoco_recompute("probpose", progress=None, request=me)
    assert table["data"] and "Could not" not in info and "Recomputed in this session" in info
    assert not (tmp_path / "app").exists()
    assert cropcoco.cropcoco_table("probpose", request=me)[1] == table
    assert cropcoco.cropcoco_case("probpose", 0, request=me)[0] is not None
    assert cropcoco.cropcoco_table("probpose", request=other)[1]["data"] == []  # no shipped set in this folder
    with pytest.raises(Exception, match="evaluation data is not here"):
        P.compute_sweep(data_dir=tmp_path / "none", max_people=1)


# ---------------------------------------------------------------------------------------------- official sets


REV = "c0ffee0000000000000000000000000000000001"


def _cropcoco_standin(coco_val, dest: Path) -> Path:
    """A stand-in of the official CropCOCO release laid out as its config reads it (annotations/
    person_keypoints_val2017.json + val2017/), made by our generator from 3 real val images (so it holds
    out-of-image keypoints marked v=3)."""
    from analysis.coco_io import load_coco
    from analysis.cropcoco import generate_cropcoco

    coco = load_coco(coco_val[1])
    ids = sorted(coco.images)[:3]
    s = generate_cropcoco(coco_val[0], coco.subset(ids), dest)
    assert s.num_out_keypoints > 0
    return dest


def _hf_dataset(cache: Path, repo: str) -> Path:
    """The snapshot folder of a dataset repo in a huggingface_hub cache (refs/main -> REV)."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
    snap = root / "snapshots" / REV
    snap.mkdir(parents=True)
    return snap


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    from probpose import hub

    for k in ("SPACE_ID", "PROBPOSE_ONLINE", "PROBPOSE_WEIGHTS", "PROBPOSE_BASELINE_WEIGHTS",
              "PROBPOSE_RESULTS_REPO", "PROBPOSE_HUB_REVISION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    hub.reset()
    yield monkeypatch
    hub.reset()


def test_official_cropcoco_from_the_hf_cache_folder_or_zip(coco_val, tmp_path, offline):
    from analysis.cropcoco import CROPCOCO_HUB_ID

    with pytest.raises(Exception, match="hf download vrg-prague/CropCOCO --repo-type dataset"):
        P.official_cropcoco(tmp_path / "work")
    snap = _hf_dataset(tmp_path / "hf", CROPCOCO_HUB_ID)
    _cropcoco_standin(coco_val, snap)
    img, ann = P.official_cropcoco(tmp_path / "work")
    assert (img, ann) == (snap / "val2017", snap / "annotations" / "person_keypoints_val2017.json")
    # the same release shipped as one archive: unpacked into the work folder
    shutil.make_archive(str(tmp_path / "CropCOCO"), "zip", snap)
    shutil.rmtree(snap)
    snap.mkdir()
    shutil.move(str(tmp_path / "CropCOCO.zip"), snap / "CropCOCO.zip")
    img, ann = P.official_cropcoco(tmp_path / "work")
    assert img == tmp_path / "work" / "val2017" and len(list(img.glob("*.jpg"))) >= 3
    with pytest.raises(Exception, match="download-coco"):
        P.ensure_coco_val2017(tmp_path / "no_coco")


@pytest.mark.slow
def test_official_sets_end_to_end_offline(coco_val, tmp_path, offline, official_files):
    """`python -m analysis.precompute official` with the official files in the caches and a stand-in CropCOCO:
    official ProbPose-s vs official ViTPose-S, set official_cropcoco, provenance official, case images copied."""
    import warnings

    from analysis import results as R
    from analysis.cropcoco import CROPCOCO_HUB_ID

    offline.setenv("HF_HUB_CACHE", str(official_files["hf_cache"]))
    vit_home = tmp_path / "torch"
    shutil.copytree(official_files["torch_home"], vit_home)
    offline.setenv("TORCH_HOME", str(vit_home))
    crop_root = _cropcoco_standin(coco_val, tmp_path / "cropcoco_copy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our stand-in is not the released file (SHA-256 warning)
        assert P.main(["official", "--out", str(tmp_path / "out"), "--sets", "cropcoco", "--cropcoco",
                       str(crop_root), "--max-people", "3", "--device", "cpu"]) == 0
    set_dir = tmp_path / "out" / "official_cropcoco"
    prov = json.loads((set_dir / "provenance.json").read_text())
    assert prov["models"]["probpose"] == {"kind": "probpose", "official": True, "sha256": prov["models"][
        "probpose"]["sha256"], "source": "vrg-prague/ProbPose-s/ProbPose-s.pth",
        "name": "official ProbPose-s (vrg-prague/ProbPose-s)"}
    assert prov["models"]["baseline"]["official"] and "ViTPose-S" in prov["models"]["baseline"]["name"]
    assert prov["data"]["key"] == "cropcoco" and prov["command"].startswith("python -m analysis.precompute official")
    cases = json.loads((set_dir / "cropcoco_cases.json").read_text())
    names = {c["file_name"] for k in ("probpose", "baseline") for c in cases[k]["cases"]}
    assert names and all((set_dir / "images" / n).is_file() for n in names)
    # the app's reader: official set for the official models, never for the demo model
    sets = R.list_sets([(tmp_path / "out", "repository")])
    assert R.pick_set(sets, official=True).id == "official_cropcoco"
    assert R.pick_set(sets, official=False) is None
    cap = R.provenance_caption(R.load_file(sets["official_cropcoco"], "sweep"))
    assert "official ProbPose-s" in cap and "official ViTPose-S" in cap and "official CropCOCO" in cap
    # the results can come from a Hub dataset repo named by PROBPOSE_RESULTS_REPO (here: its local cache)
    snap = _hf_dataset(Path(official_files["hf_cache"]).parent / "hub2", "org/probpose-results")
    shutil.copytree(tmp_path / "out", snap, dirs_exist_ok=True)
    offline.setenv("HF_HUB_CACHE", str(snap.parents[2]))
    offline.setenv("PROBPOSE_RESULTS_REPO", "org/probpose-results")
    offline.setenv("PROBPOSE_PRECOMPUTED", str(tmp_path / "empty"))
    got = R.list_sets()
    assert got["official_cropcoco"].origin == "Hub dataset org/probpose-results"
    assert CROPCOCO_HUB_ID  # the official dataset id the command reads by default


def test_demo_and_legacy_sets_are_never_official(tmp_path):
    from analysis import results as R

    d = tmp_path / "pre" / "demo_cropcoco-style"
    d.mkdir(parents=True)
    prov = {"set": "demo_cropcoco-style", "data": {"key": "cropcoco-style", "name": "crops"},
            "models": {"probpose": {"name": "embedded offline demo ProbPose", "official": False},
                       "baseline": {"name": "embedded offline demo heatmap baseline", "official": False}}}
    (d / "provenance.json").write_text(json.dumps(prov))
    (d / "sweep.json").write_text(json.dumps({"thresholds": [0.5], "models": {}}))
    (tmp_path / "pre" / "sweep.json").write_text(json.dumps({"model": "old"}))  # a flat, pre-set file
    (tmp_path / "pre" / "calibration.json").write_text(json.dumps({"model": "old.safetensors"}))
    sets = R.list_sets([(tmp_path / "pre", "repository")])
    assert set(sets) == {"demo_cropcoco-style", "legacy"} and not any(s.official for s in sets.values())
    assert R.pick_set(sets, official=True, file="sweep") is None
    assert R.pick_set(sets, official=False, file="sweep").id == "demo_cropcoco-style"
    cap = R.provenance_caption(R.load_file(sets["demo_cropcoco-style"], "sweep"))
    assert "embedded offline demo ProbPose (not an official model)" in cap
    assert R.provenance_caption({"x": 1}).startswith("*Provenance unknown")
