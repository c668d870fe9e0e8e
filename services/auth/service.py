"""The auth service: the owner of the keys tokens are checked with and of the namespace
policy (its configuration), which it hands every gateway as a key set (``RequestKind.KEYS``,
:mod:`shared.access`).

The gateways check each CONNECT's JWT themselves (from ``auth.token`` in the CONNECT
payload, else the handshake's ``Authorization: Bearer`` header): a new socket costs no
request here, and connects go on while this service restarts. A gateway asks again whenever
this service's instance changes (it restarted, perhaps with other keys). It declares no
namespace: it only guards those that exist.

Stateless (everything is configuration), so any number of instances can run.
"""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives import serialization

from switchboard.shared.access import KeySet, Policy, key_id
from switchboard.shared.config import DEFAULT_SECRET
from switchboard.shared.envelope import Reply, Request, RequestKind, reply_to
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_request
from switchboard.shared.tokens import (
    HMAC_ALGORITHMS,
    Verifier,
    check_secret,
    load_public_key_file,
)

from .config import Config

log = logging.getLogger("switchboard.auth")


class AuthService(Service):
    name = "auth"

    def __init__(self, publisher: Publisher, config: Config | None = None) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        cfg = self.config
        Policy.parse(cfg.auth_policy)  # a policy that does not parse stops us at start
        algorithm = cfg.jwt_algorithm
        public_key = None
        if algorithm not in HMAC_ALGORITHMS and cfg.jwt_public_key_file:
            public_key = load_public_key_file(cfg.jwt_public_key_file, algorithm)
        # Built once so that a key that cannot verify this algorithm stops us at start.
        verifier = Verifier(algorithm, cfg.jwt_secret, public_key, cfg.jwt_leeway)
        if algorithm in HMAC_ALGORITHMS:
            material = check_secret(cfg.jwt_secret, algorithm)
            if cfg.jwt_secret == DEFAULT_SECRET:
                log.warning(
                    "using the default JWT secret %r: anyone can forge tokens; set "
                    "SWITCHBOARD_JWT_SECRET", DEFAULT_SECRET,
                )
            elif verifier.weak_secret:
                log.warning("the JWT secret is shorter than %s recommends", algorithm)
        else:
            material = verifier.key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        # Named by this instance: a gateway that sees another one (a restart) asks again.
        self.keys = KeySet(self.instance, algorithm, ((key_id(material), material),),
                           cfg.jwt_leeway, cfg.auth_policy)

    @on_request(RequestKind.KEYS)
    async def key_set(self, request: Request) -> Reply:
        """What a gateway checks tokens with (it asks at start and after we restart)."""
        return reply_to(request, args=[self.keys.to_list()])
