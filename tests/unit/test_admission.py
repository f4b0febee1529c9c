"""``Admission``: whose forwarded address is believed, the caps, the one warning."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from tandem import Settings
from tandem.auth import Principal
from tandem.errors import AuthError, LimitExceeded
from tandem.metrics import Metrics
from tandem.server.admission import Admission, forwarded_client

PROXY = (ipaddress.ip_network("10.0.0.0/8"),)


async def _refuse(token: str) -> Principal:
    raise AuthError("no tokens in these tests")


def admission(**settings: object) -> Admission:
    values = Settings(data_dir=Path("unused"), jwt_secret="s" * 32, node_id="t")
    values = values.replace(**settings)
    return Admission(values, _refuse, Metrics("t"))


def test_no_trusted_proxy_means_the_peer() -> None:
    assert forwarded_client("10.1.1.1", ["6.6.6.6"], [], ()) == "10.1.1.1"


def test_an_untrusted_peer_s_headers_are_ignored() -> None:
    assert forwarded_client("8.8.8.8", ["6.6.6.6"], ["for=7.7.7.7"], PROXY) == "8.8.8.8"


def test_the_nearest_untrusted_hop_is_the_client() -> None:
    # The client may send its own X-Forwarded-For: only what the proxies appended counts.
    assert forwarded_client("10.0.0.2", ["1.1.1.1, 2.2.2.2, 10.0.0.9"], [], PROXY) == "2.2.2.2"
    assert forwarded_client("10.0.0.2", ["1.1.1.1", "2.2.2.2"], [], PROXY) == "2.2.2.2"


def test_forwarded_header_is_read_when_x_forwarded_for_is_absent() -> None:
    header = ['for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"']
    assert forwarded_client("10.0.0.2", [], header, PROXY) == "2001:db8::1"
    assert forwarded_client("10.0.0.2", [], ["for=192.0.2.60:80"], PROXY) == "192.0.2.60"


def test_a_hop_that_is_not_an_address_proves_nothing() -> None:
    assert forwarded_client("10.0.0.2", ["unknown"], [], PROXY) == "10.0.0.2"
    assert forwarded_client("10.0.0.2", ["1.1.1.1, _hidden"], [], PROXY) == "10.0.0.2"


def test_only_proxies_all_the_way_is_the_leftmost() -> None:
    assert forwarded_client("10.0.0.2", ["10.0.0.7, 10.0.0.8"], [], PROXY) == "10.0.0.7"


def test_the_per_address_cap_counts_sockets_before_they_authenticate() -> None:
    gate = admission(max_connections_per_ip=2)
    first, second = gate.enter("1.1.1.1"), gate.enter("1.1.1.1")
    with pytest.raises(LimitExceeded):
        gate.enter("1.1.1.1")
    first.release()
    first.release()  # twice is once
    third = gate.enter("1.1.1.1")
    assert gate.connections.ips == {"1.1.1.1": 2}
    second.release()
    third.release()
    assert gate.connections.ips == {}


def test_the_per_user_cap_counts_a_socket_once() -> None:
    gate = admission(max_connections_per_user=1)
    slot = gate.enter("1.1.1.1")
    slot.identify("ann")
    slot.identify("ann")  # a second document on the same socket
    other = gate.enter("2.2.2.2")
    with pytest.raises(LimitExceeded):
        other.identify("ann")
    other.release()
    slot.release()
    assert gate.connections.users == {} and gate.connections.ips == {}


def test_one_warning_when_many_sockets_share_an_address_and_no_proxy_is_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = admission(max_connections_per_ip=10)
    with caplog.at_level(logging.WARNING, logger="tandem.admission"):
        slots = [gate.enter("127.0.0.1") for _ in range(9)]
    warnings = [r for r in caplog.records if "trusted_proxies" in r.getMessage()]
    assert len(warnings) == 1 and "5 connections from 127.0.0.1" in warnings[0].getMessage()
    for slot in slots:
        slot.release()


def test_no_warning_once_proxies_are_trusted(caplog: pytest.LogCaptureFixture) -> None:
    gate = admission(max_connections_per_ip=10, trusted_proxies=("127.0.0.1",))
    with caplog.at_level(logging.WARNING, logger="tandem.admission"):
        for _ in range(9):
            gate.enter("127.0.0.1")
    assert not caplog.records


def test_tandem_token_without_a_secret_refuses_instead_of_inventing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tandem.cli import main

    for name in ("TANDEM_JWT_SECRET", "TANDEM_JWT_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["token", "--user", "u", "--data", str(tmp_path)]) == 2
    assert "no signing secret" in capsys.readouterr().err
    assert not (tmp_path / "dev-secret").exists()
