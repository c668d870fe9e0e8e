"""Payload schemas of the events the moderation service owns (see :mod:`shared.schema`).

=========================  ===========================================================
``/admin`` ``kick user``   ``[{socketId, reason?}]``  (a plain string = socketId)
``ban user``               ``[{userId, reason, seconds?}]``  (no seconds: permanent)
``mute user``              ``[{userId, seconds}]``
=========================  ===========================================================
"""

from __future__ import annotations

from typing import Annotated

from pydantic import model_validator

from switchboard.shared.schema import (
    MAX_SECONDS,
    MAX_SOCKET_ID,
    EventSchema,
    Payload,
    UserId,
    error,
    identifier,
    integer,
    text,
)


class KickUser(Payload):
    socketId: Annotated[str, identifier(MAX_SOCKET_ID, charset=False)]
    reason: Annotated[str | None, text("reason", optional=True)] = None

    @model_validator(mode="after")
    def _socket_id_names_a_gateway(self) -> KickUser:
        gateway, dot, rest = self.socketId.rpartition(".")
        if not (gateway and dot and rest) or "\x00" in self.socketId:
            raise error("sb_socket_id", "socketId: not a socket id")
        return self


class BanUser(Payload):
    userId: UserId
    reason: Annotated[str, text("reason")]
    seconds: Annotated[int | None, integer(MAX_SECONDS, optional=True)] = None


class MuteUser(Payload):
    userId: UserId
    seconds: Annotated[int, integer(MAX_SECONDS)]


KICK_USER = EventSchema(KickUser, "{socketId, reason?}", scalar="socketId")
BAN_USER = EventSchema(BanUser, "{userId, reason, seconds?}")
MUTE_USER = EventSchema(MuteUser, "{userId, seconds}")
