"""Polling with a deadline: ask again and again until the answer is the expected one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def poll_until(fetch: Callable[[], Awaitable[T]], accept: Callable[[T], bool], what: str,
                     timeout: float, interval: float,
                     retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """``fetch()`` every ``interval`` until ``accept`` says yes; an AssertionError with the
    last value (or the last ``retry_on`` exception ``fetch`` raised) at the deadline."""
    deadline = time.monotonic() + timeout
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
        await asyncio.sleep(interval)
