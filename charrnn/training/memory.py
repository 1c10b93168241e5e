"""Will a training run fit in memory? An estimate of what it needs, checked against what the
device has free before anything large is allocated.

On the CPU a request somewhat too large is not refused by the allocator: the pages are handed
out lazily and the kernel's out-of-memory killer ends the process later, mid-run, with no
message. So ``check`` compares an estimate with the memory available (Linux's MemAvailable,
the cgroup's limit, the address-space limit; CUDA's free memory) and refuses early, in one line
that says what to lower; ``explain`` turns an allocator's own failure into the same kind of
line.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import mincell

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Floats kept per character and per hidden unit for the backward pass (gates, states, the
# recurrent kernels' workspaces) at the peak of a step; measured on torch 2.13's CPU kernels
# (LSTM 2x512, batch 64 x 128: about 16 floats per unit, GRU 14, RNN 9) and taken lower here,
# so that a run is refused only when it clearly cannot fit.
SAVED_PER_UNIT = {"rnn": 6, "gru": 10, "lstm": 12}
SAVED_PER_LOGIT = 4      # logits, their fp32 copy, the softmax and its gradient
# (Validation keeps no activations for a backward pass, and reads at most --val-chars.)
OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def num_params(model: ModelConfig) -> int:
    """Parameters of a CharRNN of this shape, counted without building it."""
    if mincell.is_min(model):
        return mincell.count_params(model)
    gates, hidden, vocab = GATES[model.cell], model.hidden_size, max(1, model.vocab_size)
    recurrent = sum(gates * hidden * ((model.embed_size if layer == 0 else hidden) + hidden)
                    + 2 * gates * hidden for layer in range(model.layers))
    return vocab * model.embed_size + recurrent + hidden * vocab + vocab


@dataclass
class Need:
    """Bytes a training process needs at the peak of a step."""
    weights: int        # weights, gradients and AdamW's two moments (fp32)
    activations: int    # what one step keeps for its backward pass, the logits included

    @property
    def total(self) -> int:
        return self.weights + self.activations


def training_need(model: ModelConfig, batch_size: int, seq_len: int) -> Need:
    """The estimate of one training process's peak memory (see the constants above)."""
    per_char = model.embed_size + (mincell.saved_per_char(model) if mincell.is_min(model) else
                                   model.layers * model.hidden_size * SAVED_PER_UNIT[model.cell]) \
        + SAVED_PER_LOGIT * max(1, model.vocab_size)
    return Need(16 * num_params(model), 4 * per_char * batch_size * seq_len)


def check(model: ModelConfig, batch_size: int, seq_len: int, device: torch.device,
          processes: int = 1) -> None:
    """Raise CharRNNError when the run clearly cannot fit in the memory ``device`` has free;
    ``processes``: training processes sharing this machine's memory (torchrun on CPUs).
    Does nothing where the free memory cannot be known."""
    free = available(device)
    need = training_need(model, batch_size, seq_len)
    if free is None or need.total * processes <= free:
        return
    lower = "--hidden-size or --layers" if need.weights >= need.activations else \
        "--batch-size or --seq-len"
    where = "this GPU" if device.type == "cuda" else "this machine"
    each = f" for each of {processes} processes" if processes > 1 else ""
    raise CharRNNError(
        f"not enough memory for this run: it needs about {_size(need.total)}{each} (weights, "
        f"gradients and optimizer state {_size(need.weights)}, activations of {batch_size} x "
        f"{seq_len} characters {_size(need.activations)}) and {where} has "
        f"{_size(free)} free: lower {lower}")


def explain(error: BaseException) -> Optional[CharRNNError]:
    """The one-line CharRNNError for an allocator's failure (CUDA out of memory, the CPU
    allocator's "can't allocate memory", MemoryError), or None for any other error."""
    text = str(error)
    if isinstance(error, OUT_OF_MEMORY) or (
            isinstance(error, RuntimeError) and "can't allocate memory" in text):
        return CharRNNError("out of memory: the model, the batch or the text is too large for "
                            "this machine: lower --batch-size, --seq-len, --hidden-size or "
                            "--layers")
    return None


def available(device: torch.device) -> Optional[int]:
    """Bytes free for this process on ``device``: CUDA's free memory; on the CPU the least of
    MemAvailable, the cgroup's limit less its use, and the address-space limit less what is
    mapped. None where it cannot be known (other devices, systems without /proc)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    limits = [_meminfo("MemAvailable"), _cgroup_free()]
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
    mapped = _status("VmSize")
    if address_space != resource.RLIM_INFINITY and mapped is not None:
        limits.append(max(0, address_space - mapped))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _meminfo(key: str, path: str = "/proc/meminfo") -> Optional[int]:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _status(key: str) -> Optional[int]:
    return _meminfo(key, "/proc/self/status")


def _cgroup_free() -> Optional[int]:
    """The memory cgroup's limit less its use (cgroup v2, else v1); None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            files, root = ("memory.max", "memory.current"), Path("/sys/fs/cgroup")
        elif "memory" in controllers.split(","):
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
            root = Path("/sys/fs/cgroup/memory")
        else:
            continue
        for folder in (root / path.lstrip("/"), root):
            try:
                limit, used = ((folder / name).read_text().strip() for name in files)
            except OSError:
                continue
            if limit.isdigit() and int(limit) < 1 << 60:
                return max(0, int(limit) - int(used))
            break
    return None


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


def processes_per_machine() -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE), for the CPU check."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1
