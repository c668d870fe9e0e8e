"""Polling with a deadline: ask again and again until the answer is the expected one.

:func:`poll_until` awaits a fetch (an ack, a ``/stats`` read in a thread, ...) until its result
is accepted; :func:`until` does the same for a plain true-or-false check. Both give up at the
deadline with an AssertionError that says what was awaited and the last value seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: The default deadline of a poll, in seconds.
WAIT = 10.0
#: The default pause between two tries, in seconds.
INTERVAL = 0.05


async def poll_until(fetch: Callable[[], Awaitable[T]], accept: Callable[[T], bool], what: str,
                     timeout: float = WAIT, interval: float = INTERVAL, *,
                     max_interval: float | None = None,
                     retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """``await fetch()`` until ``accept`` takes its result; that result.

    The pause between tries is ``interval``; with ``max_interval`` it doubles after each
    pause up to that (a poll that is a client event, or an HTTP request, stays under the
    server's rate limits). An exception of ``retry_on`` raised by ``fetch`` counts as a
    result that is not accepted. After ``timeout`` seconds: an AssertionError naming
    ``what`` and the last result (or the last ``retry_on`` exception)."""
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value: Any
        try:
            value = await fetch()
        except retry_on as exc:
            value = exc
        if not isinstance(value, BaseException) and accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s; last: {value!r}")
        await asyncio.sleep(pause)
        if max_interval is not None:
            pause = min(pause * 2, max_interval)


async def until(check: Callable[[], bool], what: str, timeout: float = WAIT,
                interval: float = INTERVAL, *, in_thread: bool = False,
                retry_on: tuple[type[BaseException], ...] = ()) -> None:
    """Until ``check()`` is true, tried every ``interval``; an AssertionError naming ``what``
    after ``timeout`` seconds. ``in_thread`` runs a check that blocks (an HTTP request) in a
    worker thread, so that the event loop goes on meanwhile."""

    async def fetch() -> bool:
        return await asyncio.to_thread(check) if in_thread else check()

    await poll_until(fetch, bool, what, timeout, interval, retry_on=retry_on)
