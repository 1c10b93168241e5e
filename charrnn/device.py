"""Picking the device and the matching mixed-precision context."""
from __future__ import annotations

import contextlib

import torch

from .errors import CharRNNError


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


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the recurrent kernels and matmuls run in bf16, the loss in fp32);
    plain fp32 elsewhere, where bf16 is slower or unsupported for recurrent layers."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
