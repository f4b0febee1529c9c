"""Identity providers end to end: a JWKS fetched from a URL, with a key rotation mid-session.

A real ``tandem serve`` fetches its keys from a real local HTTP server (the
identity provider's ``jwks_uri``). Half-way through, the provider rotates its
signing key; the server must take new tokens signed with the new key (it
re-fetches on the unknown ``kid``), keep the sessions it already admitted, stop
taking the retired key, and not let made-up ``kid`` values hammer the provider.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .harness import RawClient, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REFETCH_INTERVAL = 1.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class IdentityProvider:
    """A JWKS endpoint on 127.0.0.1 whose key set the test can change; counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                provider.fetches += 1
                body = json.dumps({"keys": provider.jwks()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def jwks(self) -> list[dict[str, Any]]:
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return out

    def token(self, kid: str, user: str, key: rsa.RSAPrivateKey | None = None) -> str:
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + 600, "docs": {"*": "write"}}
        return jwt.encode(claims, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    idp = IdentityProvider()
    idp.keys["2026-a"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        yield idp
    finally:
        idp.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, provider: IdentityProvider
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        Path(tmp_path_factory.mktemp("jwks")) / "data",
        env={
            "TANDEM_JWT_SECRET": "",
            "TANDEM_JWT_ALGORITHMS": "RS256",
            "TANDEM_JWT_JWKS_URL": provider.url,
            "TANDEM_JWT_JWKS_REFETCH_INTERVAL": str(REFETCH_INTERVAL),
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_jwks_key_rotation_in_the_middle_of_a_session(
    server: ServerProcess, provider: IdentityProvider
) -> None:
    assert provider.fetches == 1  # fetched once at start-up
    ada = await RawClient.connect(server, f"token={provider.token('2026-a', 'ada')}&doc=rot")
    await ada.expect("snapshot")
    await ada.send({"type": "op", "v": 0, "op": [{"insert": "before "}], "seq": 1})
    await ada.expect("ack")

    # The provider rotates: a new key signs from now on, the old one is retired.
    old_key = provider.keys["2026-a"]
    provider.keys = {"2026-b": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    time.sleep(REFETCH_INTERVAL)  # the provider's rotation is not the server's to rate-limit

    bob = await RawClient.connect(server, f"token={provider.token('2026-b', 'bob')}&doc=rot")
    snapshot = await bob.expect("snapshot")
    assert provider.fetches == 2  # the unknown kid made the server fetch the new key set
    assert snapshot["v"] == 1
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{server.url}/api/docs/rot",
            headers={"Authorization": f"Bearer {provider.token('2026-b', 'carol')}"},
        )
    assert response.status_code == 200, response.text

    # Ada's session was admitted with the old key and goes on: her edit reaches Bob.
    await ada.send({"type": "op", "v": 1, "op": [{"retain": 7}, {"insert": "after"}], "seq": 2})
    await ada.expect("ack")
    op = await bob.expect("op")
    assert op["v"] == 2

    # A new connection with the retired key is refused, with the reason.
    late = await RawClient.connect(server, f"token={provider.token('2026-a', 'ada', old_key)}")
    error = await late.expect("error")
    assert error["code"] == "ERR_UNAUTHORIZED"
    assert "unknown signing key '2026-a'" in error["message"]

    # Made-up kids cost the provider at most one fetch per interval, not one per token.
    before = provider.fetches
    for i in range(5):
        forged = provider.token(f"made-up-{i}", "mallory", old_key)
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{server.url}/api/docs/rot", headers={"Authorization": f"Bearer {forged}"}
            )
        assert response.status_code == 401
    assert provider.fetches - before <= 1
    for client in (ada, bob, late):
        await client.close()
