"""A restricted unpickler for PyTorch / mmengine checkpoints, used as ``torch.load(pickle_module=...)``.

Why not ``torch.load(weights_only=True)``: a full mmengine training checkpoint pickles mmengine objects
(``HistoryBuffer`` in its message hub) whose state holds ``getattr(HistoryBuffer, 'min')`` references, and
allow-listing ``getattr`` there would let any file reach any attribute of any allowed global (e.g.
``numpy.ndarray.tofile``, which writes files). Here:

- allowed globals: torch's tensor / parameter rebuild functions, storage types, dtypes, ``torch.Size`` and
  ``torch.device``; numpy ``ndarray``, ``dtype``, ``_reconstruct`` and ``scalar`` (``numpy._core`` and
  ``numpy.core`` names); ``collections.OrderedDict`` / ``Counter``; ``_codecs.encode`` (text encodings only; how
  protocol 2 stores bytes); the data types ``set``, ``frozenset``, ``bytearray``, ``complex``;
- globals of the OpenMMLab packages (``OPENMMLAB_PREFIXES``) become inert placeholder classes that are never
  imported: rebuilding one (``__new__`` + ``__setstate__``, item / list state) only stores data, and calling one
  with arguments is refused;
- ``getattr`` (``builtins`` / ``__builtin__``) acts only on such a placeholder and returns another placeholder;
- the BUILD opcode (state restore) is accepted only for numpy arrays / dtypes, (ordered) dicts, Counters and
  placeholders, never on a class or a function; extension-registry opcodes are refused;
- every other global raises ``CheckpointError`` naming it.

``trusted=True`` (``TRUSTED``) keeps the placeholders and the guarded ``getattr`` but imports every other global
as plain pickle does: it runs code from the file, for files from a source you trust. This module is itself a
valid ``pickle_module`` (it has ``Unpickler`` and ``load``); ``TRUSTED`` is the trusting twin.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import types
from typing import Any

import numpy as np
import torch

from probpose.errors import CheckpointError

__all__ = ["OPENMMLAB_PREFIXES", "Inert", "Unpickler", "TrustedUnpickler", "load", "loads", "TRUSTED",
           "is_placeholder"]

OPENMMLAB_PREFIXES = ("mmengine", "mmcv", "mmpose", "mmdet", "mmpretrain")
# Text encodings protocol 2 uses for bytes (`_codecs.encode(str, 'latin1')`); nothing that needs an import.
_TEXT_ENCODINGS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii"}


# ----------------------------------------------------------------------------------------------- placeholders


class Inert:
    """Instance of an OpenMMLab class rebuilt as data. ``_probpose_global``: the class's dotted name.

    ``newargs``: arguments given to ``__new__``; ``state``: what ``__setstate__`` got; ``items`` / ``list``: dict
    and list items a dict / list subclass carries. Nothing of the original class is imported or run.
    """

    _probpose_global = "?"
    _probpose_strict = True

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "newargs", args)
        object.__setattr__(obj, "state", None)
        object.__setattr__(obj, "items", {})
        object.__setattr__(obj, "list", [])
        return obj

    def __init__(self, *args, **kwargs) -> None:
        # Reached when the pickle *calls* the class (REDUCE / INST / OBJ), never when it rebuilds an object.
        if (args or kwargs) and self._probpose_strict:
            raise CheckpointError(f"the checkpoint calls {self._probpose_global} with arguments "
                                  f"{_short(args)}: the safe loader rebuilds OpenMMLab objects from their saved "
                                  "state only and never calls them")

    def __call__(self, *args, **kwargs):
        if (args or kwargs) and self._probpose_strict:
            raise CheckpointError(f"the checkpoint calls an instance of {self._probpose_global} with arguments "
                                  f"{_short(args)}; refused")
        return _placeholder(f"{self._probpose_global}()", self._probpose_strict)(*args, **kwargs)

    def __setstate__(self, state) -> None:
        object.__setattr__(self, "state", state)

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.list.append(value)

    def extend(self, values) -> None:
        self.list.extend(values)

    def __reduce__(self):
        raise TypeError(f"an inert placeholder of {self._probpose_global} cannot be pickled again")

    def __repr__(self) -> str:
        return f"<inert {self._probpose_global}>"


def _placeholder(qualname: str, strict: bool) -> type:
    """A fresh placeholder class for the global `qualname` ("pkg.module.Class")."""
    mod, _, name = qualname.rpartition(".")
    return type(name or qualname, (Inert,), {"__module__": f"probpose.safe_pickle.inert:{mod}",
                                             "_probpose_global": qualname, "_probpose_strict": strict,
                                             "__qualname__": name or qualname})


def is_placeholder(obj: Any) -> bool:
    """True for a placeholder class or one of its instances."""
    return isinstance(obj, Inert) or (isinstance(obj, type) and issubclass(obj, Inert))


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


# ----------------------------------------------------------------------------------------------- allow-list


def _numpy_multiarray():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray


def _safe_encode(obj, encoding: str = "utf-8", errors: str = "strict"):
    if not isinstance(obj, str) or str(encoding).lower() not in _TEXT_ENCODINGS:
        raise CheckpointError(f"the checkpoint calls _codecs.encode with encoding {encoding!r}; only text "
                              "encodings are allowed")
    return codecs.encode(obj, encoding, errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    ma = _numpy_multiarray()
    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,
        ("_codecs", "encode"): _safe_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2.x / 1.x spellings of one function
        out[(mod, "_reconstruct")] = ma._reconstruct
        out[(mod, "scalar")] = ma.scalar
    for name in ("set", "frozenset", "bytearray", "complex"):
        for mod in ("builtins", "__builtin__"):
            out[(mod, name)] = getattr(__import__("builtins"), name)
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        out[("torch._utils", name)] = getattr(torch._utils, name)
    for v in vars(torch).values():
        if isinstance(v, torch.dtype):
            out[("torch", str(v).split(".", 1)[1])] = v
    return out


_ALLOWED = _allowed_globals()
# BUILD (restoring an object's state) is allowed on instances of these only.
_BUILDABLE = (np.ndarray, np.dtype, collections.OrderedDict, collections.Counter, Inert)


def _storage_type(module: str, name: str):
    if module in ("torch", "torch.cuda") and name.endswith("Storage"):
        try:
            return torch.serialization.StorageType(name)
        except KeyError:
            return None
    return None


class Unpickler(pickle._Unpickler):
    """The restricted unpickler (pure-Python pickle, so single opcodes can be policed). See the module doc."""

    trusted = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._placeholders: dict[str, type] = {}

    def _inert(self, qualname: str) -> type:
        if qualname not in self._placeholders:
            self._placeholders[qualname] = _placeholder(qualname, strict=not self.trusted)
        return self._placeholders[qualname]

    def _getattr(self, obj, name, *default):
        if is_placeholder(obj):
            base = obj if isinstance(obj, type) else type(obj)
            return self._inert(f"{base._probpose_global}.{name}")
        if self.trusted:
            return getattr(obj, name, *default)
        what = obj.__module__ + "." + obj.__qualname__ if isinstance(obj, type) else type(obj).__name__
        raise CheckpointError(f"the checkpoint uses the global builtins.getattr to fetch {what}.{name}; the safe "
                              "loader allows getattr only on OpenMMLab placeholders")

    def find_class(self, module: str, name: str):
        module, name = str(module), str(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("builtins", "__builtin__") and name == "getattr":
            return self._getattr
        st = _storage_type(module, name)
        if st is not None:
            return st
        if module.split(".")[0] in OPENMMLAB_PREFIXES:
            return self._inert(f"{module}.{name}")
        if self.trusted:
            return super().find_class(module, name)
        raise CheckpointError(f"the checkpoint needs the global {module}.{name}, which the safe loader refuses "
                              "(loading it could run code)")

    # ------------------------------------------------------------------------------------ policed opcodes

    def _load_build(self) -> None:
        state = self.stack[-1]
        inst = self.stack[-2]
        if not self.trusted:
            if isinstance(inst, type) or not isinstance(inst, _BUILDABLE):
                raise CheckpointError(f"the checkpoint restores state into a {type(inst).__name__} "
                                      f"({_short(inst, 60)}); refused")
            slots = state[1] if isinstance(state, tuple) and len(state) == 2 else None
            if isinstance(slots, dict) and not isinstance(inst, Inert):
                raise CheckpointError(f"the checkpoint sets attributes {list(slots)[:5]} on a "
                                      f"{type(inst).__name__}; refused")
        pickle._Unpickler.dispatch[pickle.BUILD[0]](self)

    def _load_ext(self) -> None:
        raise CheckpointError("the checkpoint uses the copyreg extension registry (EXT opcodes); refused")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _load_ext
    del _op


class TrustedUnpickler(Unpickler):
    """Imports every non-OpenMMLab global (runs code from the file); OpenMMLab globals stay inert placeholders,
    so a checkpoint loads without mmengine installed."""

    trusted = True
    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = Unpickler._load_build


def load(file, **kwargs):
    """``pickle.load`` through the restricted ``Unpickler``."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs):
    return load(io.BytesIO(data), **kwargs)


def _trusted_load(file, **kwargs):
    return TrustedUnpickler(file, **kwargs).load()


# The pickle_module torch.load gets for trusted files: the same interface as this module.
TRUSTED = types.SimpleNamespace(__name__="probpose.safe_pickle.TRUSTED", Unpickler=TrustedUnpickler,
                                load=_trusted_load)
