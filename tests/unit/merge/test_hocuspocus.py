"""The Hocuspocus envelope: bytes as ``@hocuspocus/common`` 4.8 and lib0 write them."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto
from tandem.merge.updates import delete_set, holds_update


def test_frames_match_the_npm_encoders() -> None:
    # Reference bytes produced by lib0 + @hocuspocus/common 4.8.0.
    auth = bytes.fromhex("086e6f7465732fc3a9020003746f6b05342e382e30")
    envelope = hp.parse(auth)
    assert (envelope.key, envelope.document, envelope.kind) == ("notes/é", "notes/é", hp.AUTH)
    assert hp.read_token(envelope.body) == "tok"
    assert hp.authenticated("a", True) == bytes.fromhex("0161020208726561646f6e6c79")
    assert hp.permission_denied("a", "no") == bytes.fromhex("01610201026e6f")
    assert hp.sync_status("a\0s1", True) == bytes.fromhex("04610073310801")
    assert hp.close("a", "bye") == bytes.fromhex("01610703627965")


def test_the_envelope_is_a_prefix_of_y_protocols_frames() -> None:
    inner = yproto.sync_step1(b"\x00")
    wrapped = hp.wrap("doc\0session", inner)
    envelope = hp.parse(wrapped)
    assert envelope.document == "doc" and envelope.key == "doc\0session"
    assert envelope.yjs == inner
    assert hp.parse(hp.wrap("d", yproto.query_awareness())).yjs == yproto.query_awareness()
    assert hp.Envelope("d", hp.SYNC_REPLY, b"\x00\x01\x00").yjs == b"\x00\x00\x01\x00"
    assert hp.Envelope("d", hp.STATELESS, b"").yjs is None
    with pytest.raises(RuntimeError):
        hp.wrap("d", yproto.auth_denied("no"))  # Auth sub-types differ: never wrapped


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x05ab", b"\x02\xff\xfe", b"\x01d"])
def test_a_broken_head_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(yproto.ProtocolError):
        hp.parse(data)


def test_only_token_auth_messages_are_read() -> None:
    with pytest.raises(yproto.ProtocolError):
        hp.read_token(b"\x02\x02ok")
    with pytest.raises(yproto.ProtocolError):
        hp.read_token(b"\x00\x09short")


def test_adds_nothing_sees_new_structs_and_new_deletes() -> None:
    server: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    text = server.get("content", type=pycrdt.Text)
    text += "hello world"
    state = server.get_update()
    reader: pycrdt.Doc[Any] = pycrdt.Doc(client_id=6)
    reader.apply_update(state)
    mirror = reader.get("content", type=pycrdt.Text)
    assert hp.adds_nothing(state, reader.get_update(server.get_state()))
    assert hp.adds_nothing(state, b"\x00\x00")
    del mirror[0:2]
    assert not hp.adds_nothing(state, reader.get_update(server.get_state()))
    server.apply_update(reader.get_update(server.get_state()))
    state = server.get_update()
    assert hp.adds_nothing(state, reader.get_update(server.get_state()))  # deletes known now
    mirror += "!"
    assert not hp.adds_nothing(state, reader.get_update(server.get_state()))
    with pytest.raises(yproto.ProtocolError):
        hp.adds_nothing(state, b"\xde\xad\xbe\xef")


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(1, 5)), max_size=25))
@settings(max_examples=200, deadline=None)
def test_holds_update_agrees_with_rebuilding_the_document(
    edits: list[tuple[bool, int, int]],
) -> None:
    """The cheap check (state vector + cached delete set) answers as the rebuild does."""
    server: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    server.get("content", type=pycrdt.Text).insert(0, "the quick brown fox jumps")
    reader: pycrdt.Doc[Any] = pycrdt.Doc(client_id=6)
    reader.apply_update(server.get_update())
    mirror = reader.get("content", type=pycrdt.Text)
    for index, (insert, at, size) in enumerate(edits):
        target = mirror if index % 2 else server.get("content", type=pycrdt.Text)
        length = len(str(target))
        if insert or length == 0:
            target.insert(min(at, length), "ab"[: size % 2 + 1])
        else:
            start = min(at, length - 1)
            del target[start : min(length, start + size)]
        if index % 3 == 0:  # the server sometimes hears of the reader's edits
            server.apply_update(reader.get_update(server.get_state()))
        state = server.get_update()
        update = reader.get_update()
        sv = hp._state_vector(server.get_state())
        assert holds_update(sv, delete_set(state), update) == hp.adds_nothing(state, update)
