"""The restricted unpickler (probpose.safe_pickle) on mmengine checkpoints written without mmengine, and on
malicious pickles.

A writer subprocess puts a temporary stand-in package `mmengine` on sys.path (same module and class names as the
real `mmengine.logging.history_buffer.HistoryBuffer`), so its files carry the globals a real mmengine checkpoint
carries. This test process never has that package: the loader must read the files without it and never run
anything from the malicious ones.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from probpose import safe_pickle
from probpose.errors import CheckpointError
from probpose.models.probpose import PROBPOSE_TEST_CONFIG
from probpose.weights import load_pretrained, load_state_dict_file

REPO = Path(__file__).resolve().parents[2]

# The pickle globals of a full mmengine training checkpoint (issue 9).
FULL_FORM_GLOBALS = {
    "__builtin__.getattr", "_codecs.encode", "collections.Counter", "collections.OrderedDict",
    "mmengine.logging.history_buffer.HistoryBuffer", "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar", "numpy.dtype", "numpy.ndarray", "torch.FloatStorage", "torch.LongStorage",
    "torch._utils._rebuild_tensor_v2",
}

STANDIN_HISTORY_BUFFER = '''
import numpy as np


class HistoryBuffer:
    """Stand-in with mmengine's module and class name; its state references its own methods."""

    def __init__(self, log_history=(), count_history=(), max_length=1000000):
        self.max_length = max_length
        self._log_history = np.array(log_history, dtype=np.float64)
        self._count_history = np.array(count_history, dtype=np.int64)
        # pickled (protocol 2) as getattr(HistoryBuffer, 'min'), ...
        self._statistics_methods = {"min": HistoryBuffer.min, "max": HistoryBuffer.max,
                                    "current": HistoryBuffer.current, "mean": HistoryBuffer.mean}

    def min(self):
        return self._log_history.min()

    def max(self):
        return self._log_history.max()

    def current(self):
        return self._log_history[-1]

    def mean(self):
        return self._log_history.sum() / self._count_history.sum()
'''

STANDIN_EVIL = '''
import os


def run(cmd):
    os.system(cmd)
'''

WRITER = '''
import collections
import os
import sys
from pathlib import Path

import numpy as np
import torch

out, marker = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(out / "standin"))
from mmengine.logging.history_buffer import HistoryBuffer  # noqa: E402
import mmengine.evil  # noqa: E402
from probpose.models.probpose import probpose_test  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.manual_seed(0)
model = probpose_test()
groups = [dict(params=[p], lr_mult=0.75 ** i) for i, p in enumerate(model.parameters())][:28]
rest = [p for p in list(model.parameters())[28:]]
groups.append(dict(params=rest, lr_mult=1.0))
opt = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.999), weight_decay=0.1)
for p in model.parameters():
    p.grad = torch.randn_like(p)
opt.step()
sd = model.state_dict()
osd = opt.state_dict()
reference = {f"state_dict.{k}": v.clone() for k, v in sd.items()}
for i, st in osd["state"].items():
    for name, t in st.items():
        reference[f"optimizer.{i}.{name}"] = t.clone()

rng = np.random.default_rng(0)
log_scalars = collections.OrderedDict()
for j in range(16):
    hb = HistoryBuffer(rng.normal(size=50 + j), np.ones(50 + j, np.int64))
    log_scalars[f"train/scalar{j}"] = hb
    reference[f"history.{j}"] = torch.from_numpy(hb._log_history.copy())
dataset_meta = {"dataset_name": "coco", "num_keypoints": 17,
                "sigmas": np.array([0.026, 0.025, 0.025, 0.035], np.float32),
                "keypoint_colors": np.zeros((17, 3), np.uint8), "flip_indices": [0, 2, 1],
                "joint_weights": np.ones(17, np.float32)}
meta = {"epoch": 210, "iter": 245700, "seed": 7, "experiment_name": "ProbPose-s", "time": "20250101_000000",
        "mmengine_version": "0.10.4", "dataset_meta": dataset_meta,
        "cfg": "default_scope = 'mmpose'\\nmodel = dict(type='TopdownPoseEstimator')\\n"}
message_hub = {"log_scalars": log_scalars,
               "runtime_info": collections.OrderedDict(epoch=210, iter=245700, max_iters=245700,
                                                       last_loss=np.float64(0.25), dataset_meta=dataset_meta),
               "resumed_keys": collections.OrderedDict((k, True) for k in log_scalars)}
schedulers = [{"begin": 0, "end": 500, "by_epoch": False, "start_factor": 0.001, "last_step": 500},
              {"begin": 0, "end": 210, "by_epoch": True, "milestones": collections.Counter({170: 1, 200: 1}),
               "gamma": 0.1, "last_step": 210}]
published = {"meta": meta, "state_dict": sd}
full = {"meta": meta, "state_dict": sd, "message_hub": message_hub, "optimizer": osd,
        "param_schedulers": schedulers}
save_file(reference, str(out / "reference.safetensors"))
for zip_ in (True, False):
    tag = "zip" if zip_ else "legacy"
    torch.save(published, out / f"published_{tag}.pth", _use_new_zipfile_serialization=zip_)
    torch.save(full, out / f"full_{tag}.pth", _use_new_zipfile_serialization=zip_)


class System:
    def __reduce__(self):
        return os.system, (f"touch {marker}",)


class ToFile:
    def __reduce__(self):  # np.ndarray.tofile pickles as getattr(numpy.ndarray, 'tofile')
        return np.ndarray.tofile, (np.zeros(1), str(marker))


class MMCall:
    def __reduce__(self):
        return mmengine.evil.run, (f"touch {marker}",)


for name, cls in (("system", System), ("tofile", ToFile), ("mmcall", MMCall)):
    for zip_ in (True, False):
        path = out / f"evil_{name}_{'zip' if zip_ else 'legacy'}.pth"
        torch.save({"meta": {"x": cls()}, "state_dict": sd}, path, _use_new_zipfile_serialization=zip_)
        # The file is live: plain unpickling (here, with the stand-in importable) runs it.
        torch.load(path, weights_only=False)
        assert marker.exists(), path
        marker.unlink()
print("ok")
'''


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(folder with the checkpoints, marker path the malicious files would create)."""
    out = tmp_path_factory.mktemp("mm")
    marker = out / "PWNED"
    pkg = out / "standin" / "mmengine"
    (pkg / "logging").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "logging" / "__init__.py").write_text("")
    (pkg / "logging" / "history_buffer.py").write_text(STANDIN_HISTORY_BUFFER)
    (pkg / "evil.py").write_text(STANDIN_EVIL)
    script = out / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script), str(out), str(marker)], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
    assert not marker.exists()
    return out, marker


@pytest.fixture(scope="module")
def reference(written) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(written[0] / "reference.safetensors"))


def test_no_mmengine_here():
    assert importlib.util.find_spec("mmengine") is None


def _globals(pkl: bytes) -> set[str]:
    """Dotted names of the GLOBAL opcodes (protocol 2) of one pickle."""
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}


def test_full_form_file_carries_the_issue_globals(written):
    out, _ = written
    with zipfile.ZipFile(out / "full_zip.pth") as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        assert _globals(z.read(name)) == FULL_FORM_GLOBALS
    # legacy: magic, protocol, sys_info, then the object pickle
    f = io.BytesIO((out / "full_legacy.pth").read_bytes())
    for _ in range(3):
        pickle.load(f)
    start = f.tell()
    last = [pos for _, _, pos in pickletools.genops(f)][-1]
    f.seek(start)
    assert _globals(f.read(last + 1 - start)) == FULL_FORM_GLOBALS


@pytest.mark.parametrize("form", ["published_zip", "published_legacy", "full_zip", "full_legacy"])
def test_mmengine_checkpoints_load_by_default_without_mmengine(written, reference, form):
    path = written[0] / f"{form}.pth"
    model = load_pretrained(path, config=PROBPOSE_TEST_CONFIG)  # default trust: the safe loader
    sd = model.state_dict()
    expected = {k[len("state_dict."):]: v for k, v in reference.items() if k.startswith("state_dict.")}
    assert set(sd) == set(expected)
    for k, v in expected.items():
        assert torch.equal(sd[k], v), k
    assert model.metadata["meta"]["epoch"] == 210 and model.metadata["meta"]["mmengine_version"] == "0.10.4"
    _, meta = load_state_dict_file(path)
    assert meta["format"] == "pickle"
    assert "mmengine" not in sys.modules


@pytest.mark.parametrize("tag", ["zip", "legacy"])
def test_full_form_contents_come_back_as_data(written, reference, tag):
    obj = torch.load(written[0] / f"full_{tag}.pth", map_location="cpu", weights_only=False,
                     pickle_module=safe_pickle)
    for i, st in obj["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, reference[f"optimizer.{i}.{name}"]), (i, name)
    assert len(obj["optimizer"]["param_groups"]) == 29
    assert obj["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert obj["param_schedulers"][1]["milestones"] == {170: 1, 200: 1}
    np.testing.assert_array_equal(obj["meta"]["dataset_meta"]["sigmas"],
                                  np.array([0.026, 0.025, 0.025, 0.035], np.float32))
    hubs = obj["message_hub"]["log_scalars"]
    assert len(hubs) == 16
    for j, hb in enumerate(hubs.values()):
        assert safe_pickle.is_placeholder(hb) and type(hb).__name__ == "HistoryBuffer"
        assert hb._probpose_global == "mmengine.logging.history_buffer.HistoryBuffer"
        np.testing.assert_array_equal(hb.state["_log_history"], reference[f"history.{j}"].numpy())
        methods = hb.state["_statistics_methods"]
        assert set(methods) == {"min", "max", "current", "mean"}
        assert methods["min"]._probpose_global == "mmengine.logging.history_buffer.HistoryBuffer.min"
    assert obj["message_hub"]["runtime_info"]["last_loss"] == 0.25


def test_trusted_mode_works_without_mmengine(written, reference):
    sd, _ = load_state_dict_file(written[0] / "full_zip.pth", trusted=True)
    for k, v in reference.items():
        if k.startswith("state_dict."):
            assert torch.equal(sd[k[len("state_dict."):]], v), k


@pytest.mark.parametrize("tag", ["zip", "legacy"])
@pytest.mark.parametrize(("name", "named"), [("system", "posix.system"), ("tofile", "numpy.ndarray.tofile"),
                                             ("mmcall", "mmengine.evil.run")])
def test_malicious_checkpoints_are_refused_and_nothing_runs(written, name, named, tag):
    out, marker = written
    path = out / f"evil_{name}_{tag}.pth"
    with pytest.raises(CheckpointError) as e:
        load_pretrained(path, config=PROBPOSE_TEST_CONFIG)
    assert named in str(e.value) and str(path) in str(e.value)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_state_dict_file(path)
    assert not marker.exists()


def _hand_pickle(*ops: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(ops) + pickle.STOP


def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + len(b).to_bytes(4, "little") + b


@pytest.mark.parametrize(("data", "named"), [
    # os.system('touch ...') as GLOBAL + REDUCE
    (lambda m: _hand_pickle(b"cos\nsystem\n", _str(f"touch {m}"), pickle.TUPLE1, pickle.REDUCE), "os.system"),
    # getattr(numpy.ndarray, 'tofile')(numpy.zeros(1), path): refused at the getattr
    (lambda m: _hand_pickle(b"c__builtin__\ngetattr\n", b"cnumpy\nndarray\n", _str("tofile"), pickle.TUPLE2,
                            pickle.REDUCE, _str(str(m)), pickle.TUPLE1, pickle.REDUCE), "numpy.ndarray.tofile"),
    # an OpenMMLab global called with a shell string: an inert placeholder refuses to be called
    (lambda m: _hand_pickle(b"cmmengine.utils\nsystem\n", _str(f"touch {m}"), pickle.TUPLE1, pickle.REDUCE),
     "mmengine.utils.system"),
    # getattr on a placeholder is inert, but calling the result with arguments is refused too
    (lambda m: _hand_pickle(b"c__builtin__\ngetattr\n", b"cmmcv\nRunner\n", _str("run"), pickle.TUPLE2,
                            pickle.REDUCE, _str(f"touch {m}"), pickle.TUPLE1, pickle.REDUCE), "mmcv.Runner.run"),
    # state restored into a class object (would patch collections.Counter for the whole process)
    (lambda m: _hand_pickle(b"ccollections\nCounter\n", pickle.NONE, pickle.EMPTY_DICT, _str("__init__"),
                            b"ccollections\nOrderedDict\n", pickle.SETITEM, pickle.TUPLE2, pickle.BUILD), "Counter"),
    # the copyreg extension registry
    (lambda m: _hand_pickle(pickle.EXT1 + b"\x01"), "extension registry"),
])
def test_hand_built_pickles_are_refused(tmp_path, data, named):
    marker = tmp_path / "PWNED"
    raw = data(marker)
    counter_init = collections.Counter.__init__
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        safe_pickle.loads(raw)
    path = tmp_path / "evil.pth"  # as a (legacy-format) checkpoint file: the first pickle is already evil
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_state_dict_file(path)
    assert not marker.exists()
    assert collections.Counter.__init__ is counter_init


def test_placeholders_store_data_only():
    cls = safe_pickle.Unpickler(io.BytesIO(b"")).find_class("mmpose.models.Thing", "Thing")
    assert safe_pickle.is_placeholder(cls) and cls.__name__ == "Thing"
    obj = cls.__new__(cls, 1, 2)  # NEWOBJ: rebuilding stores the arguments
    obj.__setstate__({"a": np.zeros(2)})
    obj["k"] = 3
    obj.append(4)
    assert obj.newargs == (1, 2) and obj.items == {"k": 3} and obj.list == [4] and "a" in obj.state
    assert cls() is not None  # a call without arguments builds an empty placeholder
    with pytest.raises(CheckpointError, match="mmpose.models.Thing.Thing"):
        cls("rm -rf /")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(obj)
    # numpy 1.x pickles name numpy.core.multiarray: the same functions are allowed under both names
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = pickle.dumps(a, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(safe_pickle.loads(raw), a)
    with pytest.raises(CheckpointError, match="encoding"):
        safe_pickle.loads(_hand_pickle(b"c_codecs\nencode\n", _str("x"), _str("rot13"), pickle.TUPLE2, pickle.REDUCE))


def test_mmpose_vitpose_s_checkpoint_loads_with_defaults(tmp_path):
    """The official mmpose 1.x ViTPose-S layout (backbone.layers.N..., head.deconv_layers, head.final_layer), in
    the legacy format publish_model writes, with an mmengine meta: `load_pretrained(path)` -> HeatmapPose."""
    spec = REPO.parent / "shared" / "spec" / "probpose_s_state_dict.json"
    if not spec.exists():
        pytest.skip(f"spec JSON not found at {spec}")
    import json

    keys = {k: v for k, v in json.loads(spec.read_text())["keys"].items()
            if k.startswith(("backbone.", "head.deconv_layers.", "head.final_layer."))}
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=g))
          for k, shape in keys.items()}
    path = tmp_path / "td-hm_ViTPose-small_8xb64-210e_coco-256x192.pth"
    meta = {"epoch": 210, "dataset_meta": {"sigmas": np.full(17, 0.05, np.float32)}, "seed": np.int64(0)}
    torch.save({"meta": meta, "state_dict": sd}, path, _use_new_zipfile_serialization=False)
    model = load_pretrained(path)
    assert model.kind == "heatmap" and model.metadata["meta"]["epoch"] == 210
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k
