"""analysis.precompute: the files behind the app's tabs 3-5, from the tiny random models on a few real people."""

from __future__ import annotations

import json
import shutil

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
    assert set(paths) == {"calibration", "sweep", "cases", "readme"}
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert sum(p.stat().st_size for p in paths.values()) < 200_000
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
    from studio import app_handlers as H

    paths, _, tmp = written
    monkeypatch.setattr(H, "PRECOMPUTED_DIR", paths["cases"].parent)
    info, table = H.cropcoco_table("baseline")
    assert "CropCOCO" in info and len(table["data"]) == len(json.loads(paths["cases"].read_text())["baseline"]
                                                             ["cases"])
    drawing, fig, md = H.cropcoco_case("probpose", 0)
    assert drawing is not None and drawing.ndim == 3 and "crop x,y,w,h" in md and len(fig.data[0].y) == 17
    info, maps_fig, pres_fig, ece = H.calibration_views()
    assert len(maps_fig.data) == 3 and len(pres_fig.data) == 3 and [r[0] for r in ece["data"]] == ["maps",
                                                                                                  "presence"]
    info, fig = H.sweep_views()
    assert len([t for t in fig.data if t.mode == "markers+text"]) == 6  # 3 curves x 2 models, each starred
    # no shared data and no cached crops (a Space): the tab says so and draws on a blank canvas
    monkeypatch.setattr(H, "SHARED_DATA", tmp / "nowhere")
    shutil.rmtree(tmp / "crops")
    assert "shared data is absent" in H.cropcoco_table("probpose")[0]
    drawing, _, md = H.cropcoco_case("probpose", 0)
    assert drawing is not None and "blank canvas" in md


def test_cli_and_app_recompute(tmp_path, coco_val, tiny_probpose, tiny_heatmap, monkeypatch):
    from analysis.__main__ import main
    from studio import app_handlers as H
    from probpose.weights import save_safetensors

    pp = save_safetensors(tiny_probpose, tmp_path / "pp.safetensors")
    hm = save_safetensors(tiny_heatmap, tmp_path / "hm.safetensors")
    out = tmp_path / "pre"
    assert main(["precompute", "--weights", str(pp), "--baseline-weights", str(hm), "--data", str(coco_val[0]),
                 "--ann", str(coco_val[1]), "--out", str(out), "--max-people", "2"]) == 0
    assert {p.name for p in out.iterdir()} == {"calibration.json", "sweep.json", "cropcoco_cases.json", "README.md"}
    # the app's Recompute button: the result is shown and later views (case, reload) read it
    monkeypatch.setenv("PROBPOSE_WEIGHTS", str(pp))
    monkeypatch.setenv(H.ENV_BASELINE, str(hm))
    monkeypatch.setattr(H, "PRECOMPUTED_DIR", tmp_path / "app")
    monkeypatch.setattr(H, "RECOMPUTE_PEOPLE", 2)
    info, table = H.cropcoco_recompute("probpose", progress=None)
    assert table["data"] and "Could not" not in info
    assert (tmp_path / "app" / "recomputed_cropcoco_cases.json").is_file()
    assert H.cropcoco_table("probpose")[1] == table and H.cropcoco_case("probpose", 0)[0] is not None
    with pytest.raises(Exception, match="evaluation data is not here"):
        P.compute_sweep(data_dir=tmp_path / "none", max_people=1)
