"""What the conformance tests share: the heartbeat ``up --conformance`` runs with, and a raw
WebSocket (no Socket.IO client) to send the official suites' frames byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect

#: ``up --conformance``'s Engine.IO heartbeat (what the official suites assert).
PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
#: Bound on any single wait for something that should simply happen (a reply, a handshake).
WAIT = 5.0


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[ClientConnection]:
    """A raw WebSocket: no compression, no WebSocket-level pings, any message size."""
    ws = await connect(url, compression=None, ping_interval=None, max_size=None,
                       open_timeout=WAIT, close_timeout=1)
    try:
        yield ws
    finally:
        await ws.close()


async def recv(ws: ClientConnection, timeout: float = WAIT) -> str | bytes:
    """The next message, whatever it is (the suite's ``waitFor(socket, "message")``)."""
    return await asyncio.wait_for(ws.recv(), timeout)
