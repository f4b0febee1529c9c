"""Every limit at 0 does what docs/operations.md says: "no limit", or refused at start-up.

The limits that accept 0 are exercised end to end in
``tests/integration/test_limits_zero.py``; here: the refusals (by ``Settings``
and by ``tandem serve``, which exits before it listens), the invalid
combinations, and the pure parts that give 0 its meaning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.limits import ConnectionCounter, TokenBucket
from tandem.ot import Delta, Document
from tandem.sequencer import Commit, Sequencer
from tandem.session.ownership import LeaseTiming
from tandem.settings import LEASE_MARGIN, NO_LIMIT_AT_ZERO, Settings, SettingsError

#: Every limit docs/security.md lists, each either "0 = no limit" or "0 refused".
LIMITS = {
    "max_frame_bytes",
    "max_document_chars",
    "max_op_components",
    "max_merge_ops",
    "messages_per_second",
    "message_burst",
    "max_connections_per_user",
    "max_connections_per_ip",
    "max_joins_per_connection",
    "send_queue_frames",
    "max_version_lag",
    "ping_interval",
    "ping_timeout",
    "presence_timeout",
    "commit_max_batch",
    "snapshot_every",
}
REFUSED_AT_ZERO = sorted(LIMITS - NO_LIMIT_AT_ZERO - {"message_burst"})


def test_every_limit_has_a_meaning_at_zero() -> None:
    assert NO_LIMIT_AT_ZERO <= LIMITS
    for name in LIMITS:
        if name in NO_LIMIT_AT_ZERO:
            assert getattr(Settings(**{name: 0}), name) == 0
        elif name != "message_burst":
            with pytest.raises(SettingsError):
                Settings(**{name: 0})


@pytest.mark.parametrize("name", REFUSED_AT_ZERO)
def test_a_limit_that_refuses_zero_says_so_clearly(name: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings(**{name: 0})
    (problem,) = refused.value.problems
    assert problem.startswith(f"{name} (TANDEM_{name.upper()}) is 0: it must be at least")
    assert "0 does not mean 'no limit' here" in problem


def test_message_burst_zero_is_refused_with_a_rate_and_ignored_without() -> None:
    with pytest.raises(SettingsError, match="message_burst .* set messages_per_second to 0"):
        Settings(message_burst=0)
    assert Settings(messages_per_second=0, message_burst=0).message_burst == 0


def test_invalid_combinations_and_negatives_are_refused() -> None:
    with pytest.raises(SettingsError, match="presence would expire between two broadcasts"):
        Settings(presence_timeout=0.05, presence_interval=0.05)
    with pytest.raises(SettingsError, match="max_connections_per_ip .* cannot be negative"):
        Settings(max_connections_per_ip=-1)
    with pytest.raises(SettingsError) as several:
        Settings(max_frame_bytes=10, send_queue_frames=0, sync_delay=-1)
    assert len(several.value.problems) == 3  # every mistake at once, not one per restart


def test_lease_timing_must_leave_room_for_a_failed_renew() -> None:
    with pytest.raises(SettingsError, match="lease_renew_interval .* must fit twice"):
        Settings(lease_ttl=10, lease_renew_interval=4.6)
    defaults = Settings()
    # The settings check and the pure timing agree: what Settings accepts, LeaseTiming does.
    timing = LeaseTiming.keeping_back(
        defaults.lease_ttl, defaults.lease_renew_interval, LEASE_MARGIN
    )
    assert timing.margin == defaults.lease_ttl * LEASE_MARGIN
    edge = Settings(lease_ttl=10, lease_renew_interval=4.5)
    LeaseTiming.keeping_back(edge.lease_ttl, edge.lease_renew_interval, LEASE_MARGIN)


def test_tandem_serve_refuses_them_before_it_listens(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TANDEM_JWT_SECRET": "x" * 40,
        "TANDEM_MAX_FRAME_BYTES": "0",
        "TANDEM_SEND_QUEUE_FRAMES": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tandem", "serve", "--port", "1", "--data", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "TANDEM_MAX_FRAME_BYTES" in done.stderr and "TANDEM_SEND_QUEUE_FRAMES" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout


def test_a_rate_of_zero_lets_every_message_through() -> None:
    bucket = TokenBucket(0, 0, now=0.0)
    assert all(bucket.take(now=0.0) for _ in range(100_000))
    limited = TokenBucket(1, 1, now=0.0)
    assert limited.take(now=0.0) and not limited.take(now=0.0)


def test_connection_caps_of_zero_count_but_never_refuse() -> None:
    counter = ConnectionCounter(per_user=0, per_ip=0)
    for _ in range(10_000):
        counter.acquire_ip("127.0.0.1")
        counter.acquire_user("one-user")
    assert counter.users["one-user"] == counter.ips["127.0.0.1"] == 10_000


def test_a_document_limit_of_zero_lets_it_grow_past_the_default() -> None:
    default = Settings().max_document_chars
    sequencer = Sequencer("d", Document("x"), 0, max_document_chars=0)
    decision = sequencer.submit(
        Delta().insert("y" * default), 0, client_id="c", seq=1, user="u", now=0.0
    )
    assert isinstance(decision, Commit) and len(sequencer.document) == default + 1
