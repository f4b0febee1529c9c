"""The Hocuspocus envelope: bytes as ``@hocuspocus/common`` 4.8 and lib0 write them."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto


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
