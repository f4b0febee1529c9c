"""y-protocols frames: the bytes verified against y-websocket (see reference/crdt-peers.md)."""

from __future__ import annotations

from tandem.merge import yproto


def test_frames_match_the_reference_bytes() -> None:
    assert yproto.sync_step1(b"\x00") == bytes.fromhex("00 00 01 00")
    assert yproto.sync_step2(b"\x00\x00") == bytes.fromhex("00 01 02 00 00")
    entry = yproto.AwarenessEntry(5, 1, {"u": 1})
    payload = yproto.encode_awareness([entry])
    assert yproto.awareness_message(payload) == bytes.fromhex("01 0B 01 05 01 07") + b'{"u":1}'
    assert yproto.decode_awareness(payload) == [entry]


def test_var_string_counts_utf8_bytes() -> None:
    out = bytearray()
    yproto.write_var_string(out, "é😀")
    assert bytes(out) == b"\x06" + "é😀".encode()
    assert yproto.Decoder(bytes(out)).var_string() == "é😀"


def test_parse_round_trips_and_rejects_truncation() -> None:
    message = yproto.parse(yproto.sync_update(b"\x01\x02"))
    assert (message.kind, message.sub, message.payload) == (0, 2, b"\x01\x02")
    assert yproto.parse(yproto.query_awareness()).kind == yproto.QUERY_AWARENESS
    try:
        yproto.parse(b"\x00\x02\x05\x01")
    except yproto.ProtocolError:
        pass
    else:
        raise AssertionError("a truncated frame must raise")
