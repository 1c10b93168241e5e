"""Picking the device and the matching mixed-precision context."""
from __future__ import annotations

import contextlib
import functools
import os

import torch

from charrnn.errors import CharRNNError, note


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharRNNError("--device cuda: no CUDA device is available here; use --device cpu "
                           "or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise CharRNNError("--device mps: no Apple MPS device is available here; use --device "
                           "cpu or auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise CharRNNError(f"unknown device {name!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast (recurrent kernels and matmuls in bf16; the loss is taken in fp32) on CUDA
    and on CPUs with native bf16 arithmetic; plain fp32 elsewhere, where bf16 is emulated."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


NATIVE_BF16_ENV = "CHARRNN_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, as torch reports it: bf16 matmuls run at about twice the fp32 rate.
    CHARRNN_NATIVE_BF16=0 or 1 overrides what the CPU reports: to try (or test) on one machine
    what charrnn picks on another. Raises CharRNNError for another value."""
    given = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if given in ("0", "1"):
        return given == "1"
    if given:
        raise CharRNNError(f"{NATIVE_BF16_ENV}={given!r}: use 1 (native bf16), 0 (none), or "
                           "leave it unset to ask the CPU")
    return _cpu_reports_bf16()


@functools.lru_cache(maxsize=None)
def _cpu_reports_bf16() -> bool:
    """What torch reports (its cpuinfo probe: any OS), else the flags of /proc/cpuinfo."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_if_bf16_is_emulated(device: torch.device, what: str) -> None:
    """A note when bf16 was asked for on a CPU without native bf16: there it is emulated,
    several times slower than fp32 (measured: 0.3 against 64 GFLOP/s on an AVX2-only EPYC)."""
    if device.type == "cpu" and not cpu_has_native_bf16():
        note(f"this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 {what} is emulated and "
             "slower than fp32 here; --precision fp32 is faster")
