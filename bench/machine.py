"""What a figure was measured on: the CPU's model and features, torch, the date."""
from __future__ import annotations

import platform
import time


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    """What decides the precision: native bf16 (AVX512-BF16, AMX) or not, and AVX512/AVX2."""
    from charrnn.model.device import cpu_has_native_bf16
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((l for l in handle if l.startswith("flags")), "").split()
    except OSError:
        flags = []
    vector = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "native bf16: bf16 autocast" if cpu_has_native_bf16() else "no native bf16: fp32"
    return f"{vector}, {bf16}"


def machine() -> dict:
    """The fields bench-full stores beside every cell (bench/state.py)."""
    import os
    import torch
    return {"cpu": cpu_model(), "features": cpu_features(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
