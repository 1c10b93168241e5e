"""The sampling engine: continuous batching, the one loop every kind of sampling runs.

``generate`` and ``stream`` (sampler.py) and the HTTP server (charrnn/serve/app.py) submit
``Request``s to an ``Engine`` and step it (``step_until_done``, or ``start`` its own thread). One step of the engine:

    1. leave     rows of cancelled requests leave the batch (their slots are free at once)
    2. admit     waiting requests take free slots. A prime's last PREFILL characters are
                 read by the batched step itself (the row takes them as its inputs instead of
                 its choices), at no cost to the batch; anything before them goes through the
                 fused network first, PRIME_CHUNK characters per step, so a long prime never
                 stalls the rows already running
    3. step      one FastStep (charrnn/sampling/fast_step.py) over the batch: logits for every row
    4. choose    sample_rows (charrnn/sampling/choice.py) picks each row's character with that row's
                 options and random generator
    5. deliver   characters go to their requests (``on_text``); finished rows leave

Each row keeps its own hidden state, options and generator (the seed rule), and its arithmetic
does not depend on the other rows: on CPU each row's fp32 step is independent of the batch
(charrnn/sampling/fast_step.py), so the batch holds just the running rows, packed at the front (a lone
request runs at batch-1 speed); elsewhere (CUDA, MPS: libraries pick kernels by batch size)
every step runs ``max_batch`` rows, idle ones included, which costs a GPU about as much.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Optional

import torch

from charrnn.sampling.choice import RowOptions, RowUniforms, sample_rows, sample_seed
from charrnn.config import SEED_MAX, SampleConfig
from charrnn.errors import CharRNNError
from charrnn.sampling.fast_step import FastStep
from charrnn.model.network import CharRNN, hidden_parts
from charrnn.data.tokenizer import CharTokenizer, listed_chars

PRIME_CHUNK = 256     # prime characters read by the fused network per engine step
PREFILL = 32          # the prime's last characters, read in the batch


class Busy(CharRNNError):
    """The engine's queue is full, or it is closed: try again later."""


class Request:
    """``config.num_samples`` continuations of ``prime`` (see sampler.generate) for an Engine.

    ``on_text(sample, char)`` and ``on_end(request)`` are called on the engine's thread as
    characters come and once when the request ends. Once ``done`` is set: ``texts`` (each
    sample's generated characters, a list of str), ``stopped`` (why each sample ended:
    "length", "stop", "cancelled", "shutdown" or "error") and ``error`` (what ended it, or
    None). ``cancel()`` may be called from any thread: the rows leave at the next step."""

    def __init__(self, prime: str, config: SampleConfig,
                 on_text: Optional[Callable[[int, str], None]] = None,
                 on_end: Optional[Callable[["Request"], None]] = None):
        self.prime, self.config, self.on_text, self.on_end = prime, config, on_text, on_end
        self.seed = config.seed if config.seed is not None else \
            int(torch.randint(SEED_MAX, ()).item())
        self.texts: list[list[str]] = [[] for _ in range(config.num_samples)]
        self.stopped: list[Optional[str]] = [None] * config.num_samples
        self.error: Optional[BaseException] = None
        self.cancelled, self.done, self.engine = False, threading.Event(), None
        self.ids = self.hidden = None     # the prime, while it is read
        self.read = self.running = 0

    def cancel(self) -> None:
        self.cancelled = True
        if self.engine is not None:
            self.engine.changed = True

    def check(self, tokenizer: CharTokenizer, max_batch: int) -> None:
        """Raise OptionError/CharRNNError for an option out of range, more samples than
        ``max_batch`` or a prime with characters the model never saw."""
        if self.config.validate().num_samples > max_batch:
            raise CharRNNError(f"num_samples must be <= {max_batch} here (the most samples "
                               f"run at once), got {self.config.num_samples}")
        unknown = tokenizer.unknown_chars(self.prime)
        if unknown:
            raise CharRNNError("the prime holds characters the model never saw: "
                               f"{listed_chars(unknown, most=10)}")

    def finish(self, reason: str) -> None:
        """The end: samples not ended yet get ``reason``; ``done`` is set, ``on_end`` called."""
        self.stopped = [why or reason for why in self.stopped]
        self.done.set()
        if self.on_end is not None:
            self.on_end(self)

    def result(self) -> list[str]:
        """The samples, ``prime`` + generated text; raises the error that ended the request."""
        if self.error is not None:
            raise self.error
        return [self.prime + "".join(text) for text in self.texts]


class Row:
    """One sample of a request, in a slot of the batch."""

    def __init__(self, request: Request, index: int, feed: list[int]):
        self.request, self.index, self.left = request, index, request.config.length
        self.text, self.stop = request.texts[index], request.config.stop
        self.feed = feed        # prime ids still to read, one per step


class Engine:
    """Steps up to ``max_batch`` rows (samples) together; at most ``max_queue`` requests wait
    for slots (None: no bound). ``precision`` is FastStep's ("fp32" or "bf16"); ``pad``
    (default: on any device but the CPU) steps all ``max_batch`` rows, idle ones included.
    ``submit``, ``cancel``, ``load`` and ``close`` may be called from any thread; ``step`` from
    one thread at a time (``step_until_done`` in the caller's, or ``start`` a thread of the
    engine's own)."""

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, max_batch: int = 1,
                 precision: str = "fp32", max_queue: Optional[int] = None,
                 pad: Optional[bool] = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.head.weight.device
        self.max_batch, self.max_queue = max_batch, max_queue
        self.fast = FastStep(model, max_batch, precision)
        self.pad = self.device.type != "cpu" if pad is None else pad
        self.width = max_batch if self.pad else 0      # rows stepped: slots [0, width)
        self.rows: list[Optional[Row]] = [None] * max_batch
        hidden = model.init_hidden(self.width, self.device)
        self.state = tuple(list(part.unbind(0)) for part in hidden_parts(hidden))  # FastStep's
        self.current = torch.ones(self.width, dtype=torch.int64, device=self.device)
        self.options = RowOptions(max_batch, tokenizer.vocab_size, self.device)
        self.uniforms = RowUniforms([], self.device, slots=max_batch)
        self.waiting: deque[Request] = deque()
        self.joining: deque[Request] = deque()     # admitted, reading their prime
        self.lock, self.running, self.changed = threading.Condition(), 0, False
        self.feeding = 0                           # rows still reading their prime
        self.closed: Optional[str] = None

    def submit(self, request: Request) -> Request:
        """Queue ``request``. Raises OptionError/CharRNNError for a bad option or a prime with
        characters the model never saw, Busy when the queue is full or the engine closed."""
        request.check(self.tokenizer, self.max_batch)
        with self.lock:
            if self.closed:
                raise Busy(f"not accepting requests: {self.closed}")
            queued = self._queued(request.config.num_samples)
            if self.max_queue is not None and queued > self.max_queue:
                raise Busy(f"busy: {queued - 1} requests are already waiting for a slot; "
                           "try again shortly")
            request.engine = self
            self.waiting.append(request)
            self.lock.notify()
        return request

    def _queued(self, rows: int) -> int:
        """How many waiting requests, with one more of ``rows`` samples, find no free slot at
        the next step (first come, first served)."""
        joining = tuple(self.joining)      # (a copy: the engine's thread pops from it)
        free = self.max_batch - self.running - sum(r.config.num_samples for r in joining)
        queued = 0
        for wanted in [r.config.num_samples for r in self.waiting] + [rows]:
            if queued or wanted > free:
                queued += 1
            else:
                free -= wanted
        return queued

    def load(self) -> tuple[int, int]:
        """(rows running, requests waiting or reading their prime)."""
        return self.running, len(self.waiting) + len(self.joining)

    def close(self, reason: str = "the server is shutting down") -> None:
        """Refuse new requests and, at the next step of the engine's thread, end every request
        (``stopped`` = "shutdown") and stop the thread."""
        with self.lock:
            self.closed = reason
            self.lock.notify()

    def start(self) -> threading.Thread:
        """Step in a thread of the engine's own (a daemon) until ``close``; returns it."""
        thread = threading.Thread(target=self._serve, name="charrnn-engine", daemon=True)
        thread.start()
        return thread

    def _serve(self) -> None:
        while True:
            with self.lock:
                while not (self.closed or self.waiting or self.joining or self.running):
                    self.lock.wait()
            if self.closed:
                return self._end_all("shutdown", None)
            try:
                self.step()
            except Exception as error:      # a bug: fail the requests, keep serving
                self._end_all("error", error)

    def step_until_done(self) -> None:
        """Step in the caller's thread until no request is left."""
        while self.step():
            pass

    @torch.inference_mode()
    def step(self) -> bool:
        """One step (see the module docstring). Returns whether any request is left."""
        if self.changed:
            self.changed = False
            self._leave({i: "cancelled" for i, row in enumerate(self.rows)
                         if row and row.request.cancelled})
        if self.waiting or self.joining:
            self._admit()
        if not self.running:
            return bool(self.joining or self.waiting)
        try:
            logits, self.state = self.fast.step_layers(self.current, self.state)
            uniforms = self.uniforms.next()
            ids = sample_rows(logits, self.options, uniforms[:self.width]
                              if self.width < self.max_batch else uniforms)
        except CharRNNError as error:     # a broken checkpoint: every row fails alike
            self._end_all("error", error)
            return bool(self.joining or self.waiting)
        forced = self._feed(ids) if self.feeding else ()
        self.current = ids
        self._deliver(ids.tolist(), forced)
        return True

    def _admit(self) -> None:
        """Waiting requests take free slots, first come first served; joining requests read
        their primes, PRIME_CHUNK characters in all per step, and join once they have."""
        with self.lock:
            gone = [r for r in self.waiting if r.cancelled]
            for request in gone:
                self.waiting.remove(request)
            free = self.max_batch - self.running - sum(r.config.num_samples
                                                       for r in self.joining)
            while self.waiting and self.waiting[0].config.num_samples <= free:
                free -= self.waiting[0].config.num_samples
                self.joining.append(self.waiting.popleft())
        for request in gone:
            request.finish("cancelled")
        budget = PRIME_CHUNK
        while self.joining and budget:
            request = self.joining[0]
            if request.cancelled or not request.config.length:
                self.joining.popleft().finish("cancelled" if request.cancelled else "length")
                continue
            budget -= self._read_prime(request, budget)
            if request.read == max(0, len(request.ids) - 1 - PREFILL):
                self._join(self.joining.popleft())

    def _read_prime(self, request: Request, most: int) -> int:
        """Read up to ``most`` more characters of the prime (all but its last PREFILL + 1,
        which the batch reads) into ``request.hidden``; returns how many. ``prime == ""``
        starts after "\\n" (or the vocabulary's first character, if it has no newline)."""
        if request.ids is None:
            chars = self.tokenizer.chars
            start = request.prime or ("\n" if "\n" in chars else chars[0])
            ids = self.tokenizer.encode(start).astype("int64")
            request.ids = torch.as_tensor(ids, device=self.device)
        end = min(request.read + most, max(0, len(request.ids) - 1 - PREFILL))
        if end > request.read:
            chunk = request.ids[request.read:end].unsqueeze(0)
            _, request.hidden = self.model(chunk, request.hidden)
        count, request.read = end - request.read, end
        return count

    def _join(self, request: Request) -> None:
        """The request's samples take the first free slots (on CPU: new rows at the end)."""
        count = request.config.num_samples
        slots = [slot for slot, row in enumerate(self.rows) if row is None][:count]
        if not self.pad:
            self.width += count
            self.state = tuple([torch.cat([t, t.new_zeros(count, t.shape[1])]) for t in part]
                               for part in self.state)
            self.current = torch.cat([self.current, self.current.new_zeros(count)])
        hidden = request.hidden if request.hidden is not None else \
            self.model.init_hidden(1, self.device)
        at = torch.tensor(slots, device=self.device)
        for part, start in zip(self.state, hidden_parts(hidden)):   # start [layers, 1, hidden]
            for layer, tensor in enumerate(part):
                tensor[at] = start[layer]
        self.current[at] = request.ids[request.read]
        feed = request.ids[request.read + 1:].tolist()     # the rest of the prime
        for index, slot in enumerate(slots):
            self.rows[slot] = Row(request, index, list(feed))
            self.options.set(slot, request.config)
            if not feed:               # (else its generator starts once the prime is read)
                self.uniforms.set(slot, sample_seed(request.seed, index))
        request.running, request.ids, request.hidden = count, None, None
        self.running += count
        self.feeding += count if feed else 0

    def _feed(self, ids: torch.Tensor) -> set[int]:
        """Rows still reading their prime take its next character as their next input instead
        of their choice (``ids`` is changed); returns their slots. A row that has read all of
        it starts its random generator: its first number goes to its first character."""
        forced = set()
        for slot, row in enumerate(self.rows):
            if row is not None and row.feed:
                ids[slot] = row.feed.pop(0)
                forced.add(slot)
                if not row.feed:
                    self.feeding -= 1
                    self.uniforms.set(slot, sample_seed(row.request.seed, row.index))
        return forced

    def _leave(self, reasons: dict[int, str]) -> None:
        """Free the slots of ``reasons`` ({slot: why its sample ended}), from the last one: on
        CPU the last rows move into the holes (the batch stays packed)."""
        for slot, reason in sorted(reasons.items(), reverse=True):
            row, self.rows[slot] = self.rows[slot], None
            self.feeding -= 1 if row.feed else 0
            self.options.set(slot, None)
            self.uniforms.clear(slot)
            if not self.pad:
                self.width -= 1
                if slot != self.width:
                    self._move(self.width, slot)
                self.state = tuple([t[:self.width] for t in part] for part in self.state)
                self.current = self.current[:self.width]
            request, self.running = row.request, self.running - 1
            request.stopped[row.index] = request.stopped[row.index] or reason
            request.running -= 1
            if request.running == 0:
                request.finish(reason)

    def _move(self, src: int, dst: int) -> None:
        for part in self.state:
            for tensor in part:
                tensor[dst] = tensor[src]
        self.current[dst] = self.current[src]
        self.options.move(src, dst)
        self.uniforms.move(src, dst)
        self.rows[dst], self.rows[src] = self.rows[src], None

    def _deliver(self, ids: list[int], forced) -> None:
        """Each row's new character to its request (not the ``forced`` slots' prime
        characters); rows that are done leave."""
        chars, done = self.tokenizer.id_to_char, {}
        for slot, token in enumerate(ids):
            row = self.rows[slot]
            if row is None or slot in forced:
                continue
            char, request = chars[token], row.request
            row.text.append(char)
            row.left -= 1
            if request.on_text is not None:
                try:
                    request.on_text(row.index, char)
                except Exception as error:     # the caller's callback: it ends its request
                    request.error = request.error or error
                    request.cancel()
            if self._stopped(row, char):
                done[slot] = "stop"
            elif row.left == 0:
                done[slot] = "length"
        if done:
            self._leave(done)

    def _stopped(self, row, char: str) -> bool:
        """Whether ``row``'s text, ``char`` just appended, now ends with its stop text."""
        return bool(row.stop) and "".join(row.text[-len(row.stop):]).endswith(row.stop)

    def _end_all(self, reason: str, error: Optional[BaseException]) -> None:
        """End every request, running, joining or waiting, with ``reason`` (and ``error``)."""
        with self.lock:
            pending = [*self.joining, *self.waiting]
            self.joining.clear()
            self.waiting.clear()
        for request in [*pending, *(row.request for row in self.rows if row)]:
            request.error = request.error or error
        self._leave({slot: reason for slot, row in enumerate(self.rows) if row})
        for request in pending:
            request.finish(reason)
