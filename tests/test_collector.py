"""The garbage collector policy, with Python's real collector."""

from __future__ import annotations

import gc
import weakref

import pytest

from twisted_agenda.collector import Collector


class Reactor:
    """Just callFromThread, run by hand."""

    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:
        self.calls.append((f, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def reactor():
    return Reactor()


@pytest.fixture
def running(reactor):
    collector = Collector(reactor, young=10_000, growth=1.5, min_full=0)
    before = gc.get_threshold()
    collector.startService()
    yield collector
    collector.stopService()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_what_survives_a_young_collection_is_never_scanned_again(running):
    kept = [[i] for i in range(1_000)]
    frozen = gc.get_freeze_count()
    gc.collect(0)
    assert gc.get_freeze_count() >= frozen + len(kept)
    scanned = {id(o) for generation in (0, 1, 2) for o in gc.get_objects(generation)}
    assert not any(id(x) in scanned for x in kept)


def test_a_frozen_cycle_is_freed_once_the_heap_has_grown_enough(running, reactor):
    cycle = Cycle()
    gone = weakref.ref(cycle)
    gc.collect(0)  # it survives: frozen
    del cycle
    gc.collect(0)
    assert gone() is not None, "frozen garbage waits for a full collection"
    grown = [[i] for i in range(int(gc.get_freeze_count() * 0.6))]
    gc.collect(0)
    assert len(reactor.calls) == 1, "one full collection is due"
    reactor.run()
    assert gone() is None
    assert running.full_collections and running.full_collections[0] >= 1
    assert gc.get_freeze_count() >= len(grown), "what is alive is frozen again"


def test_young_garbage_goes_at_once_and_needs_no_full_collection(running, reactor):
    for _ in range(5):
        garbage = [Cycle() for _ in range(1_000)]
        gone = weakref.ref(garbage[0])
        del garbage
        gc.collect(0)
        assert gone() is None
    assert reactor.calls == []
