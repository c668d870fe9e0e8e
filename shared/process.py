"""Process entry helpers: an event loop (uvloop when installed) whose SIGINT/SIGTERM set a
stop event, so every part shuts down through the same clean path."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

#: Allocations (net) between young-generation collections; CPython's default is 700.
GC_THRESHOLD = (50_000, 20, 10)


def tune_gc() -> None:
    """Make the cycle collector cheap for a long-running message loop.

    Profiled (perf, room service at 50 messages/s): with CPython's defaults a third of the
    process's CPU went to the garbage collector, re-traversing the same long-lived objects
    (modules, classes, functions of every imported library) at each older-generation
    collection, which the steady churn of short-lived messages, futures and tasks triggers
    every few milliseconds. What exists once imports are done is moved out of the collector's
    sight (``gc.freeze``), and the young generation is allowed to grow so that a message's
    objects are freed by reference counting before a collection looks at them. Cycles are
    still collected; only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


#: Set by ``switchboard up`` in its children's environment: the supervisor's pid.
SUPERVISOR_ENV = "SWITCHBOARD_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """In a child of ``switchboard up``: die when the supervisor dies, however it dies.

    A supervisor killed with SIGKILL (an OOM kill, a crashed terminal) runs no code, so its
    children must notice by themselves, or they live on holding their ports and the next
    ``up`` fails. On Linux the kernel sends SIGKILL to this process when its parent exits
    (``PR_SET_PDEATHSIG``); elsewhere a thread checks the parent every half second. SIGKILL,
    not SIGTERM: nothing acknowledged depends on a clean stop (SQLite commits before acks),
    and a child must not outlive its supervisor by a drain of ``--grace`` seconds.
    """
    raw = os.environ.get(SUPERVISOR_ENV, "")
    if not raw.isdigit():
        return
    parent = int(raw)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(1)
            return

    def watch() -> None:  # pragma: no cover - non-Linux only
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


async def unless_stopped(starting: Coroutine[Any, Any, Any], stop: asyncio.Event) -> bool:
    """Run ``starting`` unless ``stop`` is set first (then cancel it): False if stopped.

    A part that waits at start for its peers (the broker, the services) must still act on
    SIGTERM meanwhile: a supervisor stopping everything while a child starts would otherwise
    have to kill it after its grace.
    """
    task = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()  # its exception, if any
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)``; SIGINT or SIGTERM sets ``stop``."""
    tune_gc()

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(wrapper())
    else:
        uvloop.run(wrapper())
