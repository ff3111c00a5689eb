"""precision="auto": bf16 only where it is fast (CUDA, CPUs with native bf16), never on AVX2-only CPUs."""

from __future__ import annotations

import pytest
import torch

from probpose import precision
from probpose.precision import CpuFeatures, _cpuinfo_flags, autocast_dtype, resolve_precision

AVX2_ONLY = CpuFeatures(capability="AVX2", flags=("avx2", "fma"), native_bf16=False, model_name="AMD EPYC")
SAPPHIRE = CpuFeatures(capability="AVX512", flags=("avx2", "avx512f", "avx512_bf16", "amx_bf16"), native_bf16=True,
                       model_name="Xeon")


def _with_cpu(monkeypatch, feats: CpuFeatures) -> None:
    monkeypatch.setattr(precision, "cpu_features", lambda: feats)


def test_auto_is_fp32_on_avx2_only_cpus(monkeypatch):
    _with_cpu(monkeypatch, AVX2_ONLY)
    assert resolve_precision("auto", "cpu") == "fp32"


def test_auto_is_bf16_on_cpus_with_native_bf16(monkeypatch):
    _with_cpu(monkeypatch, SAPPHIRE)
    assert resolve_precision("auto", "cpu") == "bf16"


def test_explicit_bf16_on_avx2_warns_but_is_honoured(monkeypatch):
    _with_cpu(monkeypatch, AVX2_ONLY)
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("bf16", "cpu") == "bf16"


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"


def test_invalid_combinations_are_refused():
    with pytest.raises(ValueError, match="fp16 autocast is for CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")


def test_cpuinfo_parsing_and_autocast_dtypes():
    flags, name = _cpuinfo_flags("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512_bf16\n")
    assert {"avx2", "fma", "avx512_bf16"} <= flags and name == "AMD EPYC"
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp16") is torch.float16
    assert autocast_dtype("fp32") is None and autocast_dtype("int8") is None


def test_this_machine_reports_its_kernel_family():
    feats = precision.cpu_features()
    assert feats.capability == torch.backends.cpu.get_cpu_capability()
    assert feats.native_bf16 == any(f in feats.flags for f in ("avx512_bf16", "amx_bf16"))
    assert ("native bf16: yes" in feats.describe()) == feats.native_bf16


def test_predictor_defaults_to_auto(monkeypatch, tiny_probpose):
    from probpose.inference import PosePredictor

    _with_cpu(monkeypatch, AVX2_ONLY)
    assert PosePredictor(tiny_probpose, device="cpu").precision == "fp32"
    _with_cpu(monkeypatch, SAPPHIRE)
    assert PosePredictor(tiny_probpose, device="cpu").precision == "bf16"
