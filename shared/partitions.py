"""Who owns a partition key (a room id, a user id) among the live instances of a partitioned
service: pure computation, no I/O and no clock.

Ownership is rendezvous hashing (highest random weight): each instance has a weight for
each key, and the heaviest one owns the key. Whoever knows the same members computes the
same owner, with no table to ship around. A change of members moves only the keys it has
to: a departing instance's keys spread over the others, and a new instance takes the keys
it now outweighs (about one in ``n + 1``). Nothing else moves.

A :class:`Membership` carries an epoch that only grows. An instance accepts a write for a
key only under the epoch in which it owns that key (:meth:`Membership.accepts`). An owner
that is stale (frozen, cut off, or late to hear of a change) is refused instead of writing
beside the new owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from switchboard.shared.errors import ConfigError, ServiceUnavailable

#: A route key asking for every instance of the group, whose answers are merged.
ALL = "all"
#: A route key naming the sender (its user id, or its socket id when anonymous).
IDENTITY = "identity"


def key_of(spec: str, identity: str, args: list[Any]) -> str:
    """The partition key of a request, by its route's ``spec``, read from the raw
    arguments (gateway and owner compute it alike, before any cleaning):

    - ``identity``: the sender's;
    - ``arg.FIELD``: that field of the first argument, an object (``{roomId: "lobby"}``);
    - ``arg``: the first argument itself, a string or a number;
    - alternatives joined by ``|``, the first that is there: ``arg.roomId|arg`` for
      ``join room``, which takes ``{roomId: "lobby"}`` or ``"lobby"``.

    Ids are trimmed, as the owners' schemas trim them. A request without the named key (a
    ``chat message`` to the whole namespace, or a bad payload) goes to the sender's
    instance, which validates it as any owner does.
    """
    first: Any = args[0] if args else None
    for alternative in spec.split("|"):
        if alternative == "arg":
            value = first
        elif alternative.startswith("arg.") and isinstance(first, dict):
            value = first.get(alternative[4:])
        else:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return identity


def weight(member: str, key: str) -> int:
    """``member``'s weight for ``key``: 64 bits of BLAKE2b, so that every process (in any
    language) computes the same value. Python's ``hash`` is salted per process."""
    digest = hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Membership:
    """The live instances of one partitioned service, as of ``epoch``."""

    epoch: int
    members: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise ConfigError(f"membership epoch {self.epoch} is negative")
        if list(self.members) != sorted(set(self.members)):
            raise ConfigError(f"members {self.members!r} are not sorted and unique")
        bad = [m for m in self.members if not m or "\0" in m]
        if bad:
            raise ConfigError(f"member names may be neither empty nor contain NUL: {bad!r}")

    @classmethod
    def of(cls, members: Iterable[str], epoch: int = 0) -> Membership:
        return cls(epoch, tuple(sorted(set(members))))

    def owner(self, key: str) -> str:
        """The instance that owns ``key``; none live is :class:`ServiceUnavailable`."""
        if not self.members:
            raise ServiceUnavailable(f"no live instance owns {key!r}")
        # Ties (a 64-bit collision) go to the larger name, the same everywhere.
        return max(self.members, key=lambda member: (weight(member, key), member))

    def joined(self, member: str) -> Membership:
        """The next epoch, with ``member`` added."""
        if member in self.members:
            raise ConfigError(f"{member!r} is a member already")
        return Membership.of((*self.members, member), self.epoch + 1)

    def left(self, member: str) -> Membership:
        """The next epoch, without ``member``."""
        if member not in self.members:
            raise ConfigError(f"{member!r} is not a member")
        return Membership.of((m for m in self.members if m != member), self.epoch + 1)

    def moves(self, keys: Iterable[str], to: Membership) -> dict[str, tuple[str, str]]:
        """The keys whose owner differs in ``to``: key → (owner now, owner then)."""
        moved: dict[str, tuple[str, str]] = {}
        for key in keys:
            before, after = self.owner(key), to.owner(key)
            if before != after:
                moved[key] = (before, after)
        return moved

    def accepts(self, member: str, key: str, epoch: int) -> bool:
        """Whether ``member`` may write ``key`` for a request routed under ``epoch``: only
        at this epoch, and only as the owner (fencing)."""
        return epoch == self.epoch and bool(self.members) and self.owner(key) == member
