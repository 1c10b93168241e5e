"""The server's sampling engine: charrnn's Engine (charrnn/sampling/engine.py), fair to every
client, with stop texts matched in time linear in the text.

* Clients: a request carries its client (the API key when the server has several, else the
  address; charrnn/serve/app.py). One client runs at most ``client_slots`` samples and has at
  most ``client_queue`` requests waiting, so that no client can take every slot and queue place.
* Admission: free slots go to the waiting client holding the fewest slots (within a client,
  first come first served), not to whoever came first.
* Primes: every joining request reads its prime at once, the engine's PRIME_CHUNK characters
  per step shared equally among them; one with nothing to read joins at once. A long prime no
  longer holds the requests behind it.
* Stops: up to a few stop texts per sample, matched with one Knuth-Morris-Pratt automaton each
  (``StopMatcher``): constant work per character, whatever the stops' length.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional, Sequence

from charrnn.config import SampleConfig, ServeConfig
from charrnn.errors import CharRNNError
from charrnn.sampling.engine import PREFILL, PRIME_CHUNK, Busy, Engine, Request


def client_slots(settings: ServeConfig) -> int:
    """The most samples one client runs at once: --client-slots, else half of --max-batch."""
    if settings.client_slots is not None:
        return min(settings.client_slots, settings.max_batch)
    return max(1, settings.max_batch // 2)


def client_queue(settings: ServeConfig) -> int:
    """The most requests one client may have waiting: --client-queue, else a quarter of
    --max-queue (at least 1 when the queue has room)."""
    if settings.client_queue is not None:
        return min(settings.client_queue, settings.max_queue)
    return min(settings.max_queue, max(1, -(-settings.max_queue // 4)))


class StopMatcher:
    """Finds the first end of any of ``stops`` (non-empty strings) in a text fed one character
    at a time: ``feed(char)`` returns the length of the longest stop that ends at this
    character (0: none). ``partial`` is the length of the longest end of the text so far that
    begins a stop (what a stream must hold back). O(len(stops)) per character, amortized."""

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.tables = [_failure(stop) for stop in self.stops]
        self.states = [0] * len(self.stops)

    def feed(self, char: str) -> int:
        found = 0
        for i, (stop, table) in enumerate(zip(self.stops, self.tables)):
            k = self.states[i]
            while k and stop[k] != char:
                k = table[k - 1]
            if stop[k] == char:
                k += 1
            if k == len(stop):
                found, k = max(found, k), table[k - 1]
            self.states[i] = k
        return found

    @property
    def partial(self) -> int:
        return max(self.states, default=0)


def _failure(stop: str) -> list[int]:
    """KMP's table: [i] = the length of the longest proper prefix of stop[:i+1] that is also
    its suffix."""
    table, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k - 1]
        if stop[i] == stop[k]:
            k += 1
        table[i] = k
    return table


class ServeRequest(Request):
    """An engine Request from a ``client`` (any hashable: a key's name or an address) that
    ends a sample at the first of ``stops`` (the config's own ``stop`` is not used)."""

    def __init__(self, prime: str, config: SampleConfig, client: str, stops: Sequence[str] = (),
                 on_text: Optional[Callable[[int, str], None]] = None,
                 on_end: Optional[Callable[[Request], None]] = None):
        config.stop = None
        super().__init__(prime, config, on_text, on_end)
        self.client, self.stops = client, [stop for stop in stops if stop]


class FairEngine(Engine):
    """The Engine with per-client shares, fair admission, shared prime reading and linear stop
    matching (see the module docstring); ``settings`` gives its limits. ``submit`` raises Busy
    (queue full: the server's or the client's) and CharRNNError (a bad request)."""

    def __init__(self, model, tokenizer, settings: ServeConfig, pad: Optional[bool] = None):
        super().__init__(model, tokenizer, settings.max_batch, settings.precision,
                         settings.max_queue, pad)
        self.client_slots, self.client_queue = client_slots(settings), client_queue(settings)

    def submit(self, request: ServeRequest) -> ServeRequest:
        request.check(self.tokenizer, self.max_batch)
        if request.config.num_samples > self.client_slots:
            raise CharRNNError(f"num_samples must be <= {self.client_slots} here (the most "
                               "samples one client runs at once, the server's "
                               f"--client-slots), got {request.config.num_samples}")
        with self.lock:
            if self.closed:
                raise Busy(f"not accepting requests: {self.closed}")
            queue = [*self.waiting, request]
            taken = self._plan(queue)
            if request not in taken:
                left = [r for r in queue if r not in taken]
                if len(left) > self.max_queue:
                    raise Busy(f"busy: {len(left) - 1} requests are already waiting for a "
                               "slot; try again shortly")
                mine = sum(1 for r in left if r.client == request.client)
                if mine > self.client_queue:
                    raise Busy(f"busy: {mine - 1} of your requests are already waiting for "
                               "a slot (the most one client may queue); try again shortly")
            request.engine = self
            self.waiting.append(request)
            self.lock.notify()
        return request

    def _held(self) -> Counter:
        """Samples each client runs or is about to run (joining), by client."""
        held: Counter = Counter()
        for row in tuple(self.rows):
            if row is not None:
                held[row.request.client] += 1
        for request in tuple(self.joining):
            held[request.client] += request.config.num_samples
        return held

    def _plan(self, waiting: list) -> list:
        """The requests of ``waiting`` the next admission takes, in order: each time, the
        first request of the client holding fewest slots, while it fits (within a client,
        first come first served; a request too big for the free slots keeps its turn, so
        that big requests are not starved by small ones)."""
        held = self._held()
        free, rest, taken = self.max_batch - sum(held.values()), list(waiting), []
        while rest:
            firsts: dict = {}
            for request in rest:
                if held[request.client] + request.config.num_samples <= self.client_slots:
                    firsts.setdefault(request.client, request)
            if not firsts:
                break
            chosen = min(firsts.values(), key=lambda r: held[r.client])
            if chosen.config.num_samples > free:
                break
            free -= chosen.config.num_samples
            held[chosen.client] += chosen.config.num_samples
            rest.remove(chosen)
            taken.append(chosen)
        return taken

    def _admit(self) -> None:
        """Waiting requests take free slots as ``_plan`` says; then the joining requests
        read their primes."""
        with self.lock:
            gone = [r for r in self.waiting if r.cancelled]
            for request in gone:
                self.waiting.remove(request)
            for request in self._plan(list(self.waiting)):
                self.waiting.remove(request)
                self.joining.append(request)
        for request in gone:
            request.finish("cancelled")
        self._read_primes()

    def _read_primes(self) -> None:
        """Joining requests read their primes, PRIME_CHUNK characters per step shared equally;
        a request with nothing (left) to read joins now."""
        budget, readers = PRIME_CHUNK, []
        for request in list(self.joining):
            if request.cancelled or not request.config.length:
                self.joining.remove(request)
                request.finish("cancelled" if request.cancelled else "length")
            elif self._left(request) == 0:
                self.joining.remove(request)
                self._join(request)
            else:
                readers.append(request)
        while readers and budget > 0:
            share = max(1, budget // len(readers))
            for request in list(readers):
                budget -= self._read_prime(request, min(share, budget))
                if self._left(request) == 0:
                    readers.remove(request)
                    self.joining.remove(request)
                    self._join(request)
                if budget <= 0:
                    break

    def _left(self, request: Request) -> int:
        """Prime characters ``request`` has yet to read before it joins the batch."""
        if request.ids is None:
            self._read_prime(request, 0)           # (encodes the prime, reads nothing)
        return max(0, len(request.ids) - 1 - PREFILL) - request.read

    def _stopped(self, row, char: str) -> bool:
        """As Engine._stopped, with the request's stops (several) matched by a StopMatcher."""
        stops = getattr(row.request, "stops", None)
        if not stops:
            return False
        if getattr(row, "matcher", None) is None:
            row.matcher = StopMatcher(stops)
        return row.matcher.feed(char)
