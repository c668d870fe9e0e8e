"""The auth service: the first CONNECT stage of every namespace.

It verifies the client's JWT (from ``auth.token`` in the CONNECT payload, else the handshake's
``Authorization: Bearer`` header), applies the namespace's policy (:mod:`.policy`), and on
success hands the gateway the socket's identity (``session.with_user``) and the room
``user:<id>`` every authenticated socket joins (so ``emit_user`` and bans reach all of a
user's sockets on every gateway). It declares no namespace: it only guards those that exist.

Stateless (everything comes with the request), so any number of instances can run.
"""

from __future__ import annotations

import logging

from switchboard.shared import topics
from switchboard.shared.config import DEFAULT_SECRET
from switchboard.shared.envelope import Recovery, Reply, Request, fail, reply_to
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect
from switchboard.shared.tokens import (
    HMAC_ALGORITHMS,
    Identity,
    TokenError,
    Verifier,
    load_public_key_file,
)

from .config import Config
from .policy import Policy

log = logging.getLogger("switchboard.auth")

NO_TOKEN = "Authentication error: No token provided"
INVALID_TOKEN = "Authentication error: Invalid token"


def access_denied(role: str) -> str:
    return f"Access denied: {role} role required"


def token_from(request: Request) -> str | None:
    """The client's token: ``auth.token`` first, then ``authorization: Bearer <jwt>``.

    Returns ``""`` for something that is present but not a usable token (a non-string
    ``auth.token``, a non-Bearer authorization header) so that it is refused as invalid
    rather than quietly treated as anonymous; None when the client sent nothing.
    """
    auth = request.auth if isinstance(request.auth, dict) else {}
    token = auth.get("token")
    if token is not None and token != "":
        return token if isinstance(token, str) else ""
    header = request.headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return ""
    return value.strip()


class AuthService(Service):
    name = "auth"

    def __init__(self, publisher: Publisher, config: Config | None = None) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        self.policy = Policy.parse(self.config.auth_policy)
        algorithm = self.config.jwt_algorithm
        public_key = None
        if algorithm not in HMAC_ALGORITHMS and self.config.jwt_public_key_file:
            public_key = load_public_key_file(self.config.jwt_public_key_file, algorithm)
        self.verifier = Verifier(
            algorithm, self.config.jwt_secret, public_key, self.config.jwt_leeway
        )
        if algorithm in HMAC_ALGORITHMS:
            if self.config.jwt_secret == DEFAULT_SECRET:
                log.warning(
                    "using the default JWT secret %r: anyone can forge tokens; set "
                    "SWITCHBOARD_JWT_SECRET", DEFAULT_SECRET,
                )
            elif self.verifier.weak_secret:
                log.warning("the JWT secret is shorter than %s recommends", algorithm)

    @on_connect("*", priority=10)
    async def connect(self, request: Request) -> Reply:
        session = request.session
        if session is None:  # a gateway bug; nothing to authenticate
            return fail(request, NO_TOKEN)
        if request.recovery == Recovery.SKIP:
            # Connection state recovery with skipMiddlewares: this socket's token was
            # checked when it first connected; it comes back as who it was.
            return reply_to(request)
        rule = self.policy.rule_for(session.ns)
        token = token_from(request)
        identity: Identity | None = None
        if token is not None:
            try:
                identity = self.verifier.verify(token)
            except TokenError as exc:
                # The reason stays in the log: the client gets one message for every failure.
                log.info("refused token for %s from %s: %s", session.ns, session.address, exc)
                return fail(request, INVALID_TOKEN)
        if identity is None:
            if rule.token_required:
                return fail(request, NO_TOKEN)
            return reply_to(request, session=session.with_user(None, None, None))
        if rule.role is not None and identity.role != rule.role:
            return fail(request, access_denied(rule.role))
        if request.recovery == Recovery.CHECK and identity.user_id != session.user_id:
            return fail(request, INVALID_TOKEN)  # a token of someone else: not its session
        return reply_to(
            request,
            session=session.with_user(identity.user_id, identity.username, identity.role),
            joins=(topics.user_room(identity.user_id),),
        )
