"""Hybrid logical clock: stamps that follow wall time yet never go backwards.

A stamp is one integer, ``milliseconds << 16 | counter``, so stamps compare,
serialise and sort as plain ints. ``observe`` folds in a remote stamp so that
anything we write afterwards is ordered after what we have seen, but refuses
a stamp more than ``max_offset`` seconds ahead of our wall clock: one node with
a wrong clock must not drag every other clock into its future.
"""

from __future__ import annotations

import time
from collections.abc import Callable

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


class ClockSkew(ValueError):
    """A remote stamp too far ahead of our wall clock."""


def physical_ms(stamp: int) -> int:
    return stamp >> COUNTER_BITS


def from_ms(ms: int) -> int:
    return ms << COUNTER_BITS


class HybridClock:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        max_offset: float = 60.0,
        last: int = 0,
    ) -> None:
        self._wall = wall
        self.max_offset = max_offset
        self.last = last

    def _wall_stamp(self) -> int:
        return from_ms(int(self._wall() * 1000))

    def now(self) -> int:
        """A stamp larger than every stamp issued or observed before."""
        self.last = max(self._wall_stamp(), self.last + 1)
        return self.last

    def check(self, remote: int) -> None:
        """Raise ClockSkew if ``remote`` is too far in our future."""
        ahead_ms = physical_ms(remote) - int(self._wall() * 1000)
        if ahead_ms > self.max_offset * 1000:
            raise ClockSkew(
                f"stamp is {ahead_ms / 1000:.1f}s ahead of this node's clock "
                f"(max-clock-offset {self.max_offset:g}s)"
            )

    def observe(self, remote: int) -> None:
        """Move past a remote stamp after ``check`` accepted it."""
        if remote > self.last:
            self.last = remote
