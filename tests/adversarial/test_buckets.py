"""The rate bucket's two hostile-client rules, pure (time passed in).

* ``TokenBucket.spend``: work whose cost is known once done (a SyncStep2's size)
  goes into debt, and the connection waits until a whole message is available
  again: slowed, not refused.
* ``Admission.bucket(now, ip)``: after a connection was closed for exceeding the
  rate, the next from its address starts where that one's bucket left off (no
  debt), so reconnecting buys no fresh burst; while that is less than one
  message, the address is refused before anything else (4429).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tandem import Settings
from tandem.auth import Principal
from tandem.errors import LimitExceeded
from tandem.limits import TokenBucket
from tandem.metrics import Metrics
from tandem.server.admission import Admission


async def _refuse(token: str) -> Principal:
    raise AssertionError("not used")


def _admission() -> Admission:
    settings = Settings(data_dir=Path("unused"), jwt_secret="s" * 32, node_id="t").replace(
        messages_per_second=200, message_burst=400
    )
    return Admission(settings, _refuse, Metrics("t"))


def test_spending_past_zero_is_a_wait_not_a_refusal() -> None:
    bucket = TokenBucket(200, 400, now=0.0)
    assert bucket.spend(0.0, 100) == 0.0  # 300 left
    wait = bucket.spend(0.0, 400)  # 100 in debt
    assert 0.5 < wait < 0.51  # (1 + 100) / 200 s, plus a millisecond
    assert not bucket.take(0.0)
    assert bucket.take(wait)  # after the wait: one whole message
    assert TokenBucket(0, 0, now=0.0).spend(0.0, 1e9) == 0.0  # no rate: no limit
    # Under one message is not charged: a flood of cheap requests is not made to
    # wait, its next message finds the bucket empty and it is closed.
    assert bucket.spend(wait, 0.5) == 0.0
    assert not bucket.take(wait)


def test_a_reconnection_inherits_what_the_last_connection_left() -> None:
    admission = _admission()
    first = admission.bucket(0.0, "198.51.100.7")
    assert all(first.take(0.0) for _ in range(400))
    assert not first.take(0.0)
    admission.bucket_closed("198.51.100.7", first, 0.0)
    second = admission.bucket(0.1, "198.51.100.7")
    assert sum(second.take(0.1) for _ in range(400)) == 20  # 0.1 s of refill, not a burst
    other = admission.bucket(0.1, "203.0.113.9")
    assert sum(other.take(0.1) for _ in range(400)) == 400  # another address: untouched
    # Ten seconds on, what was left has refilled: a whole burst again.
    admission.bucket_closed("198.51.100.7", second, 0.1)
    third = admission.bucket(10.0, "198.51.100.7")
    assert sum(third.take(10.0) for _ in range(400)) == 400


def test_an_address_whose_bucket_is_empty_is_refused_until_one_message_refills() -> None:
    admission = _admission()
    bucket = admission.bucket(time.monotonic(), "198.51.100.7")
    while bucket.take(time.monotonic()):
        pass  # over the rate: the connection is closed with 4429
    admission.bucket_closed("198.51.100.7", bucket, time.monotonic())
    with pytest.raises(LimitExceeded) as refused:
        admission.enter("198.51.100.7")
    assert refused.value.close_code == 4429
    admission.enter("203.0.113.9").release()  # other addresses are not affected
