"""Where tokens travel and where they must never appear.

* In production mode (a configured secret) ``tandem serve`` prints no token at
  start-up and logs none afterwards, at INFO and at DEBUG, whatever clients send:
  the whole captured stdout and stderr is scanned for anything shaped like a JWT.
  Development mode prints one, which shows that the scan finds a JWT when there is one.
* The Python client authenticates with no token in its URL, as seen by the
  server: every ``/collab`` request line the server logs has no ``token=``
  (the JS client's twin is in ``client/test/server.test.mjs``).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from tandem.client import TandemClient

from .harness import RawClient, ServerProcess, expired_token, token

pytestmark = [pytest.mark.integration]

#: Three base64url segments, the first two JSON objects ("eyJ" is base64 of '{"').
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def run_server(
    tmp_path: Path, level: str, *args: str, env: dict[str, str] | None = None, clients: bool = True
) -> str:
    """Start ``tandem serve``, present tokens every way, stop it; everything it printed."""
    server = ServerProcess(tmp_path / level, log_level=level, args=args, env=env)
    server.start()
    try:
        if clients:
            asyncio.run(present_tokens(server))
    finally:
        server.stop()
    return server.output


async def present_tokens(server: ServerProcess) -> None:
    client = TandemClient(f"{server.ws_url}/collab", token("py"), client_id="py-transport")
    try:
        handle = await client.join("transport", 10)
        handle.insert(0, "hi")
        await handle.synced(10)
    finally:
        await client.close()
    for credential in (token("raw"), expired_token("late"), "not-a-jwt"):
        for way in (
            {"query": f"token={credential}&doc=d"},
            {"query": "doc=d", "additional_headers": {"Authorization": f"Bearer {credential}"}},
            {"query": "doc=d", "subprotocols": ["tandem.v1", f"bearer.{credential}"]},
        ):
            raw = await RawClient.connect(server, **way)  # type: ignore[arg-type]
            await raw.next()
            await raw.close()
        async with httpx.AsyncClient() as http:
            await http.get(
                f"{server.url}/api/docs/d", headers={"Authorization": f"Bearer {credential}"}
            )


@pytest.mark.parametrize("level", ["info", "debug"])
def test_production_prints_and_logs_no_token(tmp_path: Path, level: str) -> None:
    output = run_server(tmp_path, level)
    assert "Tandem" in output and "none printed" in output
    assert JWT.findall(output) == [], "a JWT is in the server's output"


def test_development_mode_prints_a_token_on_stdout(tmp_path: Path) -> None:
    """The positive control of the scan above: a dev server does print one."""
    output = run_server(tmp_path, "warning", "--dev", env={"TANDEM_JWT_SECRET": ""}, clients=False)
    assert len(JWT.findall(output)) == 2  # the token line and the wscat example
    assert "token=" not in output.split("try:")[1].splitlines()[0]


def test_the_python_client_sends_no_token_in_its_url(tmp_path: Path) -> None:
    output = run_server(tmp_path, "info")
    requests = [line for line in output.splitlines() if '"WebSocket /collab' in line]
    mine = [line for line in requests if "client=py-transport" in line]
    assert mine and all("[accepted]" in line for line in mine)
    assert not any("token" in line for line in mine), mine
    # The server does log a token sent in the URL (redacted), so the check above can fail.
    assert any("token=[redacted]" in line for line in requests)
