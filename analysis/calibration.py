"""Calibration of presence probabilities and probability maps (spec 8): reliability diagrams, ECE, temperature
scaling fitted on one split and applied to another, and the credible-region coverage check.

Choices (docs/analysis.md):
- Presence: p = sigmoid(z / T), T fitted by minimising binary cross-entropy on the fit split.
- Probability maps: p = sparsemax(z / T) (flip-averaged like inference), T fitted by minimising the official
  ``CalibrationLoss`` -log(sum_x p(x) G_gt(x) + 1e-10), the negative log *expected OKS* of the ground truth, where
  G_gt is the per-keypoint Gaussian target of the codec. Plain NLL cannot be used: sparsemax gives the GT pixel
  zero probability whenever it lies outside the support. Only keypoints inside the activation window enter.
- Coverage: for each present GT keypoint, the p-credible region (smallest set of pixels holding >= p of the mass,
  by decreasing probability) holds the GT pixel iff the mass *strictly above* the GT pixel's value is < p. A
  calibrated map holds the GT p of the time; because regions hold at least p mass, a perfect discrete map sits
  slightly above the diagonal. Coverage ECE = mean over p in {0.05, ..., 1} of |coverage(p) - p|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probpose.codec import keypoint_spreads

__all__ = [
    "Reliability",
    "Coverage",
    "sigmoid",
    "sparsemax",
    "reliability",
    "expected_calibration_error",
    "fit_presence_temperature",
    "MapSamples",
    "maps_at_temperature",
    "expected_oks_nll",
    "fit_map_temperature",
    "MAP_TEMPERATURE_BOUNDS",
    "at_bound",
    "mass_above",
    "coverage",
    "split_by_image",
]


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def sparsemax(z: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Sparsemax over the last axis (Martins & Astudillo 2016), numpy, exact.

    The threshold tau solves sum(max(z - tau, 0)) = 1. It is found by Michelot's fixed point
    tau <- (sum_{z > tau} z - 1) / |{z > tau}| started from the lower bound max(z) - 1: tau rises monotonically
    and the support shrinks to the exact one in a few passes, much cheaper than sorting 3072 values per map.

    Args:
        z: (..., n) float.
    Returns:
        (..., n) float64, non-negative, each row sums to 1.
    """
    z = np.asarray(z, dtype=np.float64)
    shape = z.shape
    z2 = z.reshape(-1, shape[-1])
    m = len(z2)
    tau = z2.max(axis=1) - 1.0
    # only values above the lower bound can be in the support: iterate on that short list
    rows, cols = np.nonzero(z2 > tau[:, None])
    vals = z2[rows, cols]
    for _ in range(max_iter):
        keep = vals > tau[rows]
        cnt = np.bincount(rows[keep], minlength=m)
        tot = np.bincount(rows[keep], weights=vals[keep], minlength=m)
        new = (tot - 1.0) / np.maximum(cnt, 1)
        if np.all(new <= tau + 1e-12):
            break
        tau = np.maximum(new, tau)
    return np.maximum(z2 - tau[:, None], 0.0).reshape(shape)


@dataclass
class Reliability:
    """Reliability-diagram data for binary probabilities (10 equal bins on [0, 1] by default).

    edges: (B+1,); count: (B,); confidence: mean predicted probability per bin (NaN if empty); frequency:
    fraction of positives per bin (NaN if empty); ece: sum_b count_b / N * |frequency_b - confidence_b|.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    ece: float

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "count": self.count.tolist(),
                "confidence": _nan_list(self.confidence), "frequency": _nan_list(self.frequency),
                "ece": self.ece}


def _nan_list(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64)]


def reliability(probs, labels, n_bins: int = 10) -> Reliability:
    """Bin probabilities into ``n_bins`` equal bins (the last bin includes 1.0); NaN labels are ignored."""
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64).ravel()
    keep = np.isfinite(p) & np.isfinite(y)
    p, y = p[keep], y[keep]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(b, weights=p, minlength=n_bins) / count
        freq = np.bincount(b, weights=y, minlength=n_bins) / count
    n = count.sum()
    ece = float(np.nansum(count / max(n, 1) * np.abs(freq - conf))) if n else float("nan")
    return Reliability(edges, count, conf, freq, ece)


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE with equal-width bins (see ``reliability``)."""
    return reliability(probs, labels, n_bins).ece


def _golden(f, lo: float, hi: float, tol: float = 1e-3, max_iter: int = 60) -> float:
    """Minimise a unimodal f on [lo, hi] by golden-section search."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if b - a < tol:
            break
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_presence_temperature(logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T minimising the BCE of sigmoid(logits / T) against labels (NaN labels ignored).

    Returns 1.0 when there is nothing to fit (no labels or a single class).
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    keep = np.isfinite(z) & np.isfinite(y)
    z, y = z[keep], y[keep]
    if z.size == 0 or y.min() == y.max():
        return 1.0

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        # log(1 + e^-s) stably, BCE = y * softplus(-s) + (1 - y) * softplus(s)
        return float(np.mean(y * np.logaddexp(0, -s) + (1 - y) * np.logaddexp(0, s)))

    return float(math.exp(_golden(nll, math.log(bounds[0]), math.log(bounds[1]))))


@dataclass
class MapSamples:
    """Probability-map logits of present GT keypoints, kept in memory for map calibration (M samples).

    logits: (M, H, W) float32 network logits (before the model temperature). logits_flipped: (M, H, W) logits of
    the flipped pass already mirrored back and channel-swapped onto this keypoint, or None without flip test.
    gt_xy: (M, 2) GT position in heatmap px. keypoint: (M,) keypoint index (for the spread s_k).
    """

    logits: np.ndarray
    logits_flipped: np.ndarray | None
    gt_xy: np.ndarray
    keypoint: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoint)

    def take(self, idx) -> MapSamples:
        idx = np.asarray(idx)
        return MapSamples(self.logits[idx], None if self.logits_flipped is None else self.logits_flipped[idx],
                          self.gt_xy[idx], self.keypoint[idx])

    @staticmethod
    def concat(parts: list[MapSamples]) -> MapSamples:
        parts = [p for p in parts if len(p)]
        if not parts:
            return MapSamples(np.zeros((0, 64, 48), np.float32), None, np.zeros((0, 2)), np.zeros(0, np.int64))
        flipped = None if any(p.logits_flipped is None for p in parts) else \
            np.concatenate([p.logits_flipped for p in parts])
        return MapSamples(np.concatenate([p.logits for p in parts]), flipped,
                          np.concatenate([p.gt_xy for p in parts]), np.concatenate([p.keypoint for p in parts]))


def maps_at_temperature(samples: MapSamples, temperature: float) -> np.ndarray:
    """Flip-averaged sparsemax(logits / T) maps, (M, H, W) float64 (the model uses T = 0.5)."""
    m, h, w = samples.logits.shape
    p = sparsemax(samples.logits.reshape(m, h * w).astype(np.float64) / temperature)
    if samples.logits_flipped is not None:
        p = 0.5 * (p + sparsemax(samples.logits_flipped.reshape(m, h * w).astype(np.float64) / temperature))
    return p.reshape(m, h, w)


def expected_oks_nll(maps: np.ndarray, gt_xy: np.ndarray, keypoint: np.ndarray, spreads=None) -> np.ndarray:
    """-log(sum_x p(x) G(x) + 1e-10) per sample, G(i, j) = exp(-((j - x)^2 + (i - y)^2) / (2 s_k)).

    Args:
        maps: (M, H, W). gt_xy: (M, 2) heatmap px. keypoint: (M,) index into ``spreads`` (default the codec's s_k).
    Returns:
        (M,) float64.
    """
    s = keypoint_spreads() if spreads is None else np.asarray(spreads, dtype=np.float64)
    m, h, w = maps.shape
    sk = s[np.asarray(keypoint, dtype=np.int64)][:, None]
    gx = np.exp(-(np.arange(w)[None, :] - gt_xy[:, :1]) ** 2 / (2 * sk))  # (M, W) separable Gaussian
    gy = np.exp(-(np.arange(h)[None, :] - gt_xy[:, 1:2]) ** 2 / (2 * sk))  # (M, H)
    e = np.einsum("mh,mhw,mw->m", gy, maps, gx)
    return -np.log(e + 1e-10)


# The map-temperature search range: wide enough that the demo models' optimum (about 4-5) is inside it, not on it.
MAP_TEMPERATURE_BOUNDS = (0.05, 50.0)


def at_bound(t: float, bounds: tuple[float, float], rel: float = 0.05) -> bool:
    """True when a fitted temperature sits on its search bound (within ``rel`` in log space, i.e. the golden
    search tolerance): it is then no optimum and must be reported as "at bound", not as the fit."""
    return bool(abs(math.log(t / bounds[0])) < rel or abs(math.log(bounds[1] / t)) < rel)


def fit_map_temperature(samples: MapSamples, bounds: tuple[float, float] = MAP_TEMPERATURE_BOUNDS,
                        max_samples: int = 3000, seed: int = 0, progress=None) -> float:
    """Sparsemax temperature minimising the mean expected-OKS NLL on ``samples`` (subsampled to
    ``max_samples`` for speed, seeded). Returns the model's 0.5 when there are no samples.

    ``progress``: called with (evaluation number, temperature tried) after each loss evaluation (a long step)."""
    if len(samples) == 0:
        return 0.5
    if len(samples) > max_samples:
        samples = samples.take(np.random.default_rng(seed).choice(len(samples), max_samples, replace=False))
    calls = [0]

    def loss(log_t: float) -> float:
        v = float(expected_oks_nll(maps_at_temperature(samples, math.exp(log_t)), samples.gt_xy,
                                   samples.keypoint).mean())
        calls[0] += 1
        if progress is not None:
            progress(calls[0], math.exp(log_t))
        return v

    return float(math.exp(_golden(loss, math.log(bounds[0]), math.log(bounds[1]), tol=0.02)))


def mass_above(maps: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """Mass of the pixels strictly more probable than the (rounded, clipped) GT pixel, per map.

    The p-credible region holds the GT iff this is < p. maps: (M, H, W); gt_xy: (M, 2) heatmap px. Returns (M,).
    """
    m, h, w = maps.shape
    flat = maps.reshape(m, h * w)
    flat = flat / np.maximum(flat.sum(axis=1, keepdims=True), 1e-300)
    x = np.clip(np.rint(gt_xy[:, 0]), 0, w - 1).astype(np.int64)
    y = np.clip(np.rint(gt_xy[:, 1]), 0, h - 1).astype(np.int64)
    at = flat[np.arange(m), y * w + x]
    above = np.where(flat > at[:, None], flat, 0.0).sum(axis=1)
    return np.where(at > 0, above, 1.0)  # a GT outside the support is in no region below p = 1


@dataclass
class Coverage:
    """Credible-region coverage: levels (P,) requested masses p; hit_rate (P,) share of GTs inside the p-region;
    ece: mean |hit_rate - p|; n: number of GT keypoints."""

    levels: np.ndarray
    hit_rate: np.ndarray
    ece: float
    n: int

    def to_dict(self) -> dict:
        return {"levels": self.levels.tolist(), "hit_rate": _nan_list(self.hit_rate), "ece": self.ece, "n": self.n}


def coverage(mass_above_gt: np.ndarray, n_levels: int = 20) -> Coverage:
    """Coverage curve at p = 1/n, 2/n, ..., 1 from ``mass_above`` values."""
    a = np.asarray(mass_above_gt, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    levels = np.arange(1, n_levels + 1) / n_levels
    if a.size == 0:
        return Coverage(levels, np.full(n_levels, np.nan), float("nan"), 0)
    hit = (a[None, :] < levels[:, None] - 1e-12).mean(axis=1)
    return Coverage(levels, hit, float(np.mean(np.abs(hit - levels))), int(a.size))


def split_by_image(image_ids, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of items by image: (fit mask, eval mask), each (N,) bool, no image in both."""
    ids = np.asarray(image_ids)
    uniq = np.unique(ids)
    rng = np.random.default_rng(seed)
    fit_ids = set(rng.permutation(uniq)[: int(round(len(uniq) * fraction))].tolist())
    fit = np.array([i in fit_ids for i in ids.tolist()], dtype=bool)
    return fit, ~fit
