"""Security end to end on a real server: JWT attacks over WebSocket and REST, the Origin
allow-list, and no secret or token in the server's output (debug logging on).

The unit tests (tests/unit/test_auth.py) cover every JWT rule; these check a
representative few through the real gateway, where a mistake in wiring would show.
"""

from __future__ import annotations

import base64
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import harness
from .harness import SECRET, RawClient, ServerProcess, expired_token, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

AUDIENCE, ISSUER = "tandem-test", "https://issuer.test"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rs_server(
    tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey
) -> Iterator[ServerProcess]:
    """RS256 only, with an audience and issuer, and an Origin allow-list."""
    folder = tmp_path_factory.mktemp("rs")
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "public.pem").write_bytes(pem)
    process = ServerProcess(
        folder / "data",
        env={
            "TANDEM_JWT_SECRET": "",
            "TANDEM_JWT_ALGORITHMS": "RS256",
            "TANDEM_JWT_PUBLIC_KEY_FILE": str(folder / "public.pem"),
            "TANDEM_JWT_AUDIENCE": AUDIENCE,
            "TANDEM_JWT_ISSUER": ISSUER,
            "TANDEM_ALLOWED_ORIGINS": "https://good.example,http://localhost:3000",
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "ada",
        "iat": now,
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "docs": {"a/*": "write", "ro": "read"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def attacks(key: rsa.RSAPrivateKey) -> dict[str, str]:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = jwt.encode(claims(), key, algorithm="RS256")
    head, body, signature = good.split(".")
    forged = b64(json.dumps(claims(docs={"*": "write"})).encode())
    hs_head = b64(b'{"alg":"HS256","typ":"JWT"}')
    # HMAC keyed with the public key PEM: the classic algorithm confusion.
    confused = hmac.new(pem, f"{hs_head}.{body}".encode(), "sha256").digest()
    return {
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + body + ".",
        "hs256 with the public key": f"{hs_head}.{body}.{b64(confused)}",
        # Honestly expired: exp after iat, past the leeway; only the exp check refuses it.
        "expired": jwt.encode(
            claims(iat=int(time.time()) - 3600, exp=int(time.time()) - 60), key, algorithm="RS256"
        ),
        "not yet valid": jwt.encode(claims(nbf=int(time.time()) + 600), key, algorithm="RS256"),
        "wrong audience": jwt.encode(claims(aud="someone-else"), key, algorithm="RS256"),
        "wrong issuer": jwt.encode(claims(iss="https://evil.test"), key, algorithm="RS256"),
        "tampered payload": f"{head}.{forged}.{signature}",
        "missing sub": jwt.encode(claims(sub=None), key, algorithm="RS256"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "alg none",
        "hs256 with the public key",
        "expired",
        "not yet valid",
        "wrong audience",
        "wrong issuer",
        "tampered payload",
        "missing sub",
    ],
)
async def test_jwt_attacks_are_refused_over_websocket_and_rest(
    rs_server: ServerProcess, rsa_key: rsa.RSAPrivateKey, attack: str
) -> None:
    bad = attacks(rsa_key)[attack]
    client = await RawClient.connect(rs_server, f"token={bad}&doc=a/x")
    error = await client.expect("error")
    assert error["code"] == ("ERR_TOKEN_EXPIRED" if attack == "expired" else "ERR_UNAUTHORIZED")
    assert bad not in error["message"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with httpx.AsyncClient() as http:
        for response in (
            await http.get(
                f"{rs_server.url}/api/docs/a/x", headers={"Authorization": f"Bearer {bad}"}
            ),
            await http.post(
                f"{rs_server.url}/api/docs/a/x/ops",
                json={"type": "insert", "pos": 0, "text": "pwned"},
                headers={"Authorization": f"Bearer {bad}"},
            ),
        ):
            assert response.status_code == 401, response.text
            if attack == "expired":
                assert response.json()["detail"]["code"] == "ERR_TOKEN_EXPIRED"
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{rs_server.url}/api/docs/a/x", headers={"Authorization": f"Bearer {good}"}
        )
        assert response.status_code == 200 and "pwned" not in response.text


async def test_the_right_token_works_and_its_limits_hold(
    rs_server: ServerProcess, rsa_key: rsa.RSAPrivateKey
) -> None:
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    client = await RawClient.connect(rs_server, f"token={good}&doc=a/x")
    assert (await client.expect("snapshot"))["permission"] == "write"
    await client.send({"type": "join", "doc": "b/other", "ref": "b"})  # a token for a/* only
    assert (await client.expect("error"))["code"] == "ERR_FORBIDDEN"
    await client.send({"type": "join", "doc": "ro"})
    await client.expect("snapshot", doc="ro")
    await client.send({"type": "insert", "doc": "ro", "pos": 0, "text": "x", "seq": 1})
    assert (await client.expect("error"))["code"] == "ERR_READ_ONLY"
    await client.close()


@pytest.mark.parametrize("path", ["/collab?doc=a/x&", "/yjs/a/x?", "/hocuspocus?"])
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://good.example", True),
        ("http://localhost:3000", True),
        (None, True),
        ("https://evil.example", False),
        ("https://good.example.evil.example", False),
        ("null", False),
    ],
)
async def test_origin_allow_list(
    rs_server: ServerProcess,
    rsa_key: rsa.RSAPrivateKey,
    path: str,
    origin: str | None,
    allowed: bool,
) -> None:
    # Every WebSocket endpoint checks the Origin before the handshake.
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    url = f"{rs_server.ws_url}{path}token={good}"
    if allowed:
        async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            if path.startswith("/collab"):
                first = json.loads(await ws.recv())
                assert (first[0] if isinstance(first, list) else first)["type"] == "hello"
            elif path.startswith("/yjs"):
                assert isinstance(await ws.recv(), bytes)  # SyncStep1
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, origin=origin):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403


def _server_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str
) -> tuple[str, list[str]]:
    """Run a server at ``level``, present good and bad tokens every way; its output and them."""
    real_popen = subprocess.Popen

    def popen(args: list[str], **kw: Any) -> Any:
        return real_popen([a if a != "warning" else level for a in args], **kw)

    monkeypatch.setattr(harness.subprocess, "Popen", popen)
    server = ServerProcess(tmp_path / level)
    server.start()
    valid = token("ada")
    wrong = jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    expired = expired_token("ada")
    try:
        import asyncio

        async def provoke() -> None:
            for bad in (valid, wrong, expired):
                for kw in (
                    {"query": f"token={bad}&doc=d"},
                    {"query": "doc=d", "additional_headers": {"Authorization": f"Bearer {bad}"}},
                    {"query": "doc=d", "subprotocols": ["tandem.v1", f"bearer.{bad}"]},
                ):
                    client = await RawClient.connect(server, **kw)  # type: ignore[arg-type]
                    await client.next()
                    await client.close()
            async with httpx.AsyncClient() as http:
                for bad in (valid, wrong, expired):
                    await http.get(
                        f"{server.url}/api/docs/d", headers={"Authorization": f"Bearer {bad}"}
                    )

        asyncio.run(provoke())
    finally:
        server.stop()
    return server.output, [t.split(".")[2] for t in (valid, wrong, expired)]


def test_the_signing_secret_never_reaches_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, _ = _server_output(tmp_path, monkeypatch, "debug")
    assert "DEBUG" in output
    assert SECRET not in output


def test_tokens_never_reach_the_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output, signatures = _server_output(tmp_path, monkeypatch, "info")
    for signature in signatures:
        assert signature not in output, "a token is in the server output"


def test_the_redacting_filter_removes_tokens_from_log_records() -> None:
    import logging

    from tandem.redaction import TokenRedactingFilter

    jwt_text = token("ada")
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", f"/collab?token={jwt_text}&doc=d"),
        None,
    )
    assert TokenRedactingFilter().filter(record)
    assert jwt_text not in record.getMessage() and "doc=d" in record.getMessage()
    for line in (
        f"< authorization: Bearer {jwt_text}",
        f"< sec-websocket-protocol: tandem.v1, bearer.{jwt_text}",
    ):
        record = logging.LogRecord("x", logging.DEBUG, __file__, 1, line, None, None)
        TokenRedactingFilter().filter(record)
        assert jwt_text not in record.getMessage()
