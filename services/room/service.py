"""The room service: managed rooms, the socket registry, presence and history.

It owns namespace ``/`` (the chat application, except what moderation owns), ``/chat``, and
``/admin``'s ``get stats`` / ``broadcast message``. What it keeps, and where:

- **Rooms and messages** are persisted (:class:`~.store.RoomStore`: SQLite WAL, or
  PostgreSQL) and survive a restart. Room passwords are argon2id hashes.
- **Registry and membership** live in memory (:mod:`.registry`): they die with connections
  anyway, and after a restart the gateways send them back (SYNC), so they are never stale on
  disk.
- **Partitions** (``--room-instances``, docs/partitions.md): several instances share the
  work, each the only writer of the rooms whose id hashes to it (membership, ``maxUsers``,
  passwords, history) and of the presence of the users whose id hashes to it (registry,
  ``user online``/``user offline``, "user not online"). Each route names its key; the
  gateways send each event to its owner and gather the cluster-wide reads from all.

Choices the contract leaves open (all documented here, tested in tests/unit/services):

- Room lifecycle: ``create room`` only creates (the creator is not joined). A room left
  empty (leave, disconnect, lost gateway) is deleted, with its history, after
  ``room_empty_grace`` seconds (EVENTS.md: 60 by default) unless somebody joins it
  meanwhile: members who vanished with a crashed gateway come back to their room. A room
  nobody has joined yet (just created, or loaded at start and not reported by any gateway)
  is deleted after ``room_unjoined_ttl`` seconds. The sweep is lazy (run by every handler
  that can observe rooms), which is observably the same as a timer.
- ``userCount`` / ``maxUsers`` count member *sockets* (Socket.IO rooms are sets of sockets):
  a user in two tabs takes two places.
- Presence is per user: ``user online`` when a user's first ``/`` socket connects,
  ``user offline`` when its last one leaves (a second tab is not news to anyone).
- A refused join answers with a failed ack *and* a ``room error`` event, both in the one
  failed reply (the gateway applies a reply's ``emits`` after its failure too): they reach
  the client together and in that order, with no detour through the broker.
- ``get rooms`` and ``get room info`` answer with an ack, or with ``room list`` / ``room info``
  when the client passed no ack (their emits are ``unless_acked``: the gateway, which knows,
  drops them for an acked event); ``get stats`` acks ``{success, ...stats}`` and emits
  ``stats`` either way.
- ``room message`` is relayed, not saved (the contract saves only ``chat message`` and
  ``private message``); ``get history`` returns the room's saved ``chat message`` lines.
- ``/chat`` ``chat message`` without a roomId goes "to all of /chat", the sender included
  (EVENTS.md conventions); with a roomId, to the others in that room. ``/chat`` has no
  managed rooms, so its roomId names a plain gateway room (``user:*`` refused).
- ``stats`` adds ``mainConnections`` (namespace ``/``), ``namespaces`` (every count) and
  ``timestamp`` to the contract's fields; gateway ``connections`` come from heartbeats.
- Room ids starting with ``user:`` are refused: such a room would receive that user's
  private messages.
- Atomicity: every check-then-change runs without an ``await`` in between (storage calls are
  synchronous), so concurrent requests from any number of gateways see a consistent state.
  The only awaits are argon2 hashing/verification (in a worker thread), after which the room
  is looked up again.
"""

from __future__ import annotations

from .admin import AdminEvents
from .messages import MessageEvents
from .rooms import RoomEvents


class RoomService(RoomEvents, MessageEvents, AdminEvents):
    """The whole room service: its state (:class:`~.core.RoomCore`) and every handler."""

    name = "room"
