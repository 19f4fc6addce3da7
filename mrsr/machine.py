"""What the machine computes with: CPU model, its SIMD flags, torch's kernel level, threads.

Benchmarks print :func:`describe` beside their timings, since the same command runs several
times faster or slower from one CPU generation to the next (bf16 above all: native with
AVX512-BF16 or AMX, emulated and slower than fp32 without).
"""

from __future__ import annotations

import os
import platform
from functools import cache

import torch

__all__ = [
    "SIMD_FLAGS",
    "cpu_flags",
    "cpu_name",
    "describe",
    "native_bf16",
    "parse",
    "resolve_device",
    "resolve_precision",
]

# the flags that decide the speed of convolutions in fp32 and bf16
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "neon", "asimd")


def parse(cpuinfo: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a /proc/cpuinfo text."""
    lines = cpuinfo.split("\n\n")[0].splitlines()
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


@cache
def _cpuinfo() -> dict[str, str]:
    """:func:`parse` of this machine's /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return parse(f.read())
    except OSError:
        return {}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty when unknown."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_name() -> str:
    """The CPU's model name, else the architecture."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_device(device: str = "auto") -> str:
    """``"auto"``: CUDA if available (``cuda:LOCAL_RANK`` under torchrun), else Apple MPS, else
    CPU; any other value is returned as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"``: bf16 where ``device`` computes it natively (its cost on the default models'
    held-out volumes is at most 0.002 dB: docs/benchmarks.md, "precision"), else fp32; any other
    value is returned as given."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def describe() -> str:
    """One line: CPU model, the speed-relevant SIMD flags it has, torch's CPU kernel level,
    threads, torch version; plus the GPU when CUDA is available."""
    flags = " ".join(f for f in SIMD_FLAGS if f in cpu_flags()) or "unknown"
    line = (
        f"{cpu_name()} ({platform.machine()}; {flags}; torch kernels "
        f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    if torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    return line
