"""Training on several processes (GPUs or machines) with torchrun and DistributedDataParallel.

``torchrun --nproc-per-node=N -m charrnn train ...`` starts N copies of the same command with
RANK, WORLD_SIZE and LOCAL_RANK in their environment. ``setup`` joins them into one process group
(NCCL on CUDA, one GPU per process; gloo on CPU) and returns a ``Context`` that the trainer passes
around; outside torchrun it returns a single-process context whose helpers do nothing. All state
beyond the context lives in torch.distributed itself.

Control messages (stop decisions, the validation loss, errors) go over a gloo group on the CPU, so
they never force a GPU synchronisation.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist

from charrnn.errors import CharRNNError, PeerError
from charrnn.model.network import Hidden, hidden_from_parts, hidden_parts

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class AgreedError(CharRNNError):
    """An error every process of a torchrun run raises at the same point, on the process it
    came from (the others raise PeerError): they can leave the process group together."""


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False                       # True when setup() created the process group
    control: Any = field(default=None, repr=False)  # CPU (gloo) group for control messages
    error: Optional[str] = None                     # kept by ``deferred``, not yet agreed on

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over all processes (on its own device; no host sync on CUDA)."""
        if not self.enabled:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)   # gloo has no AVG
        return tensor / self.world_size

    def agree(self, values: list[float]) -> list[float]:
        """The element-wise maximum of ``values`` over all processes (float64, on the CPU).

        A process with nothing to say passes zeros: rank 0's decisions (a stop reason, its clock)
        win, and any process can still raise a flag (a signal it received)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return tensor.tolist()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every process."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if not self.enabled:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def leaders_first(self, fn: Callable[[], T], leader: bool) -> Optional[T]:
        """Run ``fn`` on the leader processes while the others wait; a CharRNNError raised by any
        leader is raised, with the same one-line message, on every process. Non-leaders get None.
        """
        if not self.enabled:
            return fn() if leader else None
        result, error = None, None
        if leader:
            try:
                result = fn()
            except CharRNNError as err:
                error = str(err)
        self._raise_any(self.gather(error))
        return result

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train through: DistributedDataParallel (which averages gradients, so
        the mean loss over each process's rows gives the global batch's gradient) or ``model``
        itself. Evaluation and checkpoints use the plain module (no "module." prefix)."""
        if not self.enabled:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def agree_stop(self, reason: Optional[str], own_signal: Optional[str],
                   elapsed: float) -> tuple[Optional[str], float]:
        """One stop decision and one clock for all processes: rank 0's reason (limits,
        callback) or a signal any process received; rank 0's elapsed seconds. If a process
        kept an error (``deferred``), every process raises it instead (see ``_raise_any``)."""
        if not self.enabled:
            return reason, elapsed
        mine = reason if self.is_main else own_signal
        flag, elapsed, failed = self.agree([1.0 if mine else 0.0,
                                            elapsed if self.is_main else 0.0,
                                            1.0 if self.error else 0.0])
        if failed:
            self._raise_any(self.gather(self.error))
        if not flag:
            return None, elapsed
        return next(r for r in self.gather(mine) if r), elapsed

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Around what only some processes do (rank 0's writes): under torchrun a
        CharRNNError raised inside is kept, and the next ``agree_stop`` (or ``settle``) raises
        it on every process, instead of this one leaving while the others wait for it in
        their next collective. In one process it is raised at once."""
        try:
            yield
        except CharRNNError as err:
            if not self.enabled:
                raise
            self.error = self.error or str(err)

    def settle(self) -> None:
        """After the last ``deferred`` block: raise a kept error on every process."""
        if self.enabled and self.agree([1.0 if self.error else 0.0])[0]:
            self._raise_any(self.gather(self.error))

    def raise_everywhere(self, message: str) -> None:
        """An error that every process meets at the same point (a loss they all share):
        rank 0 reports it, the others raise it quietly (PeerError)."""
        raise (AgreedError if self.is_main else PeerError)(message)

    def _raise_any(self, errors: list[Optional[str]]) -> None:
        """Raise the first error of ``errors`` (one per process, in rank order): as
        CharRNNError on the process it came from, which prints it, as PeerError (quiet in the
        CLI) on the others."""
        origin = next((rank for rank, e in enumerate(errors) if e is not None), None)
        if origin is not None:
            raise (AgreedError if self.rank == origin else PeerError)(errors[origin])

    def gather_rows(self, hidden: Optional[Hidden]) -> Optional[Hidden]:
        """Every process's hidden rows concatenated in rank order (the single-process layout),
        on the CPU; the state itself outside torchrun."""
        if not self.enabled or hidden is None:
            return hidden
        parts = [p.detach().cpu() for p in hidden_parts(hidden)]
        gathered = self.gather(parts)
        return hidden_from_parts([torch.cat([g[i] for g in gathered], dim=1)
                                  for i in range(len(parts))])

    def own_rows(self, hidden: Optional[Hidden], batch_size: int) -> Optional[Hidden]:
        """This process's ``batch_size`` rows of a state saved in the single-process layout;
        None when its row count is not ``batch_size * world_size``."""
        if hidden is None:
            return None
        parts = hidden_parts(hidden)
        if parts[0].shape[1] != batch_size * self.world_size:
            return None
        rows = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        return hidden_from_parts([p[:, rows].contiguous() for p in parts])

    def peer_gone(self, error: BaseException) -> Optional[CharRNNError]:
        """The one-line error for a collective that failed because another process ended
        (gloo: its connection closed; torch's DistError), else None."""
        text = str(error).lower()
        if isinstance(error, CharRNNError) or not isinstance(error, RuntimeError):
            return None
        if isinstance(error, getattr(dist, "DistError", ())) or any(
                words in text for words in ("connection closed", "connection reset", "gloo")):
            return CharRNNError("another process of this torchrun run stopped (its own error, "
                                "if it could print one, is above): this one stops too")
        return None

    def close(self, together: bool = True) -> None:
        """Leave the process group, if setup() created it. ``together=False``: this process
        failed alone (the others may wait in a collective): leave at once; the others'
        collectives then fail, and torchrun ends them."""
        if self.owns_group and dist.is_initialized():
            # Leave together: a process that tears its connections down while a peer still
            # talks on them makes gloo abort that peer at exit ("terminate called ...").
            if together:
                try:
                    dist.barrier(group=self.control)
                except RuntimeError:
                    pass      # a peer already failed; its own error is the one to report
            dist.destroy_process_group()
        self.owns_group = False


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with WORLD_SIZE > 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False




def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group torchrun describes; the context and this process's device.

    Outside torchrun (WORLD_SIZE unset or 1): a single-process context and ``device`` unchanged.
    """
    if not launched():
        return Context(), device
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise CharRNNError("distributed launch: RANK, WORLD_SIZE and LOCAL_RANK must be set "
                           "(start with torchrun)") from None
    if not dist.is_available():
        raise CharRNNError("this torch build has no torch.distributed: train in one process")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise CharRNNError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                               "CUDA devices: lower --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise CharRNNError(f"distributed training runs on cuda or cpu, not {device.type}: "
                           "pass --device cuda or --device cpu")
    owns = not dist.is_initialized()
    try:
        if owns:
            if backend == "nccl":
                dist.init_process_group(backend, device_id=device)
            else:
                dist.init_process_group(backend)
        # Control messages travel on the CPU whatever the training backend.
        control = dist.new_group(backend="gloo") if backend == "nccl" else None
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"cannot join the distributed process group ({backend}): "
                           f"{first[:200]}") from None
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise CharRNNError("the initialised process group does not match RANK/WORLD_SIZE")
    return Context(rank, world_size, local_rank, owns, control), device
