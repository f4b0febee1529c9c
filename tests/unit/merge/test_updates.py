"""Reading Yjs updates without applying them: clock ranges and missing dependencies."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from tandem.merge.replica import _decode_state_vector as decode_sv
from tandem.merge.updates import clock_ends, missing_dependency


def _edit(rng: random.Random, text: Text) -> None:
    """One random edit (inserts, deletes, formats; astral characters included)."""
    plain = str(text)
    size = len(plain.encode())
    boundaries = [len(plain[:i].encode()) for i in range(len(plain) + 1)]
    roll = rng.random()
    if roll < 0.6 or size == 0:
        at = rng.choice(boundaries)
        text.insert(at, rng.choice(["ab", "😀", "é", "xyz"]), rng.choice([{}, {"bold": True}]))
    elif roll < 0.8:
        a, b = sorted(rng.sample(boundaries, 2))
        del text[a:b]
    else:
        a, b = sorted(rng.sample(boundaries, 2))
        text.format(a, b, {"italic": rng.choice([True, None])})


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_missing_dependency_says_exactly_whether_yrs_integrates_all(seed: int) -> None:
    """Peers edit and sync at random; a receiver gets their updates in any order.

    Before each merge, ``missing_dependency`` predicts whether Yrs will hold
    back part of the update (pending structs or deletes); after it, the
    receiver's state vector tells. The two must agree every time.
    """
    rng = random.Random(seed)
    peers: list[Doc[Any]] = [Doc(client_id=10 + i) for i in range(3)]
    updates: list[bytes] = []
    for peer in peers:
        peer.observe(lambda event: updates.append(event.update))
    for _ in range(25):
        peer = rng.choice(peers)
        _edit(rng, peer.get("content", type=Text))
        if rng.random() < 0.4:
            other = rng.choice(peers)
            other.apply_update(peer.get_update(other.get_state()))
    order = list(updates)
    rng.shuffle(updates)
    receiver: Doc[Any] = Doc(client_id=99)
    waiting = updates
    while waiting:
        refused = []
        for update in waiting:
            before = decode_sv(receiver.get_state())
            if missing_dependency(update, before) is not None:
                refused.append(update)  # not applied (the replica's rule)
                continue
            receiver.apply_update(update)
            after = decode_sv(receiver.get_state())
            assert all(after.get(client, 0) >= end for client, end in clock_ends(update).items())
        # Refused ones come again (a client's SyncStep2 does that) until all are in.
        assert len(refused) < len(waiting), "some update can never be integrated"
        waiting = refused
    in_order: Doc[Any] = Doc(client_id=98)
    for update in sorted(updates, key=order.index):
        in_order.apply_update(update)
    assert str(receiver.get("content", type=Text)) == str(in_order.get("content", type=Text))


def test_missing_dependency_names_the_first_id_lacking() -> None:
    author: Doc[Any] = Doc(client_id=50)
    text = author.get("content", type=Text)
    text.insert(0, "abc")
    first = author.get_update()
    before = author.get_state()
    text.insert(1, "X")  # origin (50, 0), right origin (50, 1): same client, a clock gap
    second = author.get_update(before)
    assert missing_dependency(first, {}) is None
    assert missing_dependency(second, {}) == (50, 0)
    assert missing_dependency(second, {50: 3}) is None
    other: Doc[Any] = Doc(client_id=60)
    other.apply_update(first)
    before = other.get_state()
    other.get("content", type=Text).insert(2, "Y")  # origins are 50's items
    third = other.get_update(before)
    assert missing_dependency(third, {}) == (50, 1)
    assert missing_dependency(third, {50: 3}) is None
    # Deleting items the receiver never saw.
    before = author.get_state()
    del text[0:2]
    assert missing_dependency(author.get_update(before), {50: 3}) == (50, 3)
    assert missing_dependency(author.get_update(before), {50: 4}) is None
