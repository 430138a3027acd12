"""The replicated map converges: any delivery order, duplicates and gaps."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_agenda.crdt import PUT, REMOVE, Applied, Op, Replica, dominates, merged
from twisted_agenda.model import Contact

ORIGINS = ["n1", "n2", "n3"]
KEYS = ["ana", "bia", "caio"]

field_values = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["Ana", "ANA", "Bia"]),
        "phone": st.sampled_from(["111", "222", "333"]),
        "email": st.sampled_from(["", "a@x.com", "b@x.com"]),
        "note": st.sampled_from(["", "hi", "bye"]),
    },
)
steps = st.lists(
    st.tuples(
        st.sampled_from(ORIGINS),
        st.sampled_from(KEYS),
        st.sampled_from([PUT, PUT, REMOVE]),
        field_values,
        st.integers(0, 3),  # how far this origin's clock moves
    ),
    max_size=40,
)


def make_ops(script) -> list[Op]:
    """Ops as origins would stamp them: per-origin seq, shared-ish clocks."""
    seqs = dict.fromkeys(ORIGINS, 0)
    clocks = dict.fromkeys(ORIGINS, 0)
    ops = []
    for origin, key, kind, fields, tick in script:
        seqs[origin] += 1
        clocks[origin] += tick + 1
        # Ties on hlc across origins are common here: the origin id breaks them.
        ops.append(Op.make(origin, seqs[origin], clocks[origin], key, kind, fields))
    return ops


def deliver(ops: list[Op], rng: random.Random) -> Replica:
    """Apply in a random order with duplicates; gaps retried like anti-entropy."""
    replica = Replica()
    pending = ops + rng.sample(ops, k=len(ops) // 2)
    while pending:
        rng.shuffle(pending)
        retry = []
        for op in pending:
            status, _ = replica.apply(op)
            if status is Applied.GAP:
                retry.append(op)
        pending = retry
    return replica


def state(replica: Replica):
    return sorted(replica.contacts(), key=lambda c: tuple(c.fields().values())), {
        k: (r.registers, r.tomb) for k, r in replica.records.items()
    }


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 2**32))
def test_any_delivery_order_gives_the_same_book(script, seed):
    ops = make_ops(script)
    rng = random.Random(seed)
    replicas = [deliver(ops, rng) for _ in range(4)]
    first = state(replicas[0])
    for replica in replicas[1:]:
        assert state(replica) == first
    assert replicas[0].vv == {o: s for o, s in _tops(ops).items()}


def _tops(ops):
    tops = {}
    for op in ops:
        tops[op.origin] = max(tops.get(op.origin, 0), op.seq)
    return tops


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 2**32))
def test_snapshot_merge_equals_replaying_ops(script, seed):
    ops = make_ops(script)
    rng = random.Random(seed)
    replayed = deliver(ops, rng)
    joined = Replica()
    cut = rng.randrange(len(ops) + 1)
    for op in ops[:cut]:
        joined.apply(op)
    for key, record in deliver(ops, rng).records.items():
        joined.merge_record(key, record)
    assert state(joined)[0] == state(replayed)[0]


def test_duplicate_and_gap_are_recognised():
    replica = Replica()
    first = Op.make("n1", 1, 10, "ana", PUT, {"name": "Ana", "phone": "111"})
    third = Op.make("n1", 3, 30, "ana", PUT, {"phone": "333"})
    assert replica.apply(third)[0] is Applied.GAP
    assert replica.apply(first)[0] is Applied.APPLIED
    assert replica.apply(first)[0] is Applied.DUPLICATE
    assert replica.get("ana") == Contact("Ana", "111")


def test_an_edit_that_comes_before_its_add_shows_under_its_key():
    # n2 edited Ana after n1's add reached it; n3 gets n2's edit first.
    replica = Replica()
    edit = Op.make("n2", 1, 20, "ana lima", PUT, {"email": "ana@x.com"})
    replica.apply(edit)
    assert replica.get("ana lima") == Contact("ana lima", "", "ana@x.com")
    add = Op.make("n1", 1, 10, "ana lima", PUT, {"name": "Ana Lima", "phone": "111"})
    replica.apply(add)
    assert replica.get("ana lima") == Contact("Ana Lima", "111", "ana@x.com")


def test_version_vector_helpers():
    assert merged({"a": 1, "b": 5}, {"a": 3}) == {"a": 3, "b": 5}
    assert dominates({"a": 3, "b": 1}, {"a": 2})
    assert not dominates({"a": 3}, {"a": 2, "b": 1})


def test_op_line_is_encoded_once_and_decodes_back():
    op = Op.make("n1", 1, 99, "joão", PUT, {"name": "João", "phone": "1 2 3"})
    again = Op.decode(op.line)
    assert again == op and again.line == op.line
    assert b"\n" not in op.line
