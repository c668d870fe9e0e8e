"""JWT issue and verification: the one place that knows about algorithms and keys.

Security rules, enforced here rather than trusted to callers:

- Exactly one algorithm is accepted per verifier (the configured one). The token header's
  ``alg`` is never used to pick a key, so ``alg: none`` and algorithm confusion (an HS256 token
  "signed" with an RSA public key as its HMAC secret) are refused.
- The key's type must match the algorithm family (an RSA key for RS*/PS*, an EC key on the
  right curve for ES*, a non-PEM secret for HS*); a mismatch is a configuration error at start.
- ``exp`` is required; ``nbf``/``iat`` are checked when present (with ``leeway`` seconds).
- The subject (``userId`` or ``sub``) must be a short printable string: it becomes the room
  name ``user:<id>`` and so part of a ZeroMQ topic.

Every verification failure raises :class:`TokenError`; its text is for logs only. Clients see
one message for all of them (``Authentication error: Invalid token``), so an attacker learns
nothing about which check failed.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from switchboard.shared.errors import ConfigError, SwitchboardError

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
#: ES algorithms fix their curve (RFC 7518 §3.4): a P-384 key may not verify ES256.
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
ALGORITHMS = HMAC_ALGORITHMS | RSA_ALGORITHMS | frozenset(EC_CURVES)

#: The longest accepted user id: it ends up in room names and ZeroMQ topics.
MAX_USER_ID = 128
MAX_USERNAME = 100
MAX_ROLE = 50

Key = Any  # str/bytes secret, or a cryptography key object


class TokenError(SwitchboardError):
    """A token failed verification; the message is for logs, never for the client."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the client is."""

    user_id: str
    username: str
    role: str


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"unsupported JWT algorithm {algorithm!r} (use one of {', '.join(sorted(ALGORITHMS))})"
        )
    return algorithm


def _check_key_type(key: Any, algorithm: str, private: bool) -> None:
    """Refuse a key whose type does not fit ``algorithm`` (the anti-confusion rule)."""
    if algorithm in RSA_ALGORITHMS:
        wanted: tuple[type, ...] = (rsa.RSAPrivateKey,) if private else (rsa.RSAPublicKey,)
        if not isinstance(key, wanted):
            raise ConfigError(f"{algorithm} needs an RSA {'private' if private else 'public'} key")
    elif algorithm in EC_CURVES:
        wanted = (ec.EllipticCurvePrivateKey,) if private else (ec.EllipticCurvePublicKey,)
        if not isinstance(key, wanted) or not isinstance(key.curve, EC_CURVES[algorithm]):
            raise ConfigError(
                f"{algorithm} needs an EC {'private' if private else 'public'} key on "
                f"{EC_CURVES[algorithm].name}"
            )


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def load_public_key(pem: Any, algorithm: str) -> Any:
    """A verification key for an asymmetric ``algorithm`` from PEM text/bytes or a key object."""
    check_algorithm(algorithm)
    if algorithm in HMAC_ALGORITHMS:
        raise ConfigError(f"{algorithm} verifies with a secret, not a public key")
    key = pem
    if isinstance(pem, (str, bytes)):
        try:
            key = serialization.load_pem_public_key(_as_bytes(pem))
        except ValueError as exc:
            raise ConfigError(f"not a PEM public key: {exc}") from None
    _check_key_type(key, algorithm, private=False)
    return key


def load_public_key_file(path: str, algorithm: str) -> Any:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read JWT public key file {path!r}: {exc.strerror}") from None
    return load_public_key(data, algorithm)


def load_private_key(pem: Any, algorithm: str) -> Any:
    """A signing key for an asymmetric ``algorithm`` from PEM text/bytes or a key object."""
    check_algorithm(algorithm)
    key = pem
    if isinstance(pem, (str, bytes)):
        try:
            key = serialization.load_pem_private_key(_as_bytes(pem), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"not an unencrypted PEM private key: {exc}") from None
    _check_key_type(key, algorithm, private=True)
    return key


def check_secret(secret: Any, algorithm: str) -> bytes:
    """An HMAC secret: non-empty, and not a PEM key (that is the classic confusion attack)."""
    if not isinstance(secret, (str, bytes)) or not secret:
        raise ConfigError(f"{algorithm} needs a non-empty secret")
    raw = _as_bytes(secret)
    if raw.lstrip().startswith(b"-----BEGIN") or raw.startswith(b"ssh-"):
        raise ConfigError(f"{algorithm} secret looks like a PEM/SSH key; refusing to use it")
    return raw


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence PyJWT's per-call short-HMAC-key warning: the service warns once, at start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


def issue_token(
    secret: str | bytes | None,
    user_id: str,
    username: str,
    role: str = "user",
    ttl: float = 3600,
    algorithm: str = "HS256",
    private_key: Any = None,
    now: float | None = None,
) -> str:
    """A signed JWT with ``userId``/``sub``, ``username``, ``role``, ``iat`` and ``exp``.

    HS* algorithms sign with ``secret``; RS*/PS*/ES* with ``private_key`` (PEM text/bytes or a
    key object; ``secret`` is then ignored). ``now`` (epoch seconds) is for tests and tools.
    """
    check_algorithm(algorithm)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not user_id or not isinstance(user_id, str):
        raise ValueError("user_id must be a non-empty string")
    key: Any
    if algorithm in HMAC_ALGORITHMS:
        key = check_secret(secret, algorithm)
    else:
        if private_key is None:
            raise ConfigError(f"{algorithm} needs a private key to sign")
        key = load_private_key(private_key, algorithm)
    issued = int(time.time() if now is None else now)
    payload = {
        "sub": user_id,
        "userId": user_id,
        "username": username,
        "role": role,
        "iat": issued,
        "exp": issued + int(ttl),
    }
    with _quiet():
        return jwt.encode(payload, key, algorithm=algorithm)


def _string_claim(claims: dict[str, Any], name: str, limit: int) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TokenError(f"claim {name} must be a string")
    text = str(value)
    if not text or len(text) > limit or not text.isprintable():
        raise TokenError(f"claim {name} must be 1..{limit} printable characters")
    return text


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    user_id = _string_claim(claims, "userId", MAX_USER_ID) or _string_claim(
        claims, "sub", MAX_USER_ID
    )
    if user_id is None:
        raise TokenError("token has neither userId nor sub")
    username = _string_claim(claims, "username", MAX_USERNAME) or user_id
    role = _string_claim(claims, "role", MAX_ROLE) or "user"
    return Identity(user_id, username, role)


class Verifier:
    """Verifies tokens for one configured algorithm and key (prepared once, at start)."""

    def __init__(
        self,
        algorithm: str = "HS256",
        secret: str | bytes | None = None,
        public_key: Any = None,
        leeway: float = 0.0,
    ) -> None:
        self.algorithm = check_algorithm(algorithm)
        self.key: Any
        if algorithm in HMAC_ALGORITHMS:
            self.key = check_secret(secret, algorithm)
        else:
            if public_key is None:
                raise ConfigError(f"{algorithm} needs a public key (jwt_public_key_file)")
            self.key = load_public_key(public_key, algorithm)
        self.leeway = leeway

    @property
    def weak_secret(self) -> bool:
        """An HMAC secret shorter than the hash output (RFC 7518 §3.2 asks for at least that)."""
        if self.algorithm not in HMAC_ALGORITHMS:
            return False
        return len(self.key) < int(self.algorithm[2:]) // 8

    def verify(self, token: str) -> Identity:
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise TokenError("token must be a non-empty string of at most 8192 characters")
        try:
            with _quiet():
                claims = jwt.decode(
                    token,
                    self.key,
                    algorithms=[self.algorithm],
                    leeway=self.leeway,
                    options={"require": ["exp"]},
                )
        except jwt.PyJWTError as exc:
            raise TokenError(f"{exc.__class__.__name__}: {exc}") from None
        if not isinstance(claims, dict):
            raise TokenError("token payload is not an object")
        return identity_from_claims(claims)


def verify_token(
    token: str,
    secret: str | bytes | None = None,
    algorithm: str = "HS256",
    public_key: Any = None,
    leeway: float = 0.0,
) -> Identity:
    """Verify ``token`` (see :class:`Verifier`); raises :class:`TokenError` when it fails.

    For repeated verification build one :class:`Verifier`: it loads and checks the key once.
    """
    return Verifier(algorithm, secret, public_key, leeway).verify(token)
