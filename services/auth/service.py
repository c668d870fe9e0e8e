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


def _key(algorithm: str, cfg: Config, secret: str = "",
         public_key_file: str = "") -> tuple[str, bytes]:
    """One key of the set, ``(kid, material)``: an HMAC secret, or a PEM public key. Built
    into a verifier here once, so that a key that cannot verify the algorithm stops us at
    start rather than every connect at the gateways."""
    public_key = (load_public_key_file(public_key_file, algorithm)
                  if algorithm not in HMAC_ALGORITHMS and public_key_file else None)
    verifier = Verifier(algorithm, secret or cfg.jwt_secret, public_key, cfg.jwt_leeway)
    if algorithm in HMAC_ALGORITHMS:
        material = check_secret(secret, algorithm)
        if secret != DEFAULT_SECRET and verifier.weak_secret:
            log.warning("a JWT secret is shorter than %s recommends", algorithm)
    else:
        material = verifier.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key_id(material), material


class AuthService(Service):
    name = "auth"

    def __init__(self, publisher: Publisher, config: Config | None = None) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        cfg = self.config
        Policy.parse(cfg.auth_policy)  # a policy that does not parse stops us at start
        algorithm = cfg.jwt_algorithm
        if algorithm in HMAC_ALGORITHMS:
            if cfg.jwt_secret == DEFAULT_SECRET:
                log.warning(
                    "using the default JWT secret %r: anyone can forge tokens; set "
                    "SWITCHBOARD_JWT_SECRET", DEFAULT_SECRET,
                )
            keys = [_key(algorithm, cfg, secret=secret)
                    for secret in (cfg.jwt_secret, *cfg.jwt_previous_secrets)]
        else:
            keys = [_key(algorithm, cfg, public_key_file=path)
                    for path in (cfg.jwt_public_key_file, *cfg.jwt_previous_public_key_files)]
        # Named by this instance: a gateway that sees another one (a restart) asks again.
        # The current key first: a token without a kid is tried with it first.
        self.keys = KeySet(self.instance, algorithm, tuple(keys), cfg.jwt_leeway,
                           cfg.auth_policy)

    @on_request(RequestKind.KEYS)
    async def key_set(self, request: Request) -> Reply:
        """What a gateway checks tokens with (it asks at start and after we restart)."""
        return reply_to(request, args=[self.keys.to_list()])
