"""Fixtures of the analysis tests."""

from __future__ import annotations

import sys
import types

import pytest


@pytest.fixture()
def exococotools_cocoeval():
    """exococotools 1.0.0's COCOeval (the pip release of the official ``_cocoeval.py``) with its ExCocotools shim
    (spec 7.3), or skip: it is optional (pip install exococotools==1.0.0 --no-build-isolation)."""
    try:
        import exococotools._mask as mask
    except ImportError:
        pytest.skip("exococotools not installed (optional: pip install exococotools==1.0.0 --no-build-isolation)")
    shim = types.ModuleType("ExCocotools")
    shim._mask = mask
    sys.modules.setdefault("ExCocotools", shim)
    sys.modules.setdefault("ExCocotools._mask", mask)
    from exococotools.cocoeval import COCOeval

    return COCOeval
