"""On how many gateways each user's sockets are: what moderation tells the gateways so that
together they never let a user past its per-user event limit (gateway.policing)."""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.shared.envelope import Session


class Spread:
    """Users' sockets by gateway; every method returns the users whose gateway count
    changed, with the new count (1 for a user down to one gateway or none)."""

    def __init__(self) -> None:
        self._where: dict[str, dict[str, set[str]]] = {}  # user → gateway → sids
        self._user_of: dict[str, tuple[str, str]] = {}  # sid → (user, gateway)

    def count(self, user: str) -> int:
        return max(len(self._where.get(user, ())), 1)

    def counted(self, sid: str) -> bool:
        return sid in self._user_of

    def add(self, session: Session) -> list[tuple[str, int]]:
        """Count the socket on its gateway; one counted elsewhere (recovered on another
        gateway, with its sid) moves here."""
        user = session.user_id
        if user is None:
            return []
        found = self._user_of.get(session.sid)
        if found == (user, session.gateway):
            return []
        changes = dict(self.remove(session.sid)) if found is not None else {}
        before = self.count(user)
        self._where.setdefault(user, {}).setdefault(session.gateway, set()).add(session.sid)
        self._user_of[session.sid] = (user, session.gateway)
        changes.update(self._changed(user, before))
        return list(changes.items())

    def remove(self, sid: str, gateway: str | None = None) -> list[tuple[str, int]]:
        """Forget the socket; with ``gateway``, only if it is counted there (a late
        DISCONNECT from the gateway it left does not forget it where it is now)."""
        found = self._user_of.get(sid)
        if found is None or (gateway is not None and found[1] != gateway):
            return []
        del self._user_of[sid]
        user, gateway = found
        before = self.count(user)
        gateways = self._where[user]
        gateways[gateway].discard(sid)
        if not gateways[gateway]:
            del gateways[gateway]
        if not gateways:
            del self._where[user]
        return self._changed(user, before)

    def replace_gateway(self, gateway: str, sessions: Iterable[Session]) -> list[tuple[str, int]]:
        """``gateway``'s sockets are exactly ``sessions`` (its SYNC). The users touched, with
        their count now (one that ends where it began is told again: harmless)."""
        touched = {user for user, _ in self.drop_gateway(gateway)}
        for session in sessions:
            if session.gateway == gateway:
                touched.update(user for user, _ in self.add(session))
        return [(user, self.count(user)) for user in sorted(touched)]

    def drop_gateway(self, gateway: str) -> list[tuple[str, int]]:
        sids = [sid for sid, (_, gw) in self._user_of.items() if gw == gateway]
        changes: dict[str, int] = {}
        for sid in sids:
            changes.update(self.remove(sid))
        return list(changes.items())

    def _changed(self, user: str, before: int) -> list[tuple[str, int]]:
        after = self.count(user)
        return [(user, after)] if after != before else []

    def spread_users(self) -> list[tuple[str, int]]:
        """Users on more than one gateway, with their count (for a snapshot)."""
        return [(user, len(gws)) for user, gws in self._where.items() if len(gws) > 1]
