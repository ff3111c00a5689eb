"""COCO keypoint metadata and the fixed geometry of ProbPose-s (256x192 input, 64x48 maps).

Sizes are written (width, height) like OpenCV; arrays are indexed [row, col] = [y, x].
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 17

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# COCO OKS sigmas (per keypoint falloff), as in pycocotools.
COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
     0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)

# Index of the mirrored keypoint under a horizontal flip.
FLIP_INDICES: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

UPPER_BODY_IDS: tuple[int, ...] = tuple(range(11))
LOWER_BODY_IDS: tuple[int, ...] = tuple(range(11, 17))

# The 19 standard COCO skeleton links, 0-based.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12),
    (5, 6), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
    (1, 3), (2, 4), (3, 5), (4, 6),
)

INPUT_SIZE: tuple[int, int] = (192, 256)  # network crop (w, h)
HEATMAP_SIZE: tuple[int, int] = (48, 64)  # probability map (w, h)
ASPECT_RATIO = INPUT_SIZE[0] / INPUT_SIZE[1]  # 0.75, w / h of the activation window
WINDOW_PADDING = 1.25  # person box enlarged 1.25x to form the activation window

# ImageNet normalisation in RGB order on the 0-255 scale (mmpose data preprocessor).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# The official presence threshold for instance rescoring; the paper finds ~0.3 near-optimal on COCO.
RESCORE_PRESENCE_THRESHOLD = 0.45
DEFAULT_PRESENCE_THRESHOLD = 0.3
