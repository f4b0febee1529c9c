"""``/livez``, ``/readyz`` and ``/healthz``: what probes and people ask of a node.

* ``/livez``: the process is alive and its event loop answers. Always 200; a
  wedged loop does not answer at all, and the probe's timeout says so. Restart
  the process when it fails (a Kubernetes liveness probe).
* ``/readyz``: this node can serve its clients now. 200 once it has started,
  while it is not shutting down and its storage answers within
  ``STORAGE_TIMEOUT``; 503 otherwise. Take the node out of the load balancer
  when it fails, never restart it for that (a readiness probe). The bus is not
  required: every node commits to the shared store itself, and while Redis is
  down a node keeps serving its own clients (other nodes' ops reach them
  through the store). ``readiness`` takes ``bus_required`` for a design in
  which a node cannot serve without its bus (forwarding to a document's owner);
  Tandem's nodes have none today, so the routes pass False.
* ``/healthz``: the detail, for people and dashboards: storage, bus, open
  documents, uptime; 503 when any dependency is down, the bus included.

``readiness`` is the decision, pure; the routes gather its inputs.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from tandem import __version__

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["STORAGE_TIMEOUT", "build_health_router", "readiness"]

#: Longest a probe waits for the store (a hung database is as bad as a down one).
STORAGE_TIMEOUT = 2.0


def readiness(
    *, started: bool, draining: bool, storage: str, bus: str, bus_required: bool
) -> str | None:
    """Why this node cannot serve now, or None when it can.

    ``storage`` and ``bus`` are ``"ok"``, ``"in-process"`` or ``"error: …"``.
    """
    if not started:
        return "starting"
    if draining:
        return "shutting down"
    if storage != "ok":
        return f"storage {storage}"
    if bus_required and bus.startswith("error"):
        return f"bus {bus}"
    return None


async def _storage(tandem: Context) -> str:
    try:
        await asyncio.wait_for(tandem.store.head("__healthz__"), STORAGE_TIMEOUT)
    except TimeoutError:
        return f"error: no answer within {STORAGE_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - report, don't raise
        return f"error: {type(exc).__name__}"
    return "ok"


def _bus(tandem: Context) -> str:
    if tandem.bus is None:
        return "in-process"
    return "ok" if getattr(tandem.bus, "connected", True) else "error: disconnected"


def build_health_router(tandem: Context) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/livez", summary="Liveness: the process answers (always 200)")
    async def livez() -> Response:
        return JSONResponse({"status": "alive", "node": tandem.settings.node_id})

    @router.get("/readyz", summary="Readiness: this node can serve its clients now")
    async def readyz() -> Response:
        bus = _bus(tandem)
        reason = readiness(
            started=tandem.started > 0,
            draining=tandem.draining,
            storage=await _storage(tandem),
            bus=bus,
            bus_required=False,  # every node commits to the shared store itself
        )
        body = {"status": "ready" if reason is None else f"not ready: {reason}", "bus": bus}
        return JSONResponse(body, status_code=200 if reason is None else 503)

    @router.get("/healthz", summary="Dependency health, in detail (for people)")
    async def healthz() -> Response:
        checks: dict[str, Any] = {"node": tandem.settings.node_id, "version": __version__}
        checks["storage"] = await _storage(tandem)
        checks["bus"] = _bus(tandem)
        healthy = checks["storage"] == "ok" and not checks["bus"].startswith("error")
        checks["documents"] = len(tandem.documents.sessions)
        checks["uptime"] = round(time.time() - tandem.started, 1) if tandem.started else 0
        checks["draining"] = tandem.draining
        return JSONResponse(checks, status_code=200 if healthy else 503)

    return router
