"""Robust image loading: anything a user may hand us -> (H, W, 3) uint8 RGB.

Accepted sources: a path (str / os.PathLike), raw bytes, a binary file object, a PIL image or a numpy array.
Conventions (also in docs/inference.md):
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so the array is what a viewer shows.
- Transparency (RGBA, LA, PA, P / L / RGB with a transparency key) is composited on **white**.
- 16-bit data (PIL modes I;16*, 16-bit values in mode I, numpy uint16) is scaled by its bit depth
  (v * 255 / 65535), never clipped at 255.
- Float data (PIL mode F, numpy floats) must lie in [0, 1] (mode F in [0, 255] is also accepted).
- Numpy arrays are taken as RGB / RGBA (not OpenCV's BGR) and are never modified in place.
- The decompression-bomb guard compares width * height with ``max_pixels`` from the header, before any pixel
  is decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from probpose.errors import ImageLoadError

__all__ = ["load_image", "load_image_with_info", "ImageInfo", "DEFAULT_MAX_PIXELS"]

DEFAULT_MAX_PIXELS = 50_000_000

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


@dataclass
class ImageInfo:
    """What ``load_image`` did to get an (H, W, 3) uint8 RGB array.

    Attributes:
        source_mode: PIL mode or numpy dtype/shape of the input, e.g. ``"I;16"`` or ``"uint16 (H,W)"``.
        size: (w, h) of the returned array.
        exif_rotated: an EXIF orientation other than 1 was applied.
        alpha_composited: transparency was composited on white.
        notes: human-readable remarks (bit-depth scaling, first frame of many, ...).
    """

    source_mode: str
    size: tuple[int, int]
    exif_rotated: bool = False
    alpha_composited: bool = False
    notes: list[str] = field(default_factory=list)


def load_image(src, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load an image as RGB.

    Args:
        src: path, bytes, binary file object, ``PIL.Image.Image`` or numpy array (H,W), (H,W,1), (H,W,3),
            (H,W,4) of dtype uint8, uint16, bool or float in [0, 1].
        max_pixels: refuse images with more than this many pixels (checked before decoding).
    Returns:
        (H, W, 3) uint8 RGB, C-contiguous, never a view of the caller's array.
    Raises:
        ImageLoadError: missing / empty / corrupt / truncated file, zero-size image, too many pixels,
            unsupported mode, shape or value range. The message names the reason (and the limit).
    """
    return load_image_with_info(src, max_pixels=max_pixels)[0]


def load_image_with_info(src, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """``load_image`` plus an ``ImageInfo`` saying what was converted (for the app's status line)."""
    if isinstance(src, np.ndarray):
        return _from_numpy(src, max_pixels)
    if isinstance(src, Image.Image):
        return _from_pil(src, max_pixels, what="PIL image")
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.isfile(path):
            raise ImageLoadError(f"image file not found: {path!r}")
        if os.path.getsize(path) == 0:
            raise ImageLoadError(f"image file is empty (0 bytes): {path!r}")
        with open(path, "rb") as f:
            return _open_and_convert(f, max_pixels, what=repr(path))
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageLoadError("image bytes are empty")
        return _open_and_convert(io.BytesIO(data), max_pixels, what="image bytes")
    if hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError("file object must be opened in binary mode ('rb')")
        if not data:
            raise ImageLoadError("image file object is empty")
        return _open_and_convert(io.BytesIO(bytes(data)), max_pixels, what="image file object")
    raise ImageLoadError(f"cannot load an image from a {type(src).__name__}; pass a path, bytes, a binary file, "
                         "a PIL image or a numpy array")


def _check_size(w: int, h: int, max_pixels: int, what: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{what} has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise ImageLoadError(f"{what} is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
                             "(decompression-bomb guard); downscale it or raise max_pixels")


def _open_and_convert(fp, max_pixels: int, what: str) -> tuple[np.ndarray, ImageInfo]:
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; PIL's warning/error is only a second line of defence.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{what} is too large to decode safely ({e}); limit {max_pixels:,} pixels") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{what} is not a readable image (corrupt or unsupported format)") from e
    except OSError as e:
        raise ImageLoadError(f"{what} could not be opened: {e}") from e
    # Header only so far: refuse oversized images before decoding a single pixel.
    _check_size(im.width, im.height, max_pixels, what)
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"{what} is corrupt or truncated: {e}") from e
    return _from_pil(im, max_pixels, what=what)


def _from_pil(im: Image.Image, max_pixels: int, what: str) -> tuple[np.ndarray, ImageInfo]:
    _check_size(im.width, im.height, max_pixels, what)
    info = ImageInfo(source_mode=im.mode, size=(0, 0))
    if getattr(im, "n_frames", 1) > 1:
        info.notes.append(f"first of {im.n_frames} frames")
    try:
        rotated = ImageOps.exif_transpose(im)
    except Exception as e:  # broken EXIF must not lose the picture
        rotated = None
        info.notes.append(f"EXIF orientation ignored (unreadable: {e})")
    if rotated is not None and rotated is not im:
        orientation = im.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            info.exif_rotated = True
            info.notes.append(f"EXIF orientation {orientation} applied")
        im = rotated
    try:
        rgb = _pil_to_rgb(im, info)
    except (OSError, ValueError) as e:
        raise ImageLoadError(f"{what} could not be converted to RGB (mode {im.mode!r}): {e}") from e
    info.size = (rgb.shape[1], rgb.shape[0])
    return rgb, info


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """(H,W,4) uint8 RGBA -> (H,W,3) uint8 RGB over white, rounded."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _pil_to_rgb(im: Image.Image, info: ImageInfo) -> np.ndarray:
    mode = im.mode
    if mode in _16BIT_MODES:
        info.notes.append("16-bit grey scaled to 8 bits (v * 255 / 65535)")
        return _gray_to_rgb(_scale_uint16(np.asarray(im).astype(np.uint16)))
    if mode == "I":
        # 32-bit int; PIL uses it for 16-bit PNG / TIFF greys. Values within 16 bits -> 16-bit scaling.
        a = np.asarray(im, dtype=np.int64)
        if a.min() >= 0 and a.max() <= 65535:
            info.notes.append("mode I with 16-bit values scaled to 8 bits (v * 255 / 65535)")
            return _gray_to_rgb(_scale_uint16(a.astype(np.uint16)))
        info.notes.append("mode I outside 0..65535: min-max stretched to 0..255")
        return _gray_to_rgb(_stretch(a.astype(np.float64)))
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("float image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            return _gray_to_rgb(np.rint(a * 255.0).astype(np.uint8))
        if lo >= 0.0 and hi <= 255.0:
            info.notes.append("mode F in 0..255 rounded to uint8")
            return _gray_to_rgb(np.rint(a).astype(np.uint8))
        info.notes.append(f"mode F range [{lo:g}, {hi:g}] min-max stretched to 0..255")
        return _gray_to_rgb(_stretch(a))
    has_alpha = mode in _ALPHA_MODES or "transparency" in im.info
    if has_alpha:
        info.alpha_composited = True
        info.notes.append("transparency composited on white")
        return _composite_white(np.asarray(im.convert("RGBA")))
    if mode != "RGB":
        im = im.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV: PIL's own conversions
    return np.array(im, dtype=np.uint8, copy=True)


def _scale_uint16(a: np.ndarray) -> np.ndarray:
    return np.rint(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=-1))


def _from_numpy(a: np.ndarray, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    desc = f"{a.dtype} {a.shape}"
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        hint = " (channels-first? transpose to (H, W, C))" if a.ndim == 3 and a.shape[0] in (1, 3, 4) else ""
        raise ImageLoadError(f"numpy image must be (H,W), (H,W,1), (H,W,3) or (H,W,4), got {a.shape}{hint}")
    h, w = a.shape[:2]
    _check_size(w, h, max_pixels, "numpy image")
    info = ImageInfo(source_mode=desc, size=(w, h))
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        info.notes.append("uint16 scaled to 8 bits (v * 255 / 65535)")
        u8 = _scale_uint16(a)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageLoadError("float image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise ImageLoadError(f"float images must lie in [0, 1], got range [{lo:g}, {hi:g}]; "
                                 "divide by 255 or pass uint8")
        u8 = np.rint(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ImageLoadError(f"integer image of dtype {a.dtype} has values in [{lo}, {hi}]; "
                                 "pass uint8 (0..255) or uint16 (0..65535)")
        u8 = a.astype(np.uint8)
    else:
        raise ImageLoadError(f"unsupported numpy dtype {a.dtype}; pass uint8, uint16 or float in [0, 1]")
    if u8.ndim == 2:
        return _gray_to_rgb(u8), info
    if u8.shape[-1] == 4:
        info.alpha_composited = True
        info.notes.append("alpha channel composited on white")
        return _composite_white(u8), info
    return np.array(u8, dtype=np.uint8, copy=True, order="C"), info
