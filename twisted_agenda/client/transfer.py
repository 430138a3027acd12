"""Import cards into a node (and export the book), on an AgendaClient.

An import reads the whole book once, plans each card (add, update,
unchanged, skip: see ``vcard.plan_import``), then sends the writes with a
few in flight at a time, so hundreds of cards share the node's group
commits instead of waiting for one fsync each. A node lost on the way is
replaced by the next one of the client's list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from attrs import define, field
from twisted.internet import defer

from twisted_agenda.client import (
    AgendaClient,
    AgendaError,
    ConnectionFailed,
    ConnectionLost,
    NotFound,
)
from twisted_agenda.vcard import (
    ADD,
    SKIP,
    UNCHANGED,
    UPDATE,
    Action,
    Card,
    changes_for,
)

#: Writes in flight at once during an import.
WINDOW = 32


@define
class ImportReport:
    added: list[Card] = field(factory=list)
    updated: list[Card] = field(factory=list)
    unchanged: list[Card] = field(factory=list)
    #: (card, reason) for each card that was not imported.
    skipped: list[tuple[Card, str]] = field(factory=list)
    #: Why the import stopped before the end (every node lost), if it did.
    stopped: str | None = None

    @property
    def total(self) -> int:
        return (
            len(self.added)
            + len(self.updated)
            + len(self.unchanged)
            + len(self.skipped)
        )

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped"
        )

    def as_json(self) -> dict:
        def names(cards: list[Card]) -> list[dict]:
            return [{"line": c.line, "name": c.contact.name} for c in cards]

        return {
            "added": names(self.added),
            "updated": names(self.updated),
            "unchanged": names(self.unchanged),
            "skipped": [
                {
                    "line": card.line,
                    "name": card.contact.name if card.contact else None,
                    "reason": reason,
                }
                for card, reason in self.skipped
            ],
            "stopped": self.stopped,
        }


async def import_actions(
    client: AgendaClient,
    actions: Iterable[Action],
    on_progress: Callable[[int, int], object] | None = None,
    dry_run: bool = False,
    region: str | None = None,
) -> ImportReport:
    """Carry out planned actions; refused cards are skipped with the reason.

    ``on_progress(done, total)`` is called as cards finish. When the node in
    use is lost, the import carries on with the next node of the client's
    list; the cards whose writes were in flight are looked at again there
    (the lost node may or may not have made them) and sent if still needed.
    Each listed node may be lost once: after that, or when no node can be
    reached, the cards not yet sent are reported as skipped, with why
    (``report.stopped``).
    """
    actions = list(actions)
    report = ImportReport()
    done = 0
    lost: dict[object, str] = {}  # connection -> "node X at host:port"

    def progress() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, len(actions))

    def stop(why: str) -> None:
        if report.stopped is None:
            report.stopped = why

    def connection_lost(connection: object, address: object) -> None:
        node = getattr(connection, "node_id", None) or "?"
        lost.setdefault(connection, f"node {node} at {address}")
        if len(lost) >= len(client.servers):
            stop(f"no node left (lost {', '.join(lost.values())})")

    async def write(action: Action, again: bool) -> str:
        """Send one card's write; ADD or UPDATE (its outcome), or AgendaError."""
        contact = action.card.contact
        assert contact is not None
        kind = action.kind
        changes = action.changes
        if again:
            # Whatever the lost node did, this node says what is left to do.
            try:
                current = await client.get(contact.name)
            except NotFound:
                current = None
            if current is not None:
                changes = changes_for(contact, current, region)
                if not changes:
                    return kind  # made before the node was lost
                return await _send(client, contact, UPDATE, changes, kind)
            if kind == UPDATE:
                # Someone removed it meanwhile: the card's fields, as new.
                return await _send(client, contact, ADD, {}, kind)
        return await _send(client, contact, kind, changes, kind)

    async def one(action: Action) -> None:
        card = action.card
        if action.kind == SKIP:
            report.skipped.append((card, action.reason))
        elif action.kind == UNCHANGED:
            report.unchanged.append(card)
        elif dry_run:
            (report.added if action.kind == ADD else report.updated).append(card)
        else:
            outcome, reason = await attempt(action)
            if outcome == ADD:
                report.added.append(card)
            elif outcome == UPDATE:
                report.updated.append(card)
            else:
                report.skipped.append((card, reason))
        progress()

    async def attempt(action: Action) -> tuple[str | None, str]:
        """``(ADD or UPDATE, "")`` once made, or ``(None, why)`` if skipped."""
        uncertain: str | None = None  # a write of this card was cut off
        while True:
            if report.stopped is not None:
                return None, uncertain or f"not sent: {report.stopped}"
            try:
                await client.connect()
            except AgendaError as e:
                stop(e.message)
                continue
            connection, address = client.protocol, client.address
            try:
                return await write(action, again=uncertain is not None), ""
            except ConnectionFailed as e:
                stop(e.message)
            except ConnectionLost as e:
                connection_lost(connection, address)
                if uncertain is not None:
                    return None, uncertain
                uncertain = e.message
            except AgendaError as e:
                return None, e.message

    async def worker(queue: Iterator[Action]) -> None:
        # Each worker takes the next card when its last one is done: a few
        # writes in flight, and no chain of callbacks that grows with the
        # number of cards (cards that finish at once just loop here).
        for action in queue:
            await one(action)

    queue = iter(actions)
    await defer.gatherResults(
        [defer.ensureDeferred(worker(queue)) for _ in range(min(WINDOW, len(actions)))]
    )
    # Report in file order, whatever order the replies came in.
    for cards in (report.added, report.updated, report.unchanged):
        cards.sort(key=lambda c: c.line)
    report.skipped.sort(key=lambda item: item[0].line)
    return report


async def _send(
    client: AgendaClient, contact, kind: str, changes: dict[str, str], outcome: str
) -> str:
    if kind == ADD:
        await client.add(
            contact.name,
            contact.phone,
            email=contact.email or None,
            note=contact.note or None,
        )
    else:
        await client.update(contact.name, **changes)
    return outcome
