"""pycrdt-websocket's ASGI server under uvicorn, documents (rooms) in memory.

The room is the URL path. Usage: python pycrdt_server.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer

websocket_server = WebsocketServer(auto_clean_rooms=False)
asgi = ASGIServer(websocket_server)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        await receive()
        async with websocket_server:
            await send({"type": "lifespan.startup.complete"})
            await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asgi(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        ws_per_message_deflate=False,
    )
