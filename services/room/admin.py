"""``/admin``'s room-service events: cluster stats, every socket, broadcast announcements."""

from __future__ import annotations

from typing import Any

from switchboard.shared.envelope import Emit, Reply, Request, reply_to
from switchboard.shared.partitions import ALL, IDENTITY
from switchboard.shared.service import on_event

from . import schemas
from .core import ADMIN, CHAT, GAME, MAIN, RoomCore, ok
from .model import iso, to_ms


class AdminEvents(RoomCore):
    """The operator events of ``/admin``."""

    # -- namespace /admin -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Connection and room counts of the whole cluster (registry + heartbeats)."""
        self._expire_empty()
        counts = self.registry.count_by_namespace()
        now = self.clock()
        rooms = [
            self._ordered(room.info(self.membership.members(room.id), show_users=False),
                          room.created_ms, room.id)
            for room in sorted(self.rooms.values(), key=lambda r: (r.created_ms, r.id))
        ]
        gateways = [
            {
                "id": gateway_id,
                "connections": sum(status.connections.values()),
                "uptime": round(max(0.0, now - status.started_at), 3),
            }
            for gateway_id, status in sorted(self.gateways.items())
        ]
        return {
            "totalConnections": len(self.registry),
            "mainConnections": counts[MAIN],
            "chatConnections": counts[CHAT],
            "gameConnections": counts[GAME],
            "adminConnections": counts[ADMIN],
            "namespaces": dict(sorted(counts.items())),
            "rooms": rooms,
            "gateways": gateways,
            "timestamp": iso(to_ms(now)),
        }

    @on_event(ADMIN, "get stats", schemas.TAKES_NOTHING, key=ALL)
    async def get_stats(self, request: Request) -> Reply:
        self._begin(request)
        stats = self.stats()
        return reply_to(request, ack=ok(**stats), emits=(Emit("stats", [stats]),))

    @on_event(ADMIN, "get sockets", schemas.TAKES_NOTHING, key=ALL)
    async def get_sockets(self, request: Request) -> Reply:
        """Every socket of the cluster, for operators: where it is, who, and over what."""
        self._begin(request)
        entries = sorted(self.registry.all(), key=lambda e: (e.connected_at, e.sid))
        sockets = [
            self._ordered({
                "socketId": e.sid,
                "ns": e.ns,
                "gateway": e.gateway,
                "userId": e.user_id,
                "username": e.username,
                "transport": e.transport or None,
                "connectedAt": iso(to_ms(e.connected_at)),
            }, e.connected_at, e.sid)
            for e in entries
        ]
        return reply_to(request, ack=ok(sockets=sockets))

    @on_event(ADMIN, "broadcast message", schemas.BROADCAST_MESSAGE, key=IDENTITY)
    async def broadcast_message(self, request: Request) -> Reply:
        self._begin(request)
        text = str(request.args[0]["message"])
        announcement = {
            "type": "announcement",
            "content": text,
            "from": "system",
            "timestamp": iso(self._now_ms()),
        }
        self.publisher.emit_namespace(MAIN, "system message", [announcement])
        return reply_to(request, ack=ok())
