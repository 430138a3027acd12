"""Import cards into a node (and export the book), on an AgendaClient.

An import reads the whole book once, plans each card (add, update,
unchanged, skip: see ``vcard.plan_import``), then sends the writes with a
few in flight at a time, so hundreds of cards share the node's group
commits instead of waiting for one fsync each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attrs import define, field
from twisted.internet import defer

from twisted_agenda.client import AgendaClient, AgendaError, ConnectionLost
from twisted_agenda.vcard import ADD, SKIP, UNCHANGED, UPDATE, Action, Card

#: Writes in flight at once during an import.
WINDOW = 32


@define
class ImportReport:
    added: list[Card] = field(factory=list)
    updated: list[Card] = field(factory=list)
    unchanged: list[Card] = field(factory=list)
    #: (card, reason) for each card that was not imported.
    skipped: list[tuple[Card, str]] = field(factory=list)

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
        }


async def import_actions(
    client: AgendaClient,
    actions: Iterable[Action],
    on_progress: Callable[[int, int], object] | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Carry out planned actions; refused cards are skipped with the reason.

    ``on_progress(done, total)`` is called as cards finish. A lost
    connection stops the import (the cards not yet sent are reported as
    skipped), since the node may or may not have made the write in flight.
    """
    actions = list(actions)
    report = ImportReport()
    done = 0
    semaphore = defer.DeferredSemaphore(WINDOW)
    stopped: list[str] = []

    def progress() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, len(actions))

    async def one(action: Action) -> None:
        card, contact = action.card, action.card.contact
        if action.kind == SKIP:
            report.skipped.append((card, action.reason))
        elif action.kind == UNCHANGED:
            report.unchanged.append(card)
        elif stopped:
            report.skipped.append((card, f"not sent: {stopped[0]}"))
        elif dry_run:
            (report.added if action.kind == ADD else report.updated).append(card)
        else:
            assert contact is not None
            try:
                if action.kind == ADD:
                    await client.add(
                        contact.name,
                        contact.phone,
                        email=contact.email or None,
                        note=contact.note or None,
                    )
                    report.added.append(card)
                elif action.kind == UPDATE:
                    await client.update(contact.name, **action.changes)
                    report.updated.append(card)
            except ConnectionLost as e:
                stopped.append(e.message)
                report.skipped.append((card, e.message))
            except AgendaError as e:
                report.skipped.append((card, e.message))
        progress()

    await defer.gatherResults(
        [semaphore.run(lambda a=a: defer.ensureDeferred(one(a))) for a in actions],
        consumeErrors=True,
    )
    # Report in file order, whatever order the replies came in.
    for cards in (report.added, report.updated, report.unchanged):
        cards.sort(key=lambda c: c.line)
    report.skipped.sort(key=lambda item: item[0].line)
    return report
