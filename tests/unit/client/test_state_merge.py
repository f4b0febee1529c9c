"""The client state machine's offline merge (docs/protocol.md, "Offline merge"), by hand.

The server side is played by the pure pieces the real server uses: a
``Sequencer`` for the history and ``merge_branches`` for the ``merged`` reply.
No event loop, no network.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tandem.client.state import MERGE_AT, ClientState, Status
from tandem.errors import ProtocolError
from tandem.merge.branch import merge_branches
from tandem.ot import Delta, Document
from tandem.sequencer import Commit, Sequencer


def entry_dicts(server: Sequencer, since: int) -> list[dict[str, Any]]:
    return [
        {"v": e.version, "op": e.op.to_json(), "client": e.client_id, "user": e.user, "seq": e.seq}
        for e in server.entries_since(since)
    ]


def other_types(server: Sequencer, rng: random.Random, count: int, seq: int = 1) -> None:
    """Someone else commits ``count`` one-character inserts at random places."""
    for i in range(count):
        at = rng.randint(0, len(server.document))
        op = Delta().retain(at).insert(chr(0x4E00 + seq + i))
        server.submit(op, server.version, client_id="other", seq=seq + i, user="o", now=0.0)


def offline_typing(me: ClientState, rng: random.Random, count: int) -> None:
    """Scattered edits: each one adds components to the composed buffer."""
    for i in range(count):
        at = rng.randint(0, len(me.document))
        me.local_edit(Delta().retain(at).insert(chr(0x3041 + i % 80)))
        if i % 5 == 4 and len(me.document) > 2:
            me.local_edit(Delta().retain(rng.randint(0, len(me.document) - 2)).delete(1))


def answer_merge(
    server: Sequencer, base: Document, message: dict[str, Any], client: str = "me"
) -> dict[str, Any]:
    """What the server does with a ``merge``: merge both branches, commit, reply ``merged``."""
    assert message["type"] == "merge"
    server_ops = [entry.op for entry in server.entries_since(message["v"])]
    branch = [Delta.from_json(op) for op in message["ops"]]
    result = merge_branches(base, server_ops, branch, server.document)
    decision = server.submit(
        result.commit, server.version, client_id=client, seq=message["seq"], user=client, now=0.0
    )
    assert isinstance(decision, Commit)
    return {"seq": message["seq"], "v": server.version, "op": result.catchup}


def offline_scene(
    seed: int = 1, mine: int = 40, theirs: int = 40
) -> tuple[Sequencer, Document, ClientState]:
    """A client at version 1 goes offline and types ``mine`` edits; ``theirs`` get committed."""
    rng = random.Random(seed)
    text = "The quick brown fox jumps over the lazy dog. " * 4
    server = Sequencer("notes", Document(text), 0)
    server.submit(Delta().insert(">"), 0, client_id="other", seq=0, user="o", now=0.0)
    me = ClientState("notes", "me", content=server.document, version=1)
    base = server.document
    offline_typing(me, rng, mine)
    other_types(server, rng, theirs)
    return server, base, me


# -- when to merge -------------------------------------------------------------


def test_merge_cost_counts_components_of_the_composed_pending_edits() -> None:
    me = ClientState("notes", "me", content="abcdef", version=0)
    assert me.merge_cost(100) == 0
    me.local_edit(Delta().retain(1).insert("x"))  # in flight: 2 components
    assert me.merge_cost(10) == 20
    # Typing in one place composes into few components, however many keys.
    for i in range(50):
        me.local_edit(Delta().retain(3 + i).insert("y"))
    assert me.buffer is not None and len(me.buffer.ops) == 2
    assert me.merge_cost(10) == 40


def test_a_cheap_catchup_is_applied_op_by_op() -> None:
    server, _base, me = offline_scene(mine=3, theirs=5)
    assert me.merge_cost(5) < MERGE_AT
    me.catchup(entry_dicts(server, me.version))
    assert me.status is Status.AWAITING_ACK_WITH_BUFFER and me.merges == 0
    assert me.version == server.version
    resent = me.resend()
    assert resent is not None and resent["type"] == "op"


def test_merge_threshold_none_never_merges() -> None:
    server, _base, me = offline_scene()
    me.merge_at = None
    me.catchup(entry_dicts(server, me.version))
    assert me.merging is None and me.version == server.version


# -- the merge -----------------------------------------------------------------


def test_an_expensive_catchup_becomes_one_merge_and_converges() -> None:
    server, base, me = offline_scene()
    pending_seq, final = me.next_seq, me.document
    n = len(server.entries_since(me.version))
    assert me.merge_cost(n) >= MERGE_AT

    change = me.catchup(entry_dicts(server, me.version))
    assert change == Delta()  # nothing applied: the reply will carry it
    assert me.status is Status.MERGING and not me.synchronized and me.merges == 1
    assert me.version == 1 and me.document == final
    message = me.resend()
    assert message is not None
    assert message["type"] == "merge" and message["v"] == 1 and message["doc"] == "notes"
    assert message["seq"] == pending_seq and len(message["ops"]) == 1
    assert me.resend() == message  # resent unchanged

    reply = answer_merge(server, base, message)
    change, follow_up = me.receive_merged(reply["seq"], reply["v"], reply["op"])
    assert follow_up is None and me.synchronized
    assert me.version == server.version
    assert me.document == server.document and me.confirmed == server.document
    assert final.apply(change) == server.document


def test_ops_during_the_merge_are_ignored_and_typing_goes_on() -> None:
    server, base, me = offline_scene(seed=2)
    me.catchup(entry_dicts(server, me.version))
    message = me.resend()
    assert message is not None
    # Someone else commits while the server merges; we get it as an op: ignored.
    other_types(server, random.Random(5), 3, seq=100)
    assert me.receive_op(server.version, server.entries_since(server.version - 1)[0].op) == Delta()
    assert me.version == 1
    # We keep typing: composed into the buffer, nothing sent.
    assert me.local_edit(Delta().insert("[")) is None
    assert me.local_edit(Delta().retain(len(me.document)).insert("]")) is None
    assert me.status is Status.MERGING and me.text.startswith("[") and me.text.endswith("]")

    reply = answer_merge(server, base, message)
    _change, follow_up = me.receive_merged(reply["seq"], reply["v"], reply["op"])
    assert me.version == server.version
    assert follow_up is not None and follow_up["type"] == "op" and follow_up["v"] == me.version
    assert me.inflight is not None and me.merging is None
    decision = server.submit(
        Delta.from_json(follow_up["op"]),
        follow_up["v"],
        client_id="me",
        seq=follow_up["seq"],
        user="me",
        now=0.0,
    )
    assert isinstance(decision, Commit)
    me.receive_ack(follow_up["seq"], server.version)
    assert me.synchronized and me.document == server.document
    assert server.document.text().startswith("[") and server.document.text().endswith("]")


def test_inflight_acked_in_the_catchup_then_the_rest_is_merged() -> None:
    rng = random.Random(3)
    server = Sequencer("notes", Document("x" * 200), 0)
    me = ClientState("notes", "me", content=server.document, version=0)
    sent = me.local_edit(Delta().insert("A"))
    assert sent is not None
    # It reached the server (the ack was lost); then we typed offline.
    assert isinstance(
        server.submit(Delta.from_json(sent["op"]), 0, client_id="me", seq=1, user="me", now=0.0),
        Commit,
    )
    offline_typing(me, rng, 40)
    other_types(server, rng, 40)
    me.catchup(entry_dicts(server, 0))
    assert me.version == 1 and me.status is Status.MERGING  # acked at 1, then merged from 1
    message = me.resend()
    assert message is not None and message["v"] == 1 and message["seq"] == 3
    reply = answer_merge(server, _document_at(server, 1), message)
    me.receive_merged(reply["seq"], reply["v"], reply["op"])
    assert me.synchronized and me.document == server.document
    assert server.document.text().count("A") == 1


def _document_at(server: Sequencer, version: int) -> Document:
    document = Document("x" * 200)
    for entry in server.entries_since(0):
        if entry.version <= version:
            document = document.apply(entry.op)
    return document


def test_a_repeated_reply_is_ignored_and_a_stray_one_is_an_error() -> None:
    server, base, me = offline_scene()
    me.catchup(entry_dicts(server, me.version))
    message = me.resend()
    assert message is not None
    reply = answer_merge(server, base, message)
    me.receive_merged(reply["seq"], reply["v"], reply["op"])
    assert me.receive_merged(reply["seq"], reply["v"], reply["op"]) == (Delta(), None)
    with pytest.raises(ProtocolError):
        me.receive_merged(me.next_seq + 5, 99, Delta())


def test_an_error_for_the_merge_discards_the_branch() -> None:
    server, _base, me = offline_scene()
    me.catchup(entry_dicts(server, me.version))
    me.local_edit(Delta().insert("!"))
    before = me.document
    undo = me.discard_pending()
    assert before.apply(undo) == me.confirmed == me.document
    assert me.synchronized and me.merging is None and me.buffer is None


# -- a connection drop during the merge ------------------------------------------


def test_dropped_before_the_server_committed_it_the_same_merge_is_resent() -> None:
    server, base, me = offline_scene(seed=4)
    me.catchup(entry_dicts(server, me.version))
    message = me.resend()
    # Dropped: the re-join (with the base version) gets a catch-up without our merge.
    other_types(server, random.Random(6), 2, seq=200)
    me.local_edit(Delta().insert("#"))
    assert me.catchup(entry_dicts(server, me.version)) == Delta()
    assert me.status is Status.MERGING and me.resend() == message

    reply = answer_merge(server, base, message or {})
    _change, follow_up = me.receive_merged(reply["seq"], reply["v"], reply["op"])
    assert follow_up is not None
    server.submit(
        Delta.from_json(follow_up["op"]), follow_up["v"], client_id="me", seq=follow_up["seq"],
        user="me", now=0.0,
    )  # fmt: skip
    me.receive_ack(follow_up["seq"], server.version)
    assert me.document == server.document and server.document.text().startswith("#")


def test_dropped_after_the_server_committed_it_the_catchup_completes_it() -> None:
    server, base, me = offline_scene(seed=5)
    me.catchup(entry_dicts(server, me.version))
    message = me.resend()
    assert message is not None
    answer_merge(server, base, message)  # committed; the reply is lost with the connection
    other_types(server, random.Random(7), 2, seq=300)  # and more after it
    me.local_edit(Delta().retain(len(me.document)).insert("$"))  # typed meanwhile

    change = me.catchup(entry_dicts(server, me.version))
    assert change.ops and me.merging is None and me.version == server.version
    assert me.confirmed == server.document
    follow_up = me.resend()  # not the merge again: what was typed meanwhile
    assert follow_up is not None and follow_up["type"] == "op" and follow_up["v"] == server.version
    server.submit(
        Delta.from_json(follow_up["op"]), follow_up["v"], client_id="me", seq=follow_up["seq"],
        user="me", now=0.0,
    )  # fmt: skip
    me.receive_ack(follow_up["seq"], server.version)
    assert me.document == server.document and server.document.text().endswith("$")


def test_snapshot_during_the_merge_uses_last_seq() -> None:
    server, base, me = offline_scene(seed=6)
    me.catchup(entry_dicts(server, me.version))
    message = me.resend()
    assert message is not None
    # Not committed (last_seq below the merge's): the merge stays, to be resent.
    assert me.snapshot_while_merging(server.version, server.document, None) == Delta()
    assert me.snapshot_while_merging(server.version, server.document, message["seq"] - 1) == Delta()
    assert me.status is Status.MERGING and me.resend() == message
    # Committed: complete at the snapshot.
    answer_merge(server, base, message)
    me.snapshot_while_merging(server.version, server.document, message["seq"])
    assert me.synchronized and me.version == server.version and me.document == server.document


# -- many seeds --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_random_offline_branches_converge_through_a_merge(seed: int) -> None:
    rng = random.Random(seed)
    server, base, me = offline_scene(seed, mine=rng.randint(20, 60), theirs=rng.randint(20, 60))
    me.catchup(entry_dicts(server, me.version))
    assert me.status is Status.MERGING, f"seed {seed}"
    message = me.resend()
    assert message is not None
    drop = rng.random() < 0.5
    for _ in range(rng.randint(0, 5)):
        offline_typing(me, rng, 1)
    reply = answer_merge(server, base, message)
    if drop:  # the reply was lost: learn it from the re-join's catch-up
        me.catchup(entry_dicts(server, me.version))
        follow_up = me.resend()
    else:
        _change, follow_up = me.receive_merged(reply["seq"], reply["v"], reply["op"])
    if follow_up is not None:
        assert isinstance(
            server.submit(
                Delta.from_json(follow_up["op"]), follow_up["v"], client_id="me",
                seq=follow_up["seq"], user="me", now=0.0,
            ),
            Commit,
        ), f"seed {seed}"  # fmt: skip
        me.receive_ack(follow_up["seq"], server.version)
    assert me.synchronized and me.document == server.document, f"seed {seed}"
