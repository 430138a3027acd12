"""The replicated book: per-field last-writer-wins registers plus tombstones.

Every field of every contact is a register holding ``(value, stamp)`` where
``stamp = (hlc, origin)``. A removal is a tombstone stamp on the whole
contact. The larger stamp always wins, so applying the same set of ops in any
order, with duplicates, gives the same book on every node. A field written
after the tombstone shows again (the contact comes back with that field).

``Replica.apply`` is the only way state changes; it is deterministic and
idempotent. Ops from one origin are applied in ``seq`` order with no gaps; the
version vector records, per origin, the highest seq applied.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Mapping

from attrs import define, field, frozen

from twisted_agenda.model import FIELDS, Contact

PUT = "put"
REMOVE = "remove"

Stamp = tuple[int, str]
VersionVector = dict[str, int]


class BadOp(ValueError):
    """An op or snapshot line that is not shaped like one."""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(obj: object) -> bytes:
    return _ENCODER.encode(obj).encode()


@frozen
class Op:
    """One change, exactly as it is journaled and shipped to peers.

    ``line`` is the op's JSON encoding, computed once: the journal writes it
    and peers receive it without re-encoding.
    """

    origin: str
    seq: int
    hlc: int
    key: str
    kind: str
    fields: Mapping[str, str] = field(factory=dict)
    line: bytes = field(default=b"", eq=False, repr=False)

    @classmethod
    def make(cls, origin, seq, hlc, key, kind, fields=None) -> Op:
        fields = dict(fields or {})
        line = _encode(
            {"o": origin, "s": seq, "h": hlc, "k": key, "t": kind, "f": fields}
        )
        return cls(origin, seq, hlc, key, kind, fields, line)

    @classmethod
    def decode(cls, line: bytes) -> Op:
        try:
            d = json.loads(line)
            origin, seq, hlc, key, kind = d["o"], d["s"], d["h"], d["k"], d["t"]
            fields = d.get("f", {})
        except (ValueError, TypeError, KeyError) as e:
            raise BadOp(f"not an op: {e}") from None
        if not (
            isinstance(origin, str)
            and origin
            and type(seq) is int
            and seq > 0
            and type(hlc) is int
            and hlc >= 0
            and isinstance(key, str)
            and kind in (PUT, REMOVE)
            and isinstance(fields, dict)
            and all(f in FIELDS and isinstance(v, str) for f, v in fields.items())
        ):
            raise BadOp("op has missing or mistyped members")
        return cls(origin, seq, hlc, key, kind, fields, bytes(line))

    @property
    def stamp(self) -> Stamp:
        return (self.hlc, self.origin)


class Applied(enum.Enum):
    DUPLICATE = "duplicate"
    GAP = "gap"
    APPLIED = "applied"


@frozen
class Change:
    """What a user would notice: a contact appeared, changed or went away."""

    key: str
    before: Contact | None
    after: Contact | None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "updated"


@define
class Record:
    """All registers of one key, visible or not."""

    registers: dict[str, tuple[str, int, str]] = field(factory=dict)
    #: (hlc, origin, seq) of the latest removal, or None.
    tomb: tuple[int, str, int] | None = None
    # What contact() returns, until the next put or remove; False = unknown.
    _shown: bool | Contact | None = field(default=False, eq=False, repr=False)
    #: The book's key for this record: its name until a name register comes.
    key: str = field(default="", eq=False, kw_only=True)

    def _tomb_stamp(self) -> Stamp | None:
        return None if self.tomb is None else (self.tomb[0], self.tomb[1])

    def contact(self) -> Contact | None:
        if self._shown is False:
            self._shown = self._compute_contact()
        return self._shown  # type: ignore[return-value]

    def _compute_contact(self) -> Contact | None:
        tomb = self._tomb_stamp()
        live = {
            f: value
            for f, (value, hlc, origin) in self.registers.items()
            if tomb is None or (hlc, origin) > tomb
        }
        if not live:
            return None
        # The display name is identity, not data: a contact brought back by a
        # later edit keeps its last known spelling. An edit can also arrive
        # before the add it follows (relayed by another node): until the add
        # comes, the key (the folded name) stands in, so it can be found.
        name = self.registers["name"][0] if "name" in self.registers else self.key
        return Contact(
            name=name,
            phone=live.get("phone", ""),
            email=live.get("email", ""),
            note=live.get("note", ""),
        )

    def put(self, f: str, value: str, hlc: int, origin: str) -> None:
        current = self.registers.get(f)
        if current is None or (hlc, origin) > (current[1], current[2]):
            self.registers[f] = (value, hlc, origin)
            self._shown = False

    def remove(self, hlc: int, origin: str, seq: int) -> None:
        if self.tomb is None or (hlc, origin) > (self.tomb[0], self.tomb[1]):
            self.tomb = (hlc, origin, seq)
            self._shown = False

    def merge(self, other: Record) -> None:
        for f, (value, hlc, origin) in other.registers.items():
            self.put(f, value, hlc, origin)
        if other.tomb is not None:
            self.remove(*other.tomb)

    def to_json(self, key: str) -> dict:
        d: dict = {"k": key, "r": {f: list(r) for f, r in self.registers.items()}}
        if self.tomb is not None:
            d["t"] = list(self.tomb)
        return d

    @classmethod
    def from_json(cls, d: dict) -> tuple[str, Record]:
        try:
            key = d["k"]
            registers = {f: (str(v), int(h), str(o)) for f, (v, h, o) in d["r"].items()}
            tomb = d.get("t")
            if tomb is not None:
                h, o, s = tomb
                tomb = (int(h), str(o), int(s))
        except (KeyError, TypeError, ValueError) as e:
            raise BadOp(f"not a snapshot record: {e}") from None
        if not isinstance(key, str) or any(f not in FIELDS for f in registers):
            raise BadOp("snapshot record has a bad key or field")
        return key, cls(registers, tomb)


class Replica:
    """The book's state on one node: records and the version vector."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.vv: VersionVector = {}
        self._visible = 0

    def __len__(self) -> int:
        """Number of visible contacts."""
        return self._visible

    def get(self, key: str) -> Contact | None:
        record = self.records.get(key)
        return None if record is None else record.contact()

    def contacts(self) -> Iterator[Contact]:
        for record in self.records.values():
            contact = record.contact()
            if contact is not None:
                yield contact

    def apply(self, op: Op) -> tuple[Applied, Change | None]:
        have = self.vv.get(op.origin, 0)
        if op.seq <= have:
            return Applied.DUPLICATE, None
        if op.seq != have + 1:
            return Applied.GAP, None
        self.vv[op.origin] = op.seq
        return Applied.APPLIED, self._change(op.key, lambda r: _apply_to(r, op))

    def merge_record(self, key: str, other: Record) -> Change | None:
        """Fold in a record from a snapshot (a join: order does not matter)."""
        return self._change(key, lambda r: r.merge(other))

    def _change(self, key: str, mutate) -> Change | None:
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = Record(key=key)
        before = record.contact()
        mutate(record)
        after = record.contact()
        self._visible += (after is not None) - (before is not None)
        return None if before == after else Change(key, before, after)

    def drop(self, keys: Iterable[str]) -> None:
        """Forget records that hold only a stable tombstone."""
        for key in keys:
            record = self.records.pop(key)
            assert record.contact() is None

    def snapshot_records(self) -> list[tuple[str, Record]]:
        """A copy of every record, cheap to take; encode it elsewhere."""
        return [(k, Record(dict(r.registers), r.tomb)) for k, r in self.records.items()]


def record_line(key: str, record: Record) -> bytes:
    """A record as one snapshot line."""
    return _encode(record.to_json(key))


def _apply_to(record: Record, op: Op) -> None:
    if op.kind == REMOVE:
        record.remove(op.hlc, op.origin, op.seq)
    else:
        for f, value in op.fields.items():
            record.put(f, value, op.hlc, op.origin)


def covers(vv: Mapping[str, int], origin: str, seq: int) -> bool:
    return vv.get(origin, 0) >= seq


def dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """True if ``a`` has seen everything ``b`` has."""
    return all(a.get(o, 0) >= s for o, s in b.items())


def merged(a: Mapping[str, int], b: Mapping[str, int]) -> VersionVector:
    out = dict(a)
    for o, s in b.items():
        if s > out.get(o, 0):
            out[o] = s
    return out
