"""Heatmap baseline vs ProbPose (and ProbPose-DH) on the same sets, tabulated like the paper's main table.

The paper's own numbers (full COCO val / CropCOCO, official ViT-S weights) are kept beside ours and clearly
labelled; ours come from whatever weights and (small) data are given.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.report import fmt

__all__ = ["PAPER_TABLE", "comparison_rows", "comparison_markdown", "write_comparison"]

# CVPR 2025 paper, main table (spec README): COCO mAP, CropCOCO mAP, CropCOCO Ex-mAP (percent)
PAPER_TABLE = {
    "ViTPose-s (paper)": {"coco_ap": 75.9, "cropcoco_ap": 72.7, "cropcoco_exap": 66.5},
    "ProbPose-s (paper)": {"coco_ap": 76.6, "cropcoco_ap": 81.7, "cropcoco_exap": 73.9},
}


def comparison_rows(metrics: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per model from ``{model name: {"coco": evaluate_run metrics, "cropcoco": ...}}``.

    Columns (fractions in [0, 1], None when the set was not run): coco_ap, cropcoco_ap (standard mAP under the
    official rules, as the paper's table), cropcoco_ap_pycocotools / coco_ap_pycocotools (pycocotools on the same
    detections, for reference), cropcoco_exap (oracle threshold, as the official evaluation), cropcoco_exap_fixed,
    presence_error_fixed / presence_error_best (CropCOCO), oracle_threshold.
    """
    rows = []
    for name, by_set in metrics.items():
        coco, crop = by_set.get("coco"), by_set.get("cropcoco")
        rows.append({
            "model": name,
            "kind": (coco or crop or {}).get("kind"),
            "coco_ap": coco["coco"]["AP"] if coco else None,
            "cropcoco_ap": crop["coco"]["AP"] if crop else None,
            "coco_ap_pycocotools": coco.get("coco_pycocotools", {}).get("AP") if coco else None,
            "cropcoco_ap_pycocotools": crop.get("coco_pycocotools", {}).get("AP") if crop else None,
            "cropcoco_exap": crop["exoks_oracle"]["AP"] if crop else None,
            "cropcoco_exap_fixed": crop["exoks_fixed"]["AP"] if crop else None,
            "presence_error_fixed": crop["presence"]["fixed"]["error"] if crop else None,
            "presence_error_best": crop["presence"]["best"]["error"] if crop else None,
            "oracle_threshold": crop["oracle_threshold"] if crop else None,
            "fixed_threshold": crop["fixed_threshold"] if crop else None,
        })
    return rows


def comparison_markdown(rows: list[dict], note: str = "") -> str:
    """Markdown table of ``comparison_rows`` with the paper's rows beneath, labelled."""
    fixed = next((r["fixed_threshold"] for r in rows if r.get("fixed_threshold") is not None), 0.3)
    lines = ["| model | COCO mAP | CropCOCO mAP | CropCOCO mAP (pycocotools) | CropCOCO Ex-mAP (oracle thr) | "
             f"CropCOCO Ex-mAP (thr {fixed:.2f}) | CropCOCO presence error (thr {fixed:.2f} / best) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pe = f"{fmt(r['presence_error_fixed'])}% / {fmt(r['presence_error_best'])}%" \
            if r["presence_error_fixed"] is not None else "-"
        thr = f" ({r['oracle_threshold']:.2f})" if r.get("oracle_threshold") is not None else ""
        lines.append(f"| {r['model']} (ours) | {fmt(r['coco_ap'])} | {fmt(r['cropcoco_ap'])} | "
                     f"{fmt(r.get('cropcoco_ap_pycocotools'))} | {fmt(r['cropcoco_exap'])}{thr} | "
                     f"{fmt(r['cropcoco_exap_fixed'])} | {pe} |")
    for name, p in PAPER_TABLE.items():
        lines.append(f"| {name} | {p['coco_ap']:.1f} | {p['cropcoco_ap']:.1f} | - | {p['cropcoco_exap']:.1f} | - "
                     "| - |")
    lines += ["", "mAP = standard COCO keypoint AP under the official ProbPose evaluator's rules (OKS-NMS 0.9; on "
              "CropCOCO keypoints outside the image, v=3, are not scored), as the paper's table; pycocotools scores "
              "v=3 keypoints at their true coordinates and is given for reference only. Ex-mAP at the official "
              "oracle presence threshold (in brackets) and at the fixed one."]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_comparison(out_dir: str | Path, metrics: dict[str, dict[str, dict]], note: str = "") -> dict[str, str]:
    """Write ``comparison.json`` (rows + paper rows) and ``comparison.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(metrics)
    (out / "comparison.json").write_text(json.dumps({"ours": rows, "paper_percent": PAPER_TABLE}, indent=1))
    (out / "comparison.md").write_text("# ProbPose vs heatmap baseline\n\n" + comparison_markdown(rows, note))
    return {"json": str(out / "comparison.json"), "markdown": str(out / "comparison.md")}
