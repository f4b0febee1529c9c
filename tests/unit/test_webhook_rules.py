"""``tandem.webhooks.rules``: subscriptions, signatures, backoff and debounce (pure)."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from tandem.webhooks.rules import (
    Debounce,
    Subscription,
    backoff,
    parse_subscriptions,
    payload,
    sign,
    verify_signature,
)

NOW = 1_700_000_000.0


def test_parse_subscriptions() -> None:
    subs = parse_subscriptions(["https://a.example/h", "notes/* http://127.0.0.1:9/x"])
    assert subs == (
        Subscription("*", "https://a.example/h"),
        Subscription("notes/*", "http://127.0.0.1:9/x"),
    )
    assert subs[1].matches("notes/a/b") and not subs[1].matches("todo")


@pytest.mark.parametrize("entry", ["ftp://x/y", "notes/*", "a b c", "* https://"])
def test_bad_subscriptions(entry: str) -> None:
    with pytest.raises(ValueError, match="webhooks entry"):
        parse_subscriptions([entry])


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = payload("id1", "d", 0, 3, NOW, [])
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", 1_700_000_000, body) == "v1=" + expected


def test_verify_signature() -> None:
    body = b'{"x":1}'
    good = sign(b"k", int(NOW), body)
    assert verify_signature(b"k", str(int(NOW)), good, body, now=NOW + 10)
    assert not verify_signature(b"other", str(int(NOW)), good, body, now=NOW)
    assert not verify_signature(b"k", str(int(NOW)), good, body + b" ", now=NOW)
    assert not verify_signature(b"k", str(int(NOW) + 1), good, body, now=NOW)  # timestamp is signed
    assert not verify_signature(b"k", str(int(NOW)), good, body, now=NOW + 301)  # replayed late
    assert not verify_signature(b"k", "soon", good, body, now=NOW)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_payload_carries_the_range_and_key() -> None:
    data = orjson.loads(payload("k", "notes/a", 3, 5, NOW, None))
    assert data == {
        "id": "k",
        "type": "document.changed",
        "doc": "notes/a",
        "from_version": 3,
        "to_version": 5,
        "created": NOW,
        "ops": None,
    }


def test_debounce_waits_for_quiet_but_not_forever() -> None:
    pending = Debounce(4, 4, NOW, NOW)
    assert pending.due_at(quiet=2, longest=10) == NOW + 2
    for step in range(1, 20):  # steady typing, one op a second
        pending.changed(4 + step, NOW + step)
    assert pending.due_at(quiet=2, longest=10) == NOW + 10
    assert (pending.first_version, pending.last_version) == (4, 23)
