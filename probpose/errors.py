"""User-facing errors. Each message says what was wrong and what to do about it."""

from __future__ import annotations


class ProbPoseError(Exception):
    """Base class for errors caused by user input (images, boxes, checkpoints, annotations)."""


class ImageLoadError(ProbPoseError, ValueError):
    """The image could not be read or is unusable (corrupt, empty, too large, unsupported mode)."""


class CheckpointError(ProbPoseError, ValueError):
    """A checkpoint is missing, unreadable, untrusted, or does not match the model (names the keys)."""


class BoxError(ProbPoseError, ValueError):
    """A person box is malformed, empty or lies entirely outside the image."""


class AnnotationError(ProbPoseError, ValueError):
    """A COCO annotation file is empty, malformed or inconsistent with the images."""
