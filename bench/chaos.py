"""The chaos run: ``python -m bench.chaos`` (``make chaos``; ``--quick`` is CI's short run).

``switchboard up --gateways 2`` (whose supervisor restarts what dies) behind a real HAProxy
(round robin, no stickiness), clients of python-socketio on their default options
(long-polling first, then the upgrade; reconnection on), and steady traffic: a sender's
acked room messages, private messages, a socket joining and leaving a room, presence
queries. Faults at random moments, round robin over the kinds: kill -9 of each gateway, the
broker, auth, moderation, room and game, and a freeze (SIGSTOP for longer than the
timeouts, then SIGCONT) of a gateway, the broker or the room service; with ``--kinds``, also
a graceful stop (``term:room-1``: SIGTERM, and the supervisor starts it again in place).
With ``--room-shards`` and ``--brokers``, room instances and brokers are faulted one by one.
With ``--room-spares 1`` (and ``--postgres``), ``add:room-N`` starts the spare instance
under load (``up`` on SIGUSR1), which takes the chaos room over live, and ``remove:room-N``
stops it (SIGUSR2: SIGTERM, not restarted), which hands the room back; the two alternate.

Every message is accounted for:

- **acked ⇒ in history**: every room message the sender got a success ack for is in the
  room's history at the end;
- **acked ⇒ delivered once** to every member *connected throughout*: whose one connection
  (joined to the room) spans the message's send and the second after its ack
  (:data:`SETTLE`); a member that was itself cut off is not "throughout";
- **in order, by the room's numbers**: within one connection, the ``seq`` of the room's
  messages a member receives never goes back (gaps are counted and shown: a message
  stored but never acked, its owner killed before it published, is missed by design);
- **heal**: after each fault, the time until everything is right again — the killed part
  restarted (an added one running, a removed one gone), every gateway routing to exactly
  the room instances running, every client reconnected and back in its room, ``get online
  users`` exactly the connected users, the room's ``userCount`` exactly its members (no
  ghost holds a seat), and a new message reaching every member;
- **no restart loops** (the supervisor restarted each part exactly as often as it was
  killed) and **bounded memory** (every part's RSS at the start and end).

It prints a table (per fault: injected, acked, lost, duplicated, heal p50 / max), writes
``results.json`` and exits 1 if anything acked was lost or duplicated, or a fault did not
heal within :data:`HEAL_BOUND`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio

from switchboard.services.moderation.config import Config as ModerationConfig
from switchboard.shared.partitions import Membership
from switchboard.shared.tokens import issue_token
from tests.support.balancer import find_haproxy, run_haproxy
from tests.support.cluster import http_get
from tests.support.ports import free_port_block
from tests.support.postgres import PostgresServer
from tests.support.upserver import part_name, process_table, spawn_up

ROOT = Path(__file__).resolve().parents[1]
SECRET = "chaos-secret-of-at-least-thirty-two-bytes"
CHURN = "churn"
#: A member is "connected throughout" a message if its connection spans the send and this
#: long after the ack (a message still in flight when the member was cut off is not owed).
SETTLE = 1.0
#: Seconds without a heartbeat before services drop a gateway (``up --gateway-timeout``).
GATEWAY_TIMEOUT = 2.0
#: Longest a fault may take to heal before it counts as not healed.
HEAL_BOUND = 60.0
#: A heal slower than this prints what was not right meanwhile (for CI's log).
SLOW_HEAL = 10.0
#: Bound on any single call of a client.
CALL = 5.0
#: The run keeps moderation's default limits, as users run them: each user sends at most
#: this share of the per-user (and per-socket) event rate, so the traffic is spread over
#: pools of senders and of askers (presence checks) big enough for the rates asked for.
_DEFAULTS = ModerationConfig()
USER_RATE = 0.75 * min(_DEFAULTS.event_limit, _DEFAULTS.user_event_limit) / \
    _DEFAULTS.event_window
#: Seconds between two checks of a heal (each asks twice and may send a probe).
HEAL_INTERVAL = 0.1
KILLS = ("gateway:0", "gateway:1", "broker", "auth", "moderation", "room", "game")
FREEZES = ("freeze:gateway:0", "freeze:broker", "freeze:room")
#: Graceful stops (SIGTERM; the supervisor restarts the part in place): only with --kinds,
#: e.g. term:room-1.
TERM = "term:"
#: A spare room instance started (``up`` on SIGUSR1), and stopped for good (SIGUSR2).
ADD, REMOVE = "add:", "remove:"


def target_of(kind: str) -> str:
    """The part a fault hits: ``freeze:room-1`` and ``term:room-1`` hit ``room-1``."""
    for prefix in ("freeze:", TERM, ADD, REMOVE):
        if kind.startswith(prefix):
            return kind[len(prefix):]
    return kind


def faults_of(kinds: tuple[str, ...], room_shards: int, brokers: int = 1) -> tuple[str, ...]:
    """``kinds`` with the room service as its instances (``room-0``...) when partitioned,
    and the broker as each of several (``broker-0``...)."""
    rooms = ["room"] if room_shards == 1 else [f"room-{i}" for i in range(room_shards)]
    names = ["broker"] if brokers == 1 else [f"broker-{i}" for i in range(brokers)]
    out = []
    for kind in kinds:
        if kind.endswith("room"):
            out += [kind.replace("room", r) for r in rooms]
        elif kind.endswith("broker"):
            out += [kind.replace("broker", b) for b in names]
        else:
            out.append(kind)
    return tuple(out)


def alternating(kinds: list[str]) -> list[str]:
    """``kinds`` with each spare's additions and removals put in turn, an addition first
    (a removal with no addition to go with it is dropped)."""
    out: list[str | None] = list(kinds)
    running: set[str] = set()
    for i, kind in enumerate(out):
        if kind is None or not kind.startswith((ADD, REMOVE)):
            continue
        target = target_of(kind)
        want = (REMOVE if target in running else ADD) + target
        if kind != want:
            j = next((j for j in range(i + 1, len(out)) if out[j] == want), None)
            if j is None:
                out[i] = None
                continue
            out[i], out[j] = out[j], out[i]
        running ^= {target}
    return [kind for kind in out if kind is not None]


def chaos_room(started: tuple[str, ...], spare: str | None) -> str:
    """The room the traffic goes to: one that moves to ``spare`` when it is added, from
    one of the ``started`` instances (where it goes back when the spare is removed)."""
    if spare is None:
        return "chaos"
    grown = Membership.of((*started, spare))
    return next(f"chaos-{n}" for n in range(10_000) if grown.owner(f"chaos-{n}") == spare)


#: python-socketio's own logs of every client (``clients.log`` in the working directory).
CLIENT_LOG = logging.getLogger("chaos.clients")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- clients
@dataclass
class Segment:
    """One connection of a client, from when it was back in its room to when it dropped."""

    start: float
    end: float | None = None


class Client:
    """A python-socketio client on its default options, rejoining its room after every
    reconnection, recording what it receives."""

    def __init__(self, url: str, user_id: str, room: str | None) -> None:
        self.url = url
        self.user_id = user_id
        self.room = room
        # Defaults (polling, upgrade, reconnection); only their logs go to a file.
        self.sio = socketio.AsyncClient(logger=CLIENT_LOG, engineio_logger=CLIENT_LOG)
        self.segments: list[Segment] = []
        self.received: dict[int, int] = {}  # message number -> times received
        #: The room's ``seq`` of each room message received, per connection (by ``drops``).
        self.seqs: dict[int, list[int]] = {}
        self.private: dict[int, int] = {}
        self.joined = asyncio.Event()
        self.last_refusal = ""
        self.drops = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("chat message", self._on_chat)
        self.sio.on("private message", self._on_private)

    async def start(self) -> None:
        token = issue_token(SECRET, self.user_id, self.user_id)
        await asyncio.wait_for(self.sio.connect(self.url, auth={"token": token}), 30)
        try:
            await asyncio.wait_for(self.joined.wait(), 30)
        except TimeoutError:
            raise RuntimeError(f"{self.user_id} not in {self.room}: connected "
                               f"{self.sio.connected}, last answer {self.last_refusal}") from None

    def _on_connect(self) -> None:
        task = asyncio.ensure_future(self._join(self.drops))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join(self, drops: int) -> None:
        """Join the room on this connection (until it drops: ``drops`` counts them)."""
        if self.room is None:
            self.segments.append(Segment(time.monotonic()))
            self.joined.set()
            return
        while self.drops == drops:
            try:
                ack = await self.sio.call("join room", {"roomId": self.room}, timeout=CALL)
            except Exception as exc:
                ack = exc
            if isinstance(ack, dict) and ack.get("success"):
                self.segments.append(Segment(time.monotonic()))
                self.joined.set()
                return
            self.last_refusal = repr(ack)
            await asyncio.sleep(0.2)

    def _on_disconnect(self, *_: Any) -> None:
        self.drops += 1
        self.joined.clear()
        if self.segments and self.segments[-1].end is None:
            self.segments[-1].end = time.monotonic()

    @staticmethod
    def _number(payload: Any) -> int | None:
        content = payload.get("content") if isinstance(payload, dict) else None
        if isinstance(content, str) and content.startswith("#"):
            with contextlib.suppress(ValueError):
                return int(content[1:])
        return None

    def _on_chat(self, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("roomId") == self.room \
                and isinstance(payload.get("seq"), int):
            self.seqs.setdefault(self.drops, []).append(payload["seq"])
        n = self._number(payload)
        if n is not None and payload.get("roomId") == self.room:
            self.received[n] = self.received.get(n, 0) + 1

    def _on_private(self, payload: Any) -> None:
        n = self._number(payload)
        if n is not None:
            self.private[n] = self.private.get(n, 0) + 1

    def throughout(self, start: float, end: float) -> bool:
        return any(s.start <= start and (s.end is None or s.end >= end) for s in self.segments)

    @property
    def in_room(self) -> bool:
        return bool(self.sio.connected and self.segments and self.segments[-1].end is None)

    def state(self) -> str:
        """For a report of a client that does not come back."""
        task = getattr(self.sio, "_reconnect_task", None)
        failure = task.exception() if task is not None and task.done() else None
        if failure is not None:
            CLIENT_LOG.error("%s: reconnection failed:\n%s", self.user_id, "".join(
                traceback.format_exception(failure)))
        return (f"connected {self.sio.connected}, engine.io {self.sio.eio.state}, "
                f"reconnecting {task is not None and not task.done()}, reconnect task "
                f"failure {failure!r}, drops {self.drops}, last refusal {self.last_refusal}")

    async def call(self, event: str, payload: Any) -> Any:
        return await self.sio.call(event, payload, timeout=CALL)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


@dataclass
class Sent:
    kind: str  # "room" or "private"
    n: int
    to: str | None
    sent: float
    acked: float | None = None
    message_id: str | None = None


@dataclass
class Fault:
    kind: str
    at: float
    pid: int | None  # None: an addition (nothing ran)
    heal: float | None = None
    not_healed: str = ""
    #: A gateway kill: the sockets it held, and when none of them was online any more.
    old_sids: frozenset[str] = frozenset()
    departed: float | None = None
    still_online: int = -1  #: of old_sids at the last look (-1: no look succeeded)
    #: What was not right yet, each time it changed: (seconds after the fault, why).
    trail: list[tuple[float, str]] = field(default_factory=list)
    #: Each gateway's count of replays started, at the last look (gateways_settled).
    gaps: list[int] = field(default_factory=list)


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    churn: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    presence: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    #: Messages answered with a failed ack, by error (a rate limit would show here).
    refused: dict[str, int] = field(default_factory=dict)

    def refusal(self, ack: Any) -> None:
        error = str(ack.get("error")) if isinstance(ack, dict) else type(ack).__name__
        self.refused[error] = self.refused.get(error, 0) + 1


class Pool:
    """Clients of one role taking turns, so that none of them goes over its user's limits."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self._turn = 0

    def any_connected(self) -> bool:
        return any(c.sio.connected for c in self.clients)

    def next(self, may: Any = None) -> Client:
        """The next connected one (that ``may(client)`` allows); the next one if none is."""
        for _ in range(len(self.clients)):
            self._turn = (self._turn + 1) % len(self.clients)
            client = self.clients[self._turn]
            if client.sio.connected and (may is None or may(client)):
                return client
        return self.clients[self._turn]


# ---------------------------------------------------------------------- the system
class Up:
    def __init__(self, workdir: Path, gateways: int, room_shards: int = 1,
                 brokers: int = 1, store: str | None = None, room_spares: int = 0) -> None:
        self.workdir = workdir
        self.base = free_port_block(gateways)
        self.ports = [self.base + i for i in range(gateways)]
        self.internal = free_port_block(21 + room_shards + room_spares)
        shutil.rmtree(workdir / "data", ignore_errors=True)  # a fresh history every run
        (workdir / "up.log").unlink(missing_ok=True)
        # The default limits (events per socket and user, connects per user, handshakes per
        # address): every client comes from 127.0.0.1 and reconnects after every gateway
        # fault, as a crowd behind one NAT address does.
        self.process, self.log = spawn_up(
            workdir, "--port", str(self.base), "--gateways", str(gateways),
            "--room-shards", str(room_shards), "--brokers", str(brokers),
            "--internal-port", str(self.internal), "--data-dir", str(workdir / "data"),
            "--jwt-secret", SECRET, "--gateway-timeout", str(GATEWAY_TIMEOUT),
            "--log-level", "warning", *(("--store", store) if store else ()),
            *(("--room-spares", str(room_spares)) if room_spares else ()))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"up exited:\n{self.output()[-3000:]}")
                with contextlib.suppress(OSError):
                    if http_get(f"http://127.0.0.1:{port}/health", 1)[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"up not ready:\n{self.output()[-3000:]}")
                time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[str, int]:
        """Part name (gateways as gateway:0, gateway:1) → pid."""
        found = {}
        for pid, (ppid, _, _) in process_table().items():
            if ppid == self.process.pid and (name := part_name(pid)) is not None:
                if name.startswith("gateway:"):
                    name = f"gateway:{self.ports.index(int(name.split(':')[1]))}"
                found[name] = pid
        return found

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for name, pid in self.children().items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) / 1024
        return out

    def restarts(self) -> dict[str, int]:
        """Restarts by the supervisor per part (its "exited ...; restarting" lines)."""
        counts: dict[str, int] = {}
        for line in self.output().splitlines():
            if " exited with code " in line and "; restarting in " in line:
                name = line.split(" exited with code ")[0].split()[-1]
                if name.startswith("gateway:"):
                    name = f"gateway:{self.ports.index(int(name.split(':')[1]))}"
                counts[name] = counts.get(name, 0) + 1
        return counts

    def stop(self) -> int | None:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


# ---------------------------------------------------------------------- the run
class Chaos:
    def __init__(self, args: argparse.Namespace, url: str, up: Up) -> None:
        self.args = args
        self.url = url
        self.up = up
        self.rng = random.Random(args.seed)
        self.run = Run()
        started = tuple(faults_of(("room",), args.room_shards))
        self.spare = f"room-{args.room_shards}" if args.room_spares else None
        self.room = chaos_room(started, self.spare)
        self.members = [Client(url, f"member{i}", self.room) for i in range(args.members)]
        # Messages, plus a heal's probes; history pages at the end go round them too.
        sending = args.rate + args.private_rate + 1 / HEAL_INTERVAL
        self.senders = Pool([Client(url, f"sender{i}", self.room)
                             for i in range(math.ceil(sending / USER_RATE))])
        self.churner = Client(url, "churner", None)
        # A heal's two questions per check, the departure watch's, and the steady one a second.
        asking = 2 / HEAL_INTERVAL + 1 / HEAL_INTERVAL + 1.0
        self.askers = Pool([Client(url, f"asker{i}", None)
                            for i in range(math.ceil(asking / USER_RATE))])
        self.observer = self.askers.clients[0]
        self.clients = [*self.members, *self.senders.clients, self.churner,
                        *self.askers.clients]
        self.stop = asyncio.Event()
        self.counter = 0

    async def main(self) -> None:
        await self.observer.start()
        for room, name in ((self.room, "Chaos"), (CHURN, "Churn")):
            ack = await self.observer.call("create room", {"roomId": room, "roomName": name})
            if not (isinstance(ack, dict) and ack.get("success")):
                raise RuntimeError(f"create room {room}: {ack}")
        await asyncio.gather(*(c.start() for c in self.clients if c is not self.observer))
        log(f"{len(self.clients)} clients in ({len(self.senders.clients)} senders, "
            f"{len(self.askers.clients)} askers, each under {USER_RATE:g} events/s); "
            "traffic starts")
        rss_start = await asyncio.to_thread(self.up.rss_mb)
        loops = [asyncio.create_task(loop()) for loop in
                 (self.send_room, self.send_private, self.churn, self.ask_presence)]
        await asyncio.sleep(1.0)  # steady traffic before the first fault
        kinds = self.schedule()
        for index, kind in enumerate(kinds):
            await asyncio.sleep(self.rng.uniform(*self.args.gap))
            fault = await self.inject(kind)
            await self.heal(fault)
            log(f"fault {index + 1}/{len(kinds)} {kind}: "
                + (f"healed in {fault.heal:.2f}s" if fault.heal is not None
                   else f"NOT healed ({fault.not_healed})"))
            if fault.heal is None or fault.heal > SLOW_HEAL:
                for after, why in fault.trail[-12:]:
                    log(f"    +{after:.2f}s not yet: {why}")
        await asyncio.sleep(1.0)
        self.stop.set()
        await asyncio.gather(*loops)
        await self.drain()
        self.history = await self.history_ids()
        self.rss = (rss_start, await asyncio.to_thread(self.up.rss_mb))

    def schedule(self) -> list[str]:
        kinds: list[str] = []
        while len(kinds) < self.args.faults:
            batch = ([*self.args.kinds] if self.args.kinds
                     else [*faults_of(KILLS, self.args.room_shards, self.args.brokers),
                           self.rng.choice(faults_of(FREEZES, self.args.room_shards,
                                                     self.args.brokers))])
            self.rng.shuffle(batch)
            kinds += batch
        return alternating(kinds)[: self.args.faults]

    # -- traffic -------------------------------------------------------------------------
    def next_number(self) -> int:
        self.counter += 1
        return self.counter

    async def paced(self, rate: float, send: Any) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        while not self.stop.is_set():
            if self.senders.any_connected():
                task = asyncio.create_task(send())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            due += 1 / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
        if tasks:
            await asyncio.wait(tasks, timeout=CALL + 1)

    async def send_room(self) -> None:
        async def one() -> None:
            n = self.next_number()
            record = Sent("room", n, None, time.monotonic())
            self.run.sent.append(record)
            with contextlib.suppress(Exception):
                ack = await self.senders.next().call("chat message",
                                                     {"roomId": self.room,
                                                      "content": f"#{n}"})
                if isinstance(ack, dict) and ack.get("success"):
                    record.acked, record.message_id = time.monotonic(), ack.get("messageId")
                else:
                    self.run.refusal(ack)

        await self.paced(self.args.rate, one)

    async def send_private(self) -> None:
        async def one() -> None:
            n = self.next_number()
            to = self.rng.choice(self.members)
            record = Sent("private", n, to.user_id, time.monotonic())
            self.run.sent.append(record)
            with contextlib.suppress(Exception):
                ack = await self.senders.next().call("private message", {
                    "to": to.user_id, "content": f"#{n}"})
                if isinstance(ack, dict) and ack.get("success"):
                    record.acked = time.monotonic()
                else:
                    self.run.refusal(ack)

        await self.paced(self.args.private_rate, one)

    async def churn(self) -> None:
        joined = False
        while not self.stop.is_set():
            event = "leave room" if joined else "join room"
            try:
                ack = await self.churner.call(event, {"roomId": CHURN})
            except Exception as exc:
                ack = {"error": repr(exc)}
            ok = isinstance(ack, dict) and ack.get("success") is True
            if ok:
                joined = not joined
            elif isinstance(ack, dict) and str(ack.get("error", "")).startswith("not a member"):
                joined = False  # a reconnection took it out: right, and said so
                ok = True
            self.run.churn["ok" if ok else "failed"] += 1
            await asyncio.sleep(1 / USER_RATE)

    async def ask_presence(self) -> None:
        while not self.stop.is_set():
            try:
                await self.askers.next().call("get online users", {})
                self.run.presence["ok"] += 1
            except Exception:
                self.run.presence["failed"] += 1
            await asyncio.sleep(1.0)

    # -- faults --------------------------------------------------------------------------
    async def inject(self, kind: str) -> Fault:
        target = target_of(kind)
        pid = (await asyncio.to_thread(self.up.children)).get(target)
        old: frozenset[str] = frozenset()
        if target.startswith("gateway:"):
            prefix = f"gw{self.up.ports[int(target.split(':')[1])]}-"
            old = frozenset(sid for c in self.clients
                            if (sid := c.sio.get_sid("/")) and sid.startswith(prefix))
        fault = Fault(kind, time.monotonic(), pid, old_sids=old)
        self.run.faults.append(fault)
        if kind.startswith((ADD, REMOVE)):
            # up starts its first idle spare, or stops the last one it started.
            os.kill(self.up.process.pid,
                    signal.SIGUSR1 if kind.startswith(ADD) else signal.SIGUSR2)
            return fault
        assert pid is not None, f"{target} is not running"
        if kind.startswith("freeze:"):
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(self.args.freeze)
            finally:
                os.kill(pid, signal.SIGCONT)
        else:
            os.kill(pid, signal.SIGTERM if kind.startswith(TERM) else signal.SIGKILL)
        return fault

    async def heal(self, fault: Fault) -> None:
        deadline = fault.at + HEAL_BOUND
        target = target_of(fault.kind)
        # Departure is its own measure, watched on its own so a slow heal check (a call
        # waiting out its timeout) does not delay when the departure is seen.
        watch = asyncio.create_task(self.watch_departure(fault))
        probe = 0
        why = "?"
        try:
            while time.monotonic() < deadline:
                why = await self.unhealed(fault, target, probe)
                if not why:
                    fault.heal = time.monotonic() - fault.at
                    break
                if not fault.trail or fault.trail[-1][1] != why:
                    fault.trail.append((time.monotonic() - fault.at, why))
                probe += 1
                await asyncio.sleep(HEAL_INTERVAL)
            else:
                fault.not_healed = why
        finally:
            await watch

    async def watch_departure(self, fault: Fault) -> None:
        if not fault.old_sids or fault.kind.startswith("freeze:"):
            return
        watch_until = fault.at + GATEWAY_TIMEOUT + 5
        while fault.departed is None and time.monotonic() < watch_until:
            await self.check_departed(fault)
            await asyncio.sleep(HEAL_INTERVAL)

    async def check_departed(self, fault: Fault) -> None:
        """Note when none of the killed gateway's sockets is in presence any more, asked
        through a client that is connected elsewhere (one on the dead gateway would only
        time out)."""
        asker = self.askers.next(lambda c: c.sio.get_sid("/") not in fault.old_sids)
        try:
            online = await asyncio.wait_for(asker.call("get online users", {}), 1.0)
        except Exception:
            return
        sids = {u.get("socketId") for u in online.get("users", [])}
        fault.still_online = len(sids & fault.old_sids)
        if not fault.still_online:
            fault.departed = time.monotonic() - fault.at

    def gateways_settled(self, fault: Fault, children: dict[str, int]) -> str:
        """"" once every gateway (one ``/stats`` each) routes rooms to exactly the room
        instances running (with leases, a dead one is dropped and a new one added as the
        leases change), hears every broker and has no replay under way, and started none
        since the last look (a new broker's beats start replays within a beat): what a
        broker lost is then back. Until then, a next fault could take a journal that a
        replay still needs (two faults at once, which this run is not)."""
        running = sorted(name for name in children
                         if name == "room" or name.startswith("room-"))
        gaps = []
        for port in self.up.ports:
            status, _, body = http_get(f"http://127.0.0.1:{port}/stats", 2)
            if status != 200:
                return f"gateway {port} /stats {status}"
            stats = json.loads(body)
            group = stats["groups"].get("room")
            if group is not None and sorted(group["members"]) != running:
                return f"gateway {port} routes rooms to {group['members']}, not {running}"
            if not all(broker["up"] for broker in stats["brokers"]):
                return f"gateway {port} does not hear every broker"
            if stats["continuity"]["replaying"]:
                return f"gateway {port} replaying"
            gaps.append(stats["continuity"]["gaps"])
        seen, fault.gaps = fault.gaps, gaps
        return "" if seen == gaps else "replays may be starting"

    async def unhealed(self, fault: Fault, target: str, probe: int) -> str:
        """What is not right yet ("" when all is)."""
        children = await asyncio.to_thread(self.up.children)
        if fault.kind.startswith(REMOVE):
            if target in children:
                return f"{target} still running"
        elif target not in children or (not fault.kind.startswith("freeze:")
                                        and children[target] == fault.pid):
            return f"{target} not {'started' if fault.kind.startswith(ADD) else 'restarted'}"
        try:
            settling = await asyncio.to_thread(self.gateways_settled, fault, children)
        except OSError as exc:
            settling = f"a gateway's /stats: {exc}"
        if settling:
            return settling
        for client in self.clients:
            if not client.sio.connected or (client.room is not None and not client.in_room):
                return f"{client.user_id} not back ({client.state()})"
        try:
            online = await self.askers.next().call("get online users", {})
            ids = sorted(u["id"] for u in online["users"])
            expected = sorted(c.user_id for c in self.clients)
            if ids != expected:
                return f"presence {ids} != {expected}"
            info = await self.askers.next().call("get room info", self.room)
            members = sum(1 for c in self.clients if c.room == self.room)
            if not isinstance(info, dict) or info.get("userCount") != members:
                return f"userCount {info and info.get('userCount')} != {members}"
            n = self.next_number()
            record = Sent("room", n, None, time.monotonic())
            self.run.sent.append(record)
            ack = await self.senders.next().call("chat message",
                                                 {"roomId": self.room, "content": f"#{n}"})
            if not (isinstance(ack, dict) and ack.get("success")):
                return f"probe not acked: {ack}"
            record.acked, record.message_id = time.monotonic(), ack.get("messageId")
            probe_deadline = time.monotonic() + 5
            while time.monotonic() < probe_deadline:
                if all(n in m.received for m in self.members):
                    return ""
                await asyncio.sleep(0.05)
            return "probe not delivered to every member"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    # -- accounting ----------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait (bounded) until nothing owed is still missing."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.missing():
            await asyncio.sleep(0.1)

    def owed(self) -> list[tuple[Sent, Client]]:
        pairs = []
        for record in self.run.sent:
            if record.acked is None:
                continue
            receivers = (self.members if record.kind == "room"
                         else [m for m in self.members if m.user_id == record.to])
            for member in receivers:
                if member.throughout(record.sent, record.acked + SETTLE):
                    pairs.append((record, member))
        return pairs

    def missing(self) -> list[tuple[Sent, Client]]:
        return [(r, m) for r, m in self.owed() if self.count(r, m) == 0]

    @staticmethod
    def count(record: Sent, member: Client) -> int:
        store = member.received if record.kind == "room" else member.private
        return store.get(record.n, 0)

    async def history_ids(self) -> set[str]:
        ids: set[str] = set()
        before: str | None = None
        for _ in range(10_000):
            query: dict[str, Any] = {"roomId": self.room, "limit": 100}
            if before is not None:
                query["before"] = before
            page = await self.senders.next().call("get history", query)
            messages = page.get("messages", []) if isinstance(page, dict) else []
            if not messages:
                break
            ids.update(m["id"] for m in messages)
            before = messages[0]["id"]
            if len(messages) < 100:
                break
        return ids

    def fault_of(self, at: float) -> str:
        """The fault whose aftermath ``at`` falls in (the last one injected before it)."""
        kind = "(before any fault)"
        for fault in self.run.faults:
            if fault.at > at:
                break
            kind = fault.kind
        return kind

    def report(self) -> dict[str, Any]:
        rows: dict[str, dict[str, Any]] = {}

        def row(kind: str) -> dict[str, Any]:
            return rows.setdefault(kind, {"faults": 0, "acked": 0, "lost": 0,
                                          "duplicated": 0, "heals": [], "not_healed": 0})

        for fault in self.run.faults:
            r = row(fault.kind)
            r["faults"] += 1
            if fault.heal is None:
                r["not_healed"] += 1
            else:
                r["heals"].append(fault.heal)
        for record in self.run.sent:
            if record.acked is not None:
                row(self.fault_of(record.acked))["acked"] += 1
        owed = self.owed()
        for record, member in owed:
            count = self.count(record, member)
            r = row(self.fault_of(record.acked or 0))
            if count == 0:
                r["lost"] += 1
            elif count > 1:
                r["duplicated"] += count - 1
        room_acked = [r for r in self.run.sent if r.kind == "room" and r.acked is not None]
        not_in_history = [r.n for r in room_acked if r.message_id not in self.history]
        restarts = self.up.restarts()
        kills: dict[str, int] = {}
        for fault in self.run.faults:
            if not fault.kind.startswith(("freeze:", ADD, REMOVE)):
                target = target_of(fault.kind)
                kills[target] = kills.get(target, 0) + 1
        departures = sorted(f.departed for f in self.run.faults if f.departed is not None)
        unmeasured = sum(1 for f in self.run.faults if f.old_sids and f.departed is None
                         and not f.kind.startswith("freeze:"))
        # The room's numbers each member received, connection by connection.
        streams = [seqs for member in self.members for seqs in member.seqs.values()]
        reordered = sum(1 for seqs in streams for a, b in itertools.pairwise(seqs)
                        if b <= a)
        gaps = sum(max(seqs) - min(seqs) + 1 - len(set(seqs)) for seqs in streams if seqs)
        return {
            "rows": rows,
            "seq": {"connections": len(streams), "received": sum(map(len, streams)),
                    "reordered": reordered, "missed": gaps},
            "departures": departures,
            "faults": [{"kind": f.kind, "heal": f.heal, "departed": f.departed,
                        "old_sockets": len(f.old_sids), "still_online": f.still_online,
                        "not_healed": f.not_healed,
                        "trail": f.trail} for f in self.run.faults],
            "departures_unmeasured": unmeasured,
            "owed": len(owed),
            "acked": len(room_acked) + sum(1 for r in self.run.sent
                                           if r.kind == "private" and r.acked is not None),
            "sent": len(self.run.sent),
            "not_in_history": not_in_history,
            "restarts": restarts,
            "kills": kills,
            "churn": self.run.churn,
            "presence": self.run.presence,
            "refused": self.run.refused,
            "rss_start": self.rss[0],
            "rss_end": self.rss[1],
            # What was lost, to look for in the logs: message, member, and when.
            "lost": [{"kind": r.kind, "n": r.n, "to": r.to, "member": m.user_id,
                      "acked_at": time.strftime("%H:%M:%S", time.localtime(
                          (r.acked or 0) + time.time() - time.monotonic())),
                      "fault": self.fault_of(r.acked or 0)}
                     for r, m in self.missing()],
        }


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result["rows"]
    print(f"\n## Chaos run: {args.faults} faults, seed {args.seed}, {args.rate:g} acked room "
          f"messages/s + {args.private_rate:g} private/s, {args.members} members, "
          f"2 gateways behind HAProxy"
          + (f", {args.room_shards} room instances" if args.room_shards > 1 else "")
          + (f" and {args.room_spares} spare" if args.room_spares else "")
          + (f", {args.brokers} brokers" if args.brokers > 1 else "")
          + (", store in PostgreSQL" if args.postgres else "") + "\n")
    print("| fault | injected | acked | lost | duplicated | heal p50 s | heal max s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    order = sorted(rows, key=lambda k: (k.startswith("("), k))
    total = {"faults": 0, "acked": 0, "lost": 0, "duplicated": 0, "heals": [],
             "not_healed": 0}
    for kind in order:
        r = rows[kind]
        for key in ("faults", "acked", "lost", "duplicated", "not_healed"):
            total[key] += r[key]
        total["heals"] += r["heals"]
        print(_line(kind, r))
    print(_line("**all**", total))
    print(f"\n- {result['owed']} (message, member connected throughout) pairs owed; "
          f"{result['acked']} of {result['sent']} messages acked (the rest failed cleanly "
          "during faults)")
    print(f"- acked room messages missing from history: {len(result['not_in_history'])}")
    seq = result["seq"]
    print(f"- the room's `seq` as members received it: {seq['received']} messages over "
          f"{seq['connections']} connections, {seq['reordered']} out of order or repeated, "
          f"{seq['missed']} numbers missed within a connection (stored, not owed: their "
          "senders got no ack)")
    print(f"- restarts by the supervisor: {result['restarts']} (kills: {result['kills']})")
    print(f"- joins/leaves: {result['churn']}; presence queries: {result['presence']}; "
          f"failed acks by error: {result['refused']}")
    departures = result["departures"]
    if departures or result["departures_unmeasured"]:
        print(f"- gateway kills: the dead gateway's sockets left presence after p50 "
              f"{statistics.median(departures) if departures else float('nan'):.2f} s, max "
              f"{departures[-1] if departures else float('nan'):.2f} s ({len(departures)} "
              f"measured, {result['departures_unmeasured']} not seen to leave; bound: "
              f"--gateway-timeout + 1 s = {GATEWAY_TIMEOUT + 1:g} s)")
    rss = " ".join(f"{name} {result['rss_start'].get(name, 0):.0f}→{mb:.0f}"
                   for name, mb in sorted(result["rss_end"].items()))
    print(f"- RSS MB start→end: {rss}")


def _line(kind: str, r: dict[str, Any]) -> str:
    heals = sorted(r["heals"])
    p50 = f"{statistics.median(heals):.2f}" if heals else "-"
    worst = f"{heals[-1]:.2f}" if heals else "-"
    if r["not_healed"]:
        worst += f" ({r['not_healed']} not healed)"
    return (f"| {kind} | {r['faults']} | {r['acked']} | {r['lost']} | {r['duplicated']} | "
            f"{p50} | {worst} |")


def verdict(result: dict[str, Any]) -> list[str]:
    problems = []
    rows = result["rows"].values()
    if (lost := sum(r["lost"] for r in rows)):
        problems.append(f"{lost} acked deliveries lost")
    if (dup := sum(r["duplicated"] for r in rows)):
        problems.append(f"{dup} duplicated")
    if (unhealed := sum(r["not_healed"] for r in rows)):
        problems.append(f"{unhealed} faults not healed")
    if result["seq"]["reordered"]:
        problems.append(f"{result['seq']['reordered']} room messages out of order (seq)")
    if result["not_in_history"]:
        problems.append(f"{len(result['not_in_history'])} acked messages not in history")
    late = [d for d in result["departures"] if d > GATEWAY_TIMEOUT + 1]
    if late or result["departures_unmeasured"]:
        problems.append(f"a dead gateway's sockets stayed in presence past "
                        f"{GATEWAY_TIMEOUT + 1:g} s: {late} "
                        f"(+{result['departures_unmeasured']} never seen to leave)")
    for name, count in result["restarts"].items():
        if count != result["kills"].get(name, 0):
            problems.append(f"{name} restarted {count} times for "
                            f"{result['kills'].get(name, 0)} kills")
    return problems


async def amain(args: argparse.Namespace) -> int:
    binary = find_haproxy()
    if binary is None:
        log("haproxy is not installed (scripts/ensure-system-deps haproxy)")
        return 2
    workdir = Path(args.out).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "clients.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    CLIENT_LOG.addHandler(handler)
    CLIENT_LOG.setLevel(logging.INFO)
    CLIENT_LOG.propagate = False
    postgres = None
    if args.postgres:
        postgres = PostgresServer(Path(tempfile.mkdtemp(prefix="switchboard-chaos-pg-")),
                                  durable=True)
        postgres.start()
    try:
        return await _run(args, binary, workdir,
                          postgres.fresh_url() if postgres is not None else None)
    finally:
        if postgres is not None:
            postgres.stop()


async def _run(args: argparse.Namespace, binary: str, workdir: Path,
               store: str | None) -> int:
    up = Up(workdir, 2, args.room_shards, args.brokers, store, args.room_spares)
    try:
        await asyncio.to_thread(up.wait_ready)
        with run_haproxy(binary, workdir, up.ports) as url:
            chaos = Chaos(args, url, up)
            try:
                await chaos.main()
            finally:
                for client in chaos.clients:
                    await client.stop()
            result = chaos.report()
    finally:
        code = up.stop()
        log(f"up stopped ({code})")
    (workdir / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print_table(result, args)
    problems = verdict(result)
    print("\n" + ("**FAILED**: " + "; ".join(problems) if problems else "**ok**: nothing "
                  "acked was lost or duplicated; every fault healed; no restart loops"))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--faults", type=int, default=70, help="faults to inject")
    p.add_argument("--quick", action="store_true",
                   help="CI's short run: one of each kind and one freeze (8 faults)")
    p.add_argument("--rate", type=float, default=30.0,
                   help="acked room messages per second (from a pool of senders, each within "
                   "the default per-user limit)")
    p.add_argument("--private-rate", type=float, default=5.0,
                   help="private messages per second")
    p.add_argument("--members", type=int, default=6, help="members of the room")
    p.add_argument("--freeze", type=float, default=4.0,
                   help="seconds a frozen process stays stopped (above --gateway-timeout 2)")
    p.add_argument("--gap", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"),
                   help="seconds of steady traffic before each fault (uniform)")
    p.add_argument("--kinds", type=lambda v: v.split(","), default=None,
                   help="only these faults, comma-separated (e.g. broker,freeze:room; "
                   "term:room is a graceful stop, SIGTERM); "
                   f"default: all of {', '.join(KILLS + FREEZES)}")
    p.add_argument("--room-shards", type=int, default=1,
                   help="room instances (rooms and presence partitioned); their kills and "
                   "freezes are room-0, room-1... (default: %(default)s)")
    p.add_argument("--brokers", type=int, default=1,
                   help="brokers (publications spread by topic); their kills and freezes are "
                   "broker-0, broker-1... (default: %(default)s)")
    p.add_argument("--room-spares", type=int, default=0, choices=(0, 1),
                   help="a spare room instance (up --room-spares) for the faults "
                   "add:room-N and remove:room-N (N: --room-shards); needs --postgres")
    p.add_argument("--postgres", action="store_true",
                   help="keep rooms, history, bans and mutes in PostgreSQL (--store): a "
                   "durable server of its own from Debian's package, removed afterwards")
    p.add_argument("--seed", type=int, default=15, help="random seed (faults and moments)")
    p.add_argument("--out", default=str(ROOT / "test-output" / "chaos"),
                   help="working directory (logs, results.json)")
    args = p.parse_args(argv)
    if args.room_shards < 1:
        p.error("--room-shards must be at least 1")
    if not 1 <= args.brokers <= 5:
        p.error("--brokers must be 1-5")
    if args.room_spares and not args.postgres:
        p.error("--room-spares needs --postgres (with SQLite, nothing moves)")
    spare = f"room-{args.room_shards}"
    for kind in args.kinds or ():
        if kind.startswith((ADD, REMOVE)) and (not args.room_spares
                                               or target_of(kind) != spare):
            p.error(f"{kind}: the spare is {spare}, with --room-spares 1")
    if args.quick:
        args.faults = len(faults_of(KILLS, args.room_shards, args.brokers)) + 1
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
