"""A python-socketio client of namespace ``/`` for integration tests: it connects as a user
(a token for ``user_id``) on the client's default transports (polling, then the upgrade)
unless told others, and queues every event it gets, by name; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any, Self

import socketio

from tests.support.cluster import token

WAIT = 10.0


class QueuedPeer:
    """User ``user_id`` on ``/``; each event's data (a list for several arguments) is queued
    under the event's name."""

    def __init__(self, user_id: str, client: socketio.AsyncClient,
                 transports: list[str] | None = None) -> None:
        self.user_id = user_id
        self.client = client
        self.transports = transports
        self.queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.client.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.queues[event].put_nowait(args[0] if len(args) == 1 else list(args))

    @property
    def sid(self) -> str:
        return self.client.get_sid("/") or ""

    async def connect(self, url: str) -> Self:
        options: dict[str, Any] = {} if self.transports is None else {
            "transports": self.transports}
        await asyncio.wait_for(self.client.connect(
            url, auth={"token": token(self.user_id, self.user_id)}, wait_timeout=WAIT,
            **options), WAIT + 1)
        return self

    async def next(self, event: str, timeout: float = WAIT) -> Any:
        try:
            return await asyncio.wait_for(self.queues[event].get(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.user_id}: no {event!r} within {timeout}s") from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), WAIT)
