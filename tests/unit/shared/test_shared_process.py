"""Process helpers: a start that a stop interrupts; the orphan guard's no-op outside ``up``."""

from __future__ import annotations

import asyncio
import ctypes
import sys
import threading

import pytest

from switchboard.shared import process


async def test_a_start_that_finishes_first_counts() -> None:
    stop = asyncio.Event()

    async def start() -> None:
        await asyncio.sleep(0)

    assert await asyncio.wait_for(process.unless_stopped(start(), stop), 5) is True


async def test_a_stop_during_a_start_cancels_it() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def start() -> None:
        try:
            await asyncio.sleep(60)  # a peer that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(process.unless_stopped(start(), stop), 5) is False
    assert cancelled.is_set()


async def test_a_failing_start_raises() -> None:
    async def start() -> None:
        raise RuntimeError("bind failed")

    with pytest.raises(RuntimeError, match="bind failed"):
        await asyncio.wait_for(process.unless_stopped(start(), asyncio.Event()), 5)


def _death_signal() -> int:
    signal = ctypes.c_int(-1)
    assert ctypes.CDLL(None).prctl(2, ctypes.byref(signal), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
    return signal.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_orphan_guard_does_nothing_outside_up(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = threading.active_count()
    monkeypatch.delenv(process.SUPERVISOR_ENV, raising=False)
    process.die_with_supervisor()
    monkeypatch.setenv(process.SUPERVISOR_ENV, "not-a-pid")
    process.die_with_supervisor()
    # This process is not up's child: it asked the kernel for nothing and watches nobody.
    assert _death_signal() == 0
    assert threading.active_count() == threads
