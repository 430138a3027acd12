"""Python's cyclic garbage collector, tuned for a process that keeps what it makes.

A node keeps almost everything it allocates for good: records, contacts,
the ops in its log. CPython's collector rescans every surviving object each
time an older generation fills up, so those rescans are pure cost: under a
write load they took about 13% of the node's CPU and stopped it for over a
second at a time (bench/RESULTS.md). Here instead:

* a young collection runs every ``young`` net allocations, late enough
  that the objects of requests in flight have mostly died by then;
* whatever survives a young collection is frozen (``gc.freeze``): it is
  reachable now, will most likely stay so, and is never rescanned;
* frozen objects can still turn into unreachable cycles later (a closed
  connection's protocol and transport, say), so once the frozen heap has
  grown ``growth`` times since the last full collection, a full one runs.
  Garbage can thus take at most that factor of memory, and each full pause
  is paid for by as many new objects as the heap held before.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from twisted.application import service
from twisted.logger import Logger

log = Logger()

#: Net allocations between young collections.
YOUNG = 100_000
#: A full collection runs once the frozen heap has grown this many times...
GROWTH = 2.0
#: ...and is at least this large (a small heap is cheap to keep).
MIN_FULL = 1_000_000


class Collector(service.Service):
    """Installs the policy above while running; restores the default after."""

    def __init__(
        self,
        reactor: Any,
        young: int = YOUNG,
        growth: float = GROWTH,
        min_full: int = MIN_FULL,
    ) -> None:
        self._reactor = reactor
        self._young = young
        self._growth = growth
        self._min_full = min_full
        self._next_full = min_full
        self._full_pending = False
        self._saved_thresholds: tuple[int, int, int] | None = None
        #: Full collections run so far, and how many objects each freed.
        self.full_collections: list[int] = []

    def startService(self) -> None:
        super().startService()
        self._saved_thresholds = gc.get_threshold()
        # What was loaded at start is the book: freeze it after one look.
        gc.collect()
        gc.freeze()
        self._next_full = self._full_size()
        gc.set_threshold(self._young, 1_000, 1_000)
        gc.callbacks.append(self._collected)

    def stopService(self) -> None:
        super().stopService()
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        if self._saved_thresholds is not None:
            gc.set_threshold(*self._saved_thresholds)
        gc.unfreeze()

    def _full_size(self) -> int:
        return max(int(gc.get_freeze_count() * self._growth), self._min_full)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        # Runs on whichever thread allocated last; only freeze and hand over.
        if phase != "stop":
            return
        gc.freeze()
        if info["generation"] == 2:
            self._next_full = self._full_size()
        elif gc.get_freeze_count() > self._next_full and not self._full_pending:
            self._full_pending = True
            self._reactor.callFromThread(self.collect_all)

    def collect_all(self) -> int:
        """A full collection of everything, frozen or not; returns the garbage."""
        self._full_pending = False
        started = time.perf_counter()
        gc.unfreeze()
        garbage = gc.collect()  # _collected freezes what is left
        self.full_collections.append(garbage)
        log.info(
            "full garbage collection: {garbage} unreachable objects freed,"
            " {kept} kept, {ms:.0f} ms",
            garbage=garbage,
            kept=gc.get_freeze_count(),
            ms=(time.perf_counter() - started) * 1000,
        )
        return garbage
