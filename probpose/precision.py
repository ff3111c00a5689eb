"""Which arithmetic the network runs in: ``precision="auto"`` picks bf16 only where it is fast.

bf16 autocast is fast on CUDA and on CPUs with native bf16 instructions (AVX512-BF16 or AMX). Elsewhere (e.g. an
AVX2-only CPU) PyTorch emulates bf16 matrix products and a ViT-S forward becomes ~15-20x slower than fp32, so
"auto" stays in fp32 there (docs/inference.md, benchmarks/bench_inference.py).
"""

from __future__ import annotations

import functools
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "CpuFeatures", "cpu_features", "cpu_has_native_bf16", "resolve_precision",
           "autocast_dtype"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# /proc/cpuinfo flags that decide the CPU kernel family (reported by the benchmarks).
_REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuFeatures:
    """capability: torch's vector kernel family (``torch.backends.cpu.get_cpu_capability()``, e.g. "AVX2",
    "AVX512"); flags: the reported /proc/cpuinfo flags present; native_bf16: AVX512-BF16 or AMX-BF16 present."""

    capability: str
    flags: tuple[str, ...]
    native_bf16: bool
    model_name: str

    def describe(self) -> str:
        flags = " ".join(self.flags) or "none of " + " ".join(_REPORTED_FLAGS)
        return (f"{self.model_name}; torch CPU kernels {self.capability}; flags: {flags}; native bf16: "
                f"{'yes' if self.native_bf16 else 'no'}")


def _cpuinfo_flags(text: str) -> tuple[set[str], str]:
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key == "model name" and not name:
            name = value.strip()
    return flags, name


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """The CPU's vector capability and bf16 support (Linux: /proc/cpuinfo; elsewhere no native bf16 assumed)."""
    try:
        flags, name = _cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        flags, name = set(), ""
    capability = str(torch.backends.cpu.get_cpu_capability())
    native = any(f in flags for f in _NATIVE_BF16_FLAGS)
    return CpuFeatures(capability=capability, flags=tuple(f for f in _REPORTED_FLAGS if f in flags),
                       native_bf16=native, model_name=name or platform.processor() or platform.machine())


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16, where bf16 autocast beats fp32."""
    return cpu_features().native_bf16


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"auto" -> "bf16" on CUDA with bf16 support ("fp16" on older GPUs) and on CPUs with native bf16, else
    "fp32". Explicit choices are checked: "fp16" needs CUDA, "int8" the CPU; "bf16" on a CPU without native bf16
    warns (it is emulated there and much slower than fp32). Returns one of fp32 / bf16 / fp16 / int8."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if dev.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError("fp16 autocast is for CUDA; on the CPU use precision 'auto', 'fp32' or 'bf16'")
    if precision == "int8" and dev.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on the CPU only; use 'auto' (bf16 / fp16) on CUDA")
    if precision == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(f"bf16 on this CPU ({cpu_features().capability}, no AVX512-BF16 / AMX) is emulated and "
                      "~15x slower than fp32; precision='auto' picks fp32 here", stacklevel=3)
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: run as is)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
