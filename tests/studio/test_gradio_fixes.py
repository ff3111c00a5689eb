"""The atomic image cache writer (studio/gradio_fixes.py) and the swept download folder (studio/state.py)."""

import os
import threading
import time

import numpy as np
from gradio import processing_utils
from PIL import Image

from studio import gradio_fixes, state


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 48, 3), dtype=np.uint8))


def test_same_picture_same_path_and_never_rewritten(tmp_path):
    img = _image()
    first = gradio_fixes.atomic_save_pil_to_cache(img, str(tmp_path), format="jpeg")
    inode = os.stat(first).st_ino
    again = gradio_fixes.atomic_save_pil_to_cache(img, str(tmp_path), format="jpeg")
    assert again == first and os.stat(again).st_ino == inode  # reused, not rewritten
    # Gradio's own naming: cache/<hash of the bytes>/image.jpeg
    data = processing_utils.encode_pil_to_bytes(img, "jpeg")
    assert first == str((tmp_path / processing_utils.hash_bytes(data) / "image.jpeg").resolve())
    assert open(first, "rb").read()[:2] == b"\xff\xd8"  # a whole JPEG
    assert not [p for p in os.listdir(os.path.dirname(first)) if p.startswith(".")]  # no staging file left


def test_concurrent_writers_never_expose_a_short_file(tmp_path):
    """Readers stat then read, as a file response does: with Gradio's in-place rewrite the size can shrink in
    between (the 'Too little data for declared Content-Length' of the server log); the atomic writer never."""
    img = _image(1)
    path = gradio_fixes.atomic_save_pil_to_cache(img, str(tmp_path), format="png")
    size = os.path.getsize(path)
    stop, short = threading.Event(), []

    def writer():
        while not stop.is_set():
            gradio_fixes.atomic_save_pil_to_cache(img, str(tmp_path), format="png")

    def reader():
        while not stop.is_set():
            declared = os.stat(path).st_size
            with open(path, "rb") as f:
                got = len(f.read())
            if got != declared or declared != size:
                short.append((declared, got))

    threads = [threading.Thread(target=writer) for _ in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert short == []


def test_install_routes_gradio_image_outputs(monkeypatch, tmp_path):
    monkeypatch.setattr(processing_utils, "save_pil_to_cache", processing_utils.save_pil_to_cache)
    gradio_fixes.install()
    path = processing_utils.save_img_array_to_cache(np.zeros((8, 8, 3), np.uint8), str(tmp_path), format="jpeg")
    assert processing_utils.save_pil_to_cache is gradio_fixes.atomic_save_pil_to_cache and os.path.isfile(path)


def test_download_files_share_one_swept_folder(monkeypatch):
    a = state.write_json({"x": 1})
    b = state.write_json({"x": 2})
    root = state.output_root()
    assert os.path.dirname(os.path.dirname(a)) == str(root) == os.path.dirname(os.path.dirname(b))
    assert os.path.basename(a) == "probpose_keypoints.json" and a != b
    old = time.time() - 10_000
    os.utime(os.path.dirname(a), (old, old))
    assert state.sweep_outputs(max_age_s=3600) == 1
    assert not os.path.exists(a) and os.path.exists(b)
