"""Failure diagnosis (constructed case), the runner on real images with the tiny models, sweeps, report, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.coco_io import coco_from_dict, load_coco
from analysis.failures import diagnose_keypoints, failures_table, rank_failures

K = 17


def test_diagnosis_of_each_failure_kind():
    gt = np.zeros((K, 3))
    gt[:, 0] = 50
    gt[:, 1] = np.linspace(20, 180, K)
    gt[:, 2] = 2
    gt[5] = [30, 60, 2]  # left shoulder
    gt[6] = [70, 60, 2]  # right shoulder
    gt[16] = [0, 0, 0]  # unlabelled
    gt[15] = [50, 260, 2]  # far below the AW (box 20..80 x 10..200 -> AW y up to ~224) -> out
    ann = {"id": 1, "image_id": 1, "bbox": [20, 10, 60, 190], "area": 8000.0, "keypoints": gt.ravel().tolist()}
    pred = gt.copy()
    pred[:, 2] = 0.9
    pred[5, :2], pred[6, :2] = gt[6, :2], gt[5, :2]  # left/right swapped
    pred[0, 2] = 0.1  # nose called out -> missed
    pred[15] = [50, 200, 0.9]  # GT out, predicted in -> hallucinated
    pred[9, :2] += 40  # left wrist 40 px off -> far
    labels, oks, exoks = diagnose_keypoints(pred, ann, threshold=0.5)
    assert labels[0] == "missed" and labels[5] == labels[6] == "swapped" and labels[9] == "far"
    assert labels[15] == "hallucinated" and labels[16] == "unlabelled" and labels[1] == "ok"
    assert 0 < exoks < oks < 1  # the presence mistakes cost Ex-OKS only


def test_rank_failures_sorts_worst_first():
    kp = [50, 50, 2] * K
    anns = [{"id": i, "image_id": 1, "bbox": [20, 20, 60, 80], "area": 3000.0, "keypoints": kp} for i in (1, 2)]
    cs = coco_from_dict({"images": [{"id": 1, "file_name": "a", "width": 200, "height": 200}], "annotations": anns})
    res = [{"image_id": 1, "keypoints": [50, 50, 1] * K, "score": 1.0, "gt_ann_id": 1},
           {"image_id": 1, "keypoints": [60, 50, 1] * K, "score": 1.0, "gt_ann_id": 2}]
    rows = rank_failures(res, cs, 0.5)
    assert [r.ann_id for r in rows] == [2, 1] and rows[1].exoks == pytest.approx(1.0)
    table = failures_table(rows)
    assert set(table[0]) >= {"image_id", "ann_id", "oks", "exoks", "problems"} and "labels" not in table[0]


@pytest.fixture(scope="module")
def small_val(coco_val):
    img, ann = coco_val
    cs = load_coco(ann)
    return img, cs.subset(sorted(cs.images)[:3])


@pytest.mark.slow
def test_runner_report_and_sweep_with_tiny_models(small_val, tiny_probpose, tiny_heatmap, tmp_path):
    from analysis.cocoeval import pycocotools_keypoint_ap
    from analysis.evaluate import evaluate_run, run_model
    from analysis.report import write_report

    img, cs = small_val
    from analysis.evaluate import evaluated_subset
    from analysis.exoks import evaluate_keypoints

    run = run_model(tiny_probpose, img, cs, keep_map_samples=True, progress=False, batch_size=16)
    # the official runner's people: no crowd, no num_keypoints == 0 (these boxes all lie inside the image)
    n_people = sum(1 for a in cs.annotations if not a["iscrowd"] and a["num_keypoints"] > 0)
    assert len(run.results) == n_people == len(run.records)
    r0 = run.results[0]
    assert len(r0["keypoints"]) == 3 * K and 0 <= min(r0["keypoints"][2::3]) <= max(r0["keypoints"][2::3]) <= 1
    assert np.isfinite(run.records.presence_logit).all() and len(run.map_samples) > 0
    m = evaluate_run(run, cs)
    evaluated, keep = evaluated_subset(run)  # after OKS-NMS 0.9
    assert m["nms"] == {"threshold": 0.9, "before": len(run.results), "after": len(evaluated)}
    assert m["coco"] == evaluate_keypoints(cs.dataset, evaluated).stats  # official rules: the primary mAP
    assert m["coco_pycocotools"] == pycocotools_keypoint_ap(cs.dataset, evaluated)
    assert m["rules"].startswith("official") and -1 <= m["oracle_threshold"] <= 1
    from analysis.presence import oracle_threshold_from_results

    # the oracle from the records equals the one from the results file alone (presences written unrounded)
    assert oracle_threshold_from_results(cs.dataset, evaluated) == m["oracle_threshold"]
    assert len(m["sweep"]["thresholds"]) == 21 and "maps" in m["calibration"]
    paths = write_report(tmp_path / "rep", m, run, cs, png_engine="pil")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Ex-mAP" in md and "Small-sample" in md
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["coco"]["AP"] == m["coco"]["AP"] and saved["png_engine"] == "pil"
    assert (tmp_path / "rep" / "plots" / "sweep.png").stat().st_size > 1000
    assert json.loads((tmp_path / "rep" / "results.json").read_text())[0]["gt_ann_id"] == r0["gt_ann_id"]
    assert "plot_map_coverage" in paths
    from analysis.report import figures_from_metrics, load_metrics

    m2, rows = load_metrics(tmp_path / "rep")  # what the app reads back: no model, no evaluation
    figs = figures_from_metrics(m2, rows)
    assert set(figs) == {"sweep", "presence_reliability", "map_coverage", "failures"}
    vals = [r["exoks"] for r in rows if r["exoks"] is not None]
    assert len(rows) == len(run.results) and vals == sorted(vals)

    hrun = run_model(tiny_heatmap, img, cs, progress=False, batch_size=16)
    hm = evaluate_run(hrun, cs, calibrate=True, sweep=False)
    assert np.isnan(hrun.records.presence_logit).all() and "ece" in hm["calibration"]["presence"]


def test_runner_survives_missing_images_and_bad_boxes(small_val, tiny_heatmap, tmp_path):
    from analysis.evaluate import evaluate_run, run_model

    img, cs = small_val
    data = json.loads(json.dumps(cs.dataset))
    first = data["images"][0]
    data["images"].append({**first, "id": 777, "file_name": "does_not_exist.jpg"})
    a = next(x for x in data["annotations"] if x["image_id"] == first["id"] and not x["iscrowd"])
    data["annotations"].append({**a, "id": 778, "image_id": 777})
    data["annotations"].append({**a, "id": 779, "bbox": [first["width"] + 50, 10, 30, 30]})  # off the image
    cs2 = coco_from_dict(data)
    run = run_model(tiny_heatmap, img, cs2, progress=False)
    assert run.skipped["missing_image"] == 1 and run.skipped["box_outside_image"] == 1
    assert 777 not in run.image_ids and len(run.image_ids) == 3
    assert any("does_not_exist.jpg" in msg for msg in run.messages)
    m = evaluate_run(run, cs2, calibrate=False, sweep=False)
    assert m["counts"]["skipped_missing_image"] == 1 and m["coco"]["AP"] >= 0


@pytest.mark.slow
def test_cli_evaluate_and_compare(small_val, tiny_probpose, tiny_heatmap, tmp_path, capsys):
    import torch

    from analysis.__main__ import main
    from probpose.models.dual import probpose_test_dh
    from probpose.weights import save_safetensors

    img, cs = small_val
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(cs.dataset))
    wp = save_safetensors(tiny_probpose, tmp_path / "pp.safetensors", dtype=None)
    wh = save_safetensors(tiny_heatmap, tmp_path / "hm.safetensors", dtype=None)
    torch.manual_seed(0)
    wd = save_safetensors(probpose_test_dh().eval(), tmp_path / "dh.safetensors", dtype=None)
    rc = main(["evaluate", "--weights", str(wp), "--data", str(img), "--ann", str(ann), "--out",
               str(tmp_path / "ev"), "--cropcoco", "--no-png", "--no-sweep"])
    assert rc == 0
    assert (tmp_path / "ev" / "coco" / "report.md").is_file()
    assert (tmp_path / "ev" / "cropcoco" / "metrics.json").is_file()
    assert (tmp_path / "ev" / "cropcoco_set" / "annotations" / "person_keypoints_val2017.json").is_file()
    # the generated set records its cut targets: presence is also reported per person role
    roles = json.loads((tmp_path / "ev" / "cropcoco" / "metrics.json").read_text())["presence_by_role"]
    assert roles["target"]["people"] >= 1 and "best_balanced" in roles["target"]
    assert "By person role" in (tmp_path / "ev" / "cropcoco" / "report.md").read_text()
    # ... and by where each keypoint lies (the set marks keypoints outside the image v=3)
    places = json.loads((tmp_path / "ev" / "cropcoco" / "metrics.json").read_text())["presence_by_place"]
    assert places["all"]["places"]["out_window"]["n"] >= 1 and 0 <= places["all"]["image_auc"] <= 1
    assert "By where the keypoint lies" in (tmp_path / "ev" / "cropcoco" / "report.md").read_text()
    assert "presence_by_place" not in json.loads((tmp_path / "ev" / "coco" / "metrics.json").read_text())
    assert "presence_by_role" not in json.loads((tmp_path / "ev" / "coco" / "metrics.json").read_text())
    rc = main(["compare", "--weights", str(wp), "--baseline-weights", str(wh), "--dh-weights", str(wd), "--data",
               str(img), "--ann", str(ann), "--out", str(tmp_path / "cmp"), "--no-png", "--no-sweep",
               "--no-calibration"])
    assert rc == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert table.index("Heatmap baseline (ours)") < table.index("ProbPose (ours)") < table.index("ProbPose-DH (ours)")
    assert "ProbPose-s (paper) | 76.6 | 81.7 | - | 73.9" in table
    assert "| CropCOCO mAP (pycocotools) |" in table and "official ProbPose evaluator's rules" in table
    # no long silent phase: every model / set shows its run, metrics and report progress (tqdm on stderr)
    err = capsys.readouterr().err
    for bar in ("evaluate probpose", "metrics probpose", "metrics heatmap", "report cropcoco"):
        assert bar in err, bar
    assert main(["evaluate", "--data", str(img), "--ann", str(tmp_path / "missing.json"), "--out",
                 str(tmp_path / "x"), "--weights", str(wp)]) == 2
    assert "not found" in capsys.readouterr().err
