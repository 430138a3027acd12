"""Recent ops kept in memory, per origin, so peers can be sent what they lack.

For each origin the log holds a contiguous run of ops ``base+1 .. top``.
Anything at or below ``base`` lives only in the snapshot: a peer that needs
it gets the snapshot instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from twisted_agenda.crdt import Op, VersionVector


class OpLog:
    def __init__(self, base: Mapping[str, int] | None = None) -> None:
        self.base: VersionVector = dict(base or {})
        self._ops: dict[str, list[Op]] = {}

    def __len__(self) -> int:
        return sum(len(ops) for ops in self._ops.values())

    def top(self, origin: str) -> int:
        return self.base.get(origin, 0) + len(self._ops.get(origin, ()))

    def add(self, op: Op) -> None:
        if op.seq != self.top(op.origin) + 1:
            raise ValueError(f"op {op.origin}:{op.seq} leaves a gap in the log")
        self._ops.setdefault(op.origin, []).append(op)

    def trim(self, keep_after: Mapping[str, int]) -> None:
        """Forget ops at or below ``keep_after`` (they are in the snapshot)."""
        for origin, seq in keep_after.items():
            base = self.base.get(origin, 0)
            if seq <= base:
                continue
            ops = self._ops.get(origin, [])
            del ops[: seq - base]
            self.base[origin] = seq

    def lacks_history(self, have: Mapping[str, int]) -> bool:
        """True if someone at ``have`` needs ops this log no longer holds."""
        return any(have.get(origin, 0) < base for origin, base in self.base.items())

    def missing(self, have: Mapping[str, int], upto: Mapping[str, int]) -> Iterator[Op]:
        """Ops above ``have`` and up to ``upto``, in seq order per origin."""
        for origin, top in upto.items():
            base = self.base.get(origin, 0)
            start = max(have.get(origin, 0), base)
            if start < top:
                yield from self._ops[origin][start - base : top - base]
