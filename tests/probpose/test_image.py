"""load_image: every input kind and PIL mode, built in memory; errors for bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from probpose.errors import ImageLoadError
from probpose.image import load_image, load_image_with_info


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient_rgb(w: int = 8, h: int = 6) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30, y * 40, (x + y) * 10], axis=-1).astype(np.uint8)


def test_sources_path_bytes_file_pil_numpy_agree(tmp_path):
    arr = _gradient_rgb()
    png = _encode(Image.fromarray(arr), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(png)
    for src in (str(path), path, png, bytearray(png), io.BytesIO(png), Image.fromarray(arr), arr):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
        np.testing.assert_array_equal(out, arr)


def test_numpy_input_is_copied_not_aliased():
    arr = _gradient_rgb()
    out = load_image(arr)
    out[:] = 0
    assert arr.max() > 0


def test_exif_orientation_6_rotates_jpeg():
    # A 40x20 (w x h) picture, left half red, right half blue, stored with orientation 6 ("rotate 90 CW to view").
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    out, info = load_image_with_info(data)
    assert out.shape == (40, 20, 3)  # now portrait
    assert info.exif_rotated
    # Rotating 90 degrees clockwise puts the stored left (red) half on top.
    top, bottom = out[5, 10], out[35, 10]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_16bit_png_scaled_by_bit_depth_not_clipped():
    vals = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 257 -> 1, 32896 -> 128, 65535 -> 255
    im = Image.fromarray(vals)  # mode I;16
    data = _encode(im, "PNG")
    out = load_image(data)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    assert np.all(out[..., 0] == out[..., 2])


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_pil_modes(mode):
    vals = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    byteorder = ">u2" if mode == "I;16B" else "<u2"
    im = Image.frombytes(mode, (2, 2), vals.astype(byteorder).tobytes())
    assert im.mode == mode
    np.testing.assert_array_equal(load_image(im)[..., 1], [[0, 255], [128, 1]])


def test_mode_i_with_16bit_values():
    im = Image.fromarray(np.array([[0, 65535, 32896]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(load_image(im)[0, :, 0], [0, 255, 128])


def test_mode_f_unit_range():
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(load_image(im)[0, :, 0], [0, 128, 255])


def test_mode_1_l_ycbcr_cmyk():
    bw = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    np.testing.assert_array_equal(load_image(bw)[0], [[0, 0, 0], [255, 255, 255]])
    grey = Image.fromarray(np.array([[7, 200]], dtype=np.uint8), mode="L")
    np.testing.assert_array_equal(load_image(grey)[0], [[7, 7, 7], [200, 200, 200]])
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    for mode in ("YCbCr", "CMYK"):
        out = load_image(red.convert(mode))
        assert out[0, 0, 0] > 240 and out[0, 0, 1] < 15 and out[0, 0, 2] < 15, (mode, out[0, 0])
    # CMYK through a JPEG file too.
    out = load_image(_encode(red.convert("CMYK"), "JPEG", quality=95))
    assert out[0, 0, 0] > 230 and out[0, 0, 2] < 30


def test_alpha_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white -> ~127
    rgba[1, 1] = (0, 255, 0, 255)
    expected = np.array([[[255, 0, 0], [255, 255, 255]], [[127, 127, 127], [0, 255, 0]]], np.uint8)
    for src in (rgba, Image.fromarray(rgba, "RGBA"), _encode(Image.fromarray(rgba, "RGBA"), "PNG")):
        out, info = load_image_with_info(src)
        assert info.alpha_composited
        np.testing.assert_array_equal(out, expected)
    la = Image.fromarray(rgba[..., [1, 3]], "LA")
    np.testing.assert_array_equal(load_image(la)[0, 1], [255, 255, 255])


def test_palette_with_transparency():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1  # index 1 (blue) is transparent
    out = load_image(_encode(p, "PNG"))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [255, 255, 255]])


@pytest.mark.parametrize("arr,expected", [
    (np.array([[0, 255]], np.uint8), [0, 255]),
    (np.array([[[0], [255]]], np.uint8), [0, 255]),
    (np.array([[0, 65535]], np.uint16), [0, 255]),
    (np.array([[0.0, 1.0]], np.float32), [0, 255]),
    (np.array([[0.0, 0.5]], np.float64), [0, 128]),
    (np.array([[False, True]]), [0, 255]),
])
def test_numpy_dtypes_and_shapes(arr, expected):
    out = load_image(arr)
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out[0, :, 0], expected)


@pytest.mark.parametrize("arr,match", [
    (np.zeros((3, 8, 8), np.uint8), "channels-first"),
    (np.zeros((8, 8, 2), np.uint8), r"\(H,W\)"),
    (np.full((4, 4), 2.0, np.float32), r"\[0, 1\]"),
    (np.full((4, 4), np.nan, np.float32), "NaN"),
    (np.zeros((0, 5, 3), np.uint8), "zero size"),
    (np.full((2, 2), 300, np.int32), "values in"),
])
def test_bad_numpy_inputs(arr, match):
    with pytest.raises(ImageLoadError, match=match):
        load_image(arr)


def test_bad_files(tmp_path):
    good = _encode(Image.fromarray(_gradient_rgb(64, 64)), "JPEG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(b"this is not an image at all")
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(good[: len(good) // 2])
    png = _encode(Image.fromarray(_gradient_rgb(64, 64)), "PNG")
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(png[: len(png) // 2])
    with pytest.raises(ImageLoadError, match="binary mode"):
        load_image(io.StringIO("abc"))
    with pytest.raises(ImageLoadError, match="cannot load an image from a int"):
        load_image(42)


def test_zero_size_pil_image():
    with pytest.raises(ImageLoadError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))


def test_pixel_limit_checked_before_decoding():
    # A 4000x4000 PNG header with a truncated body: the limit must trigger from the header alone.
    big = _encode(Image.new("L", (4000, 4000)), "PNG")
    with pytest.raises(ImageLoadError, match=r"16,000,000 pixels.*limit of 1,000,000"):
        load_image(big[:200], max_pixels=1_000_000)
    assert load_image(big, max_pixels=16_000_000).shape == (4000, 4000, 3)
    with pytest.raises(ImageLoadError, match="limit of 100"):
        load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=100)
