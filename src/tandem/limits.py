"""Rate and connection limits, pure: time is passed in, nothing sleeps.

``TokenBucket`` meters messages per connection; ``ConnectionCounter`` caps
concurrent connections per user and per IP. The gateway asks them and turns
a refusal into ``ERR_RATE_LIMITED`` / ``ERR_LIMIT_EXCEEDED``.
Must not import asyncio or network code.
"""

from __future__ import annotations

from collections import Counter

from tandem.errors import LimitExceeded

__all__ = ["ConnectionCounter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; one message costs one.

    A ``rate`` of 0 means no limit: every ``take`` succeeds.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available; False means "over the limit"."""
        if not self.rate:
            return True
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def spend(self, now: float, cost: float) -> float:
        """Spend ``cost`` tokens even past zero (a debt); the seconds to wait before
        the next message (0: none).

        For work whose cost is known only once done (a reply's size): the caller
        waits that long before it reads its client's next message, so a
        connection's expensive requests are slowed down, not refused. A cost
        under one message is not charged (the message itself was): a flood of
        cheap requests still finds the bucket empty and is refused.
        """
        if not self.rate or cost < 1.0:
            return 0.0
        self.take(now, 0.0)  # refill up to now
        self.tokens -= cost
        return self.wait(now)

    def wait(self, now: float) -> float:
        """Seconds until one message may pass (0: now), a millisecond more: a timer
        may fire a little early, and the caller asks again."""
        if not self.rate:
            return 0.0
        self.take(now, 0.0)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate + 0.001


class ConnectionCounter:
    """Counts open connections per user and per IP against their caps (0: no cap).

    A socket is counted for its address from the moment it is accepted
    (``acquire_ip``), and for its user once its token is verified
    (``acquire_user``); each is given back on its own.
    """

    def __init__(self, per_user: int, per_ip: int) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self.users: Counter[str] = Counter()
        self.ips: Counter[str] = Counter()

    def acquire_ip(self, ip: str) -> None:
        """Count one more connection from ``ip``, or raise ``LimitExceeded`` and count nothing."""
        if self.per_ip and self.ips[ip] >= self.per_ip:
            raise LimitExceeded(f"too many connections from this address (limit {self.per_ip})")
        self.ips[ip] += 1

    def acquire_user(self, user: str) -> None:
        """Count one more connection for ``user``, or raise ``LimitExceeded``."""
        if self.per_user and self.users[user] >= self.per_user:
            raise LimitExceeded(f"too many connections for this user (limit {self.per_user})")
        self.users[user] += 1

    def release_ip(self, ip: str) -> None:
        _release(self.ips, ip)

    def release_user(self, user: str) -> None:
        _release(self.users, user)


def _release(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
