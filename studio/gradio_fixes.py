"""A fix for a Gradio 6 race that concurrent visitors hit (installed by ``app.py`` at import).

``gradio.processing_utils.save_pil_to_cache`` names an output image by the hash of its bytes and rewrites that
file in place on every call. When two visitors get the same picture at the same time (the same example photo),
one request truncates the file while the other is streaming it, and the second browser gets a broken response
("Too little data for declared Content-Length" in the server log; ``RemoteProtocolError`` in gradio_client).
The replacement keeps Gradio's naming but never rewrites a finished file: the same name means the same bytes, so
an existing file is reused, and a new one is written under a temporary name and renamed into place, as Gradio
already does for copied files (``save_file_to_cache``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils

__all__ = ["atomic_save_pil_to_cache", "install"]


def atomic_save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Same path as Gradio's ``save_pil_to_cache``; written once, atomically."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if path.is_file():
        try:  # delete_cache ages files by ctime: a file handed out again must not expire on its first schedule
            os.utime(path)
        except OSError:
            pass
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def install() -> None:
    """Route Gradio's image outputs (gr.Image, gr.Gallery, gr.AnnotatedImage) through the atomic writer."""
    processing_utils.save_pil_to_cache = atomic_save_pil_to_cache
