"""Results folder of one evaluation: metrics JSON, markdown report, plots (HTML + PNG), results JSON, failures.

Layout (``write_report``)::

    DIR/
      metrics.json          everything ``evaluate_run`` computed (+ bad-input messages)
      report.md             human-readable summary
      results.json          COCO keypoint results (third keypoint value = presence)
      failures.json         every instance with OKS / Ex-OKS / per-keypoint diagnosis, worst first
      plots/{sweep,presence_reliability,map_coverage,failures}.{html,png}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from analysis.coco_io import CocoSet, write_results
from analysis.failures import failures_table, rank_failures
from analysis.plots import coverage_figure, failures_figure, reliability_figure, save_figure, sweep_figure
from analysis.presence import place_rows

__all__ = ["write_report", "markdown_report", "rules_line", "fmt", "json_safe", "figures_from_metrics", "load_metrics"]


def fmt(v, pct: bool = True) -> str:
    """AP-like value as a percentage with one decimal; '-' when undefined (None, NaN, -1)."""
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def json_safe(o):
    """NaN and infinities -> None, through dicts, lists and tuples (metrics files are strict JSON)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def rules_line(metrics: dict) -> str:
    """One line: the rules the primary numbers follow, and how far pycocotools is from them and which to trust."""
    m = metrics
    nms = m.get("nms") or {}
    head = (f"Rules: {m.get('rules', 'official ProbPose evaluator rules')} "
            f"(NMS kept {nms.get('after', '?')} of {nms.get('before', '?')} detections).")
    py = m.get("coco_pycocotools")
    if not py or py.get("AP", -1) < 0 or m["coco"].get("AP", -1) < 0:
        return head
    d = py["AP"] - m["coco"]["AP"]
    if abs(d) < 1e-9:
        return head + " pycocotools gives the same mAP on these detections."
    return (head + f" pycocotools DIFFERS: mAP {fmt(py['AP'])} vs {fmt(m['coco']['AP'])} "
            f"({100 * d:+.1f} points), because it scores keypoints with v=3 (outside the image) at their true "
            "coordinates, ignores GTs by num_keypoints / crowd and counts detections in images without usable GT "
            "as false positives; trust the official number when comparing with the paper, pycocotools' only "
            "against other pycocotools numbers.")


def _place_lines(m: dict) -> list[str]:
    """The "By where the keypoint lies" table (``metrics['presence_by_place']``); none for sets without v=3."""
    by = m.get("presence_by_place") or {}
    if not by:
        return []
    thr = m["fixed_threshold"]
    score = "heatmap peak" if m.get("kind") == "heatmap" else "presence"
    groups = [(g, lab) for g, lab in (("all", "all"), ("target", "the cut target"), ("other", "other people"))
              if g in by]
    lines = ["", "By where the keypoint lies (v=3 marks keypoints outside the image; the window reaches past the "
                 "image edge, so some of those are present):", "",
             "| keypoints | " + " | ".join(f"{lab}: n, mean {score}, called present @ {thr:.2f}"
                                          for _, lab in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for label, cells in place_rows(by, [g for g, _ in groups]):
        lines.append(f"| {label} | " + " | ".join(
            f"{c['n']}, {c['mean_presence']:.2f}, {fmt(c['called_present'])}%" if c else "-" for c in cells) + " |")
    lines += ["", "A presence that knew exactly which keypoints the image shows, and called those present, would "
                  "score a balanced error of " + ", ".join(
                      f"{fmt(by[g]['image_oracle']['balanced_error'])}% ({lab})" for g, lab in groups)
              + f"; this model's {score} separates keypoints inside the image from those outside it with AUC "
              + ", ".join(f"{fmt(by[g]['image_auc'], pct=False)} ({lab})" for g, lab in groups) + "."]
    return lines


def markdown_report(metrics: dict, title: str = "ProbPose Studio evaluation", messages: list[str] | None = None,
                    n_failures: int = 15, failures: list[dict] | None = None) -> str:
    """Markdown summary of ``evaluate_run`` output."""
    m = metrics
    c = m["counts"]
    lines = [f"# {title}", "",
             f"Model: `{m['model']}` ({m['kind']}). Images evaluated: {c['images_evaluated']} of "
             f"{c['images_in_file']}; people run: {c['people_run']} (GT people with keypoints: {c['gt_people']}); "
             f"{c['seconds']} s.", "",
             "**Small-sample figures**: on a few hundred people AP moves by several points between runs of "
             "different subsets; do not compare them with the paper's full-dataset numbers.", "",
             "## Keypoint AP", "",
             "| metric | AP | AP50 | AP75 | APm | APl | AR | AP (v=1) | AP (v=2) | AP (v=3) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("mAP (official rules)", m["coco"])]
    if "coco_pycocotools" in m:
        rows.append(("mAP (pycocotools, reference)", m["coco_pycocotools"]))
    if "coco_exact_area" in m:
        rows.append((f"mAP (official), exact-area people only ({m['coco_exact_area']['num_annotations']})",
                     m["coco_exact_area"]))
    rows += [(f"Ex-mAP @ oracle thr {m['exoks_oracle']['presence_threshold']:.2f}", m["exoks_oracle"]),
             (f"Ex-mAP @ fixed thr {m['exoks_fixed']['presence_threshold']:.2f}", m["exoks_fixed"])]
    for name, s in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(s.get(k)) for k in (
            "AP", "AP50", "AP75", "APm", "APl", "AR", "AP (v=1)", "AP (v=2)", "AP (v=3)")) + " |")
    lines += ["", rules_line(m), "",
              "Ex-mAP follows the official code: oracle threshold = best presence accuracy on the evaluated people "
              "(mmpose CocoMetric), GT out-ness recomputed geometrically (v=3 = outside the activation window).",
              "", "## Presence classification (is the keypoint inside the activation window?)", "",
              "| threshold | error | balanced error | missed (in called out) | hallucinated (out called in) |",
              "|---|---|---|---|---|"]
    p = m["presence"]
    for name in ("fixed", "best", "best_balanced", "best_balanced_any"):
        s = p.get(name)
        if s is None:  # metrics.json written before the grid-free measures existed
            continue
        # a grid-free threshold is any score, so it gets a third decimal
        label, digits = ("best balanced, any threshold", 3) if name == "best_balanced_any" else (name, 2)
        lines.append(f"| {label} {s['threshold']:.{digits}f} | {fmt(s['error'])}% | {fmt(s['balanced_error'])}% | "
                     f"{s['false_out']} | {s['false_in']} |")
    lines.append(f"\nLabels: {p['fixed']['n_present']} keypoints inside, {p['fixed']['n_absent']} outside the "
                 "activation window." + (f" Ranking AUC (a keypoint inside scores above one outside): "
                                         f"{p['auc']:.3f}." if "auc" in p else ""))
    roles = m.get("presence_by_role") or {}
    if roles:
        lines += ["", "By person role (the set records whom each image was cut around):", "",
                  "| people | n | keypoints inside / outside | error @ fixed | best balanced error | "
                  "any threshold | AUC |",
                  "|---|---|---|---|---|---|---|"]
        for name, label in (("target", "the cut target"), ("other", "other people in the crop")):
            if name in roles:
                f, b = roles[name]["fixed"], roles[name]["best_balanced"]
                a = roles[name].get("best_balanced_any")
                any_ = f"{fmt(a['balanced_error'])}% (thr {a['threshold']:.3f})" if a else "-"
                auc = f"{roles[name]['auc']:.3f}" if "auc" in roles[name] else "-"
                lines.append(f"| {label} | {roles[name]['people']} | {f['n_present']} / {f['n_absent']} | "
                             f"{fmt(f['error'])}% | {fmt(b['balanced_error'])}% (thr {b['threshold']:.2f}) | "
                             f"{any_} | {auc} |")
    lines += _place_lines(m)
    cal = m.get("calibration")
    if cal:
        lines += ["", "## Calibration (fit on a seeded half of the images, applied to the other half)", ""]
        pr = cal.get("presence", {})
        if "temperature" in pr:
            lines.append(f"- Presence: T = {pr['temperature']:.3f}; ECE {pr['ece_before']:.3f} -> "
                         f"{pr['ece_after']:.3f} (fit n={pr['n_fit']}, eval n={pr['n_eval']}).")
        elif "ece" in pr:
            lines.append(f"- Presence (heatmap peak, no logits to scale): ECE {pr['ece']:.3f}.")
        mp = cal.get("maps")
        if mp:
            lines.append(f"- Probability maps: sparsemax T {mp['temperature_model']} -> {mp['temperature_fitted']:.3f} "
                         f"(expected-OKS likelihood); credible-region coverage error {mp['coverage_ece_before']:.3f}"
                         f" -> {mp['coverage_ece_after']:.3f} (fit n={mp['n_fit']}, eval n={mp['n_eval']}).")
        elif "map_coverage_all" in cal:
            lines.append(f"- Probability maps: coverage error {cal['map_coverage_all']['ece']:.3f} at the model "
                         "temperature (no logits kept for fitting).")
    sw = m.get("sweep")
    if sw:
        i3 = int(np.argmin(np.abs(np.asarray(sw["thresholds"]) - 0.3)))
        lines += ["", "## Threshold sweep", "",
                  f"Best threshold: mAP {sw['best_ap']:.2f}, Ex-mAP {sw['best_ex_ap']:.2f}, presence error "
                  f"{sw['best_presence']:.2f} (the paper: 0.3 near-optimal on COCO, 0.15-0.4 across datasets). "
                  f"At 0.3: mAP {fmt(sw['ap'][i3])}, Ex-mAP {fmt(sw['ex_ap'][i3])}."]
    if failures:
        lines += ["", f"## Worst {min(n_failures, len(failures))} instances by Ex-OKS", "",
                  "| image | ann | OKS | Ex-OKS | problems |", "|---|---|---|---|---|"]
        for r in failures[:n_failures]:
            lines.append(f"| {r['image_id']} | {r['ann_id']} | {fmt(r['oks'], False)} | {fmt(r['exoks'], False)} | "
                         f"{r['problems'] or '-'} |")
    bad = {k: v for k, v in c.items() if k not in ("images_in_file", "images_evaluated", "people_run",
                                                    "gt_people", "seconds") and v}
    lines += ["", "## Input problems", "", ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"]
    if messages:
        lines += [""] + [f"- {msg}" for msg in messages[:30]]
    return "\n".join(lines) + "\n"


def figures_from_metrics(metrics: dict, failure_rows: list[dict] | None = None) -> dict:
    """Plotly figures of one ``evaluate_run`` metrics dict (e.g. ``load_metrics(dir)``): 'sweep',
    'presence_reliability', 'map_coverage', 'failures' (each present when its data is)."""
    figs = {}
    if "sweep" in metrics:
        figs["sweep"] = sweep_figure({metrics["kind"]: metrics["sweep"]})
    cal = metrics.get("calibration", {})
    rel = {}
    if "reliability_before" in cal.get("presence", {}):
        rel = {"before": cal["presence"]["reliability_before"], "after T": cal["presence"]["reliability_after"]}
    elif "presence_reliability_all" in cal:
        rel = {"all": cal["presence_reliability_all"]}
    if rel:
        figs["presence_reliability"] = reliability_figure(rel)
    if "maps" in cal:
        figs["map_coverage"] = coverage_figure({"model T": cal["maps"]["coverage_before"],
                                                "fitted T": cal["maps"]["coverage_after"]})
    elif "map_coverage_all" in cal:
        figs["map_coverage"] = coverage_figure({"model T": cal["map_coverage_all"]})
    if failure_rows:
        figs["failures"] = failures_figure(failure_rows)
    return figs


def load_metrics(result_dir: str | Path) -> tuple[dict, list[dict]]:
    """(metrics, failure rows) of a results folder written by ``write_report`` (cheap: no model, no evaluation)."""
    d = Path(result_dir)
    metrics = json.loads((d / "metrics.json").read_text())
    f = d / "failures.json"
    return metrics, (json.loads(f.read_text()) if f.is_file() else [])


def write_report(out_dir: str | Path, metrics: dict, run, coco: CocoSet, title: str = "ProbPose Studio evaluation",
                 png: bool = True, png_engine: str = "auto", progress: bool = False) -> dict[str, str]:
    """Write the results folder (see module docstring). Returns {name: path}.

    ``progress``: a progress bar over the writing steps (failure ranking, each plot, the files).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=3, desc=f"report {out.name}", disable=not progress, unit="step")
    bar.set_postfix_str("failure ranking")
    paths = {"results": str(write_results(run.results, out / "results.json"))}
    thr = metrics["exoks_oracle"]["presence_threshold"]
    rows = failures_table(rank_failures(run.results, coco, thr if thr >= 0 else metrics["fixed_threshold"]))
    (out / "failures.json").write_text(json.dumps(rows, indent=1))
    paths["failures"] = str(out / "failures.json")
    bar.update(1)
    plots = out / "plots"
    figs = figures_from_metrics(metrics, rows)
    bar.total += len(figs)
    engines = set()
    for name, fig in figs.items():
        bar.set_postfix_str(f"plot {name}")
        saved = save_figure(fig, plots / name, png=png, engine=png_engine)
        paths[f"plot_{name}"] = saved["html"]
        engines.add(saved["png_engine"])
        bar.update(1)
    bar.set_postfix_str("metrics.json, report.md")
    metrics = {**metrics, "messages": list(coco.issues[:100]) + list(run.messages[:100]),
               "png_engine": ",".join(sorted(e for e in engines if e))}
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=1, default=_json_default))
    paths["metrics"] = str(out / "metrics.json")
    (out / "report.md").write_text(markdown_report(metrics, title, metrics["messages"], failures=rows))
    paths["report"] = str(out / "report.md")
    bar.update(bar.total - bar.n)
    bar.close()
    return paths
