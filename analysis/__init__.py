"""ProbPose Studio analysis: COCO / CropCOCO I/O, Ex-OKS (native numpy), the evaluation runner over GT boxes,
presence, calibration, threshold sweeps, failure ranking, plots, reports and ``python -m analysis``.

Entry points (see docs/analysis.md):
- ``coco_io.load_coco`` -> ``CocoSet``; ``cropcoco.generate_cropcoco`` / ``find_official_cropcoco``;
- ``exoks.evaluate_keypoints(gt, results, EvalParams(extended=..., presence_threshold=...))``;
- ``cocoeval.pycocotools_keypoint_ap``;
- ``evaluate.run_model`` -> ``RunOutput``; ``evaluate.evaluate_run`` -> metrics dict (official rules: OKS-NMS,
  oracle threshold, standard AP and Ex-AP as the official ProbPose evaluator; pycocotools beside it);
- ``scoring`` (re-scoring, OKS-NMS), imported by ``evaluate`` and ``sweep`` (imports inside ``analysis`` go one way);
- ``presence``, ``calibration``, ``sweep.threshold_sweep``, ``failures.rank_failures``;
- ``plots.*_figure`` (plotly), ``report.write_report``, ``compare.write_comparison``.
"""
