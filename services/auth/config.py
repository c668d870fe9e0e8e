"""Settings of the auth service (each also an option and a ``SWITCHBOARD_*`` variable)."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks
from switchboard.shared.config import DEFAULT_SECRET, setting

#: The development secret; using it is logged as a warning at start (never in production).
#: The contract's default namespace policy (see :mod:`shared.access` for the syntax).
DEFAULT_POLICY = "/=token,/chat=token,/game=anonymous,/admin=admin"


@dataclass(frozen=True)
class Config:
    jwt_secret: str = setting(
        DEFAULT_SECRET,
        "HMAC secret for HS256/HS384/HS512 tokens (at least 32 bytes in production).",
        env="SWITCHBOARD_JWT_SECRET",
    )
    jwt_algorithm: str = setting(
        "HS256",
        "The only JWT algorithm accepted: HS256/384/512 (secret), RS256/384/512, PS256/384/512 "
        "or ES256/384/512 (public key file).",
    )
    jwt_public_key_file: str = setting(
        "", "PEM public key file for RS*/PS*/ES* algorithms (its key type must match)."
    )
    jwt_previous_secrets: tuple[str, ...] = setting(
        (), "Earlier HMAC secrets still accepted, for a rotation: tokens signed with one stay "
        "valid until their exp while new ones are signed with --jwt-secret. Drop them once "
        "the longest token lifetime has passed. (A secret listed here holds no comma or "
        "space.)",
    )
    jwt_previous_public_key_files: tuple[str, ...] = setting(
        (), "Earlier PEM public key files still accepted (RS*/PS*/ES*), for a rotation as "
        "--jwt-previous-secrets.", check=checks.readable_file,
    )
    auth_policy: str = setting(
        DEFAULT_POLICY,
        "Per-namespace policy NS=MODE,... with MODE token (required), anonymous (token "
        "optional), admin or role:NAME (token with that role); '*' sets the default for "
        "unlisted namespaces (token optional when absent).",
    )
    jwt_leeway: float = setting(
        0.0, "Seconds of clock skew tolerated when checking exp/nbf/iat."
    )
