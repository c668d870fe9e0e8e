"""Who may join a namespace: the auth policy and the token check, as the auth service
publishes them and every gateway applies them at CONNECT (so a new socket costs one request,
to the namespace's owner, and connects go on while the auth service restarts).

The auth service owns the keys and the policy (its configuration) and hands them out as a
:class:`KeySet` (``RequestKind.KEYS``, request/reply only: a secret never crosses the broker
or its journal). A gateway holds it as an :class:`Access` and asks
:meth:`Access.admit` for every CONNECT.

Policy syntax (the ``auth_policy`` setting): comma-separated ``NAMESPACE=MODE`` entries, e.g.
the default ``/=token,/chat=token,/game=anonymous,/admin=admin``. Modes:

``token``      a valid token is required (``Authentication error: No token provided``)
``anonymous``  a token is optional: verified when present (a bad one is refused, so a client
               never silently loses its identity), anonymous otherwise. Alias: ``optional``.
``admin``      a valid token whose ``role`` is ``admin`` (same as ``role:admin``)
``role:NAME``  a valid token whose ``role`` is ``NAME`` (``Access denied: NAME role required``)

The entry ``*=MODE`` sets the mode of namespaces not listed; without it they are ``anonymous``
(token optional), so a new namespace works for everyone until a policy entry says otherwise.
Whether a namespace exists at all is not auth's business: the services that declare it decide.

Keys: a key set holds one or more keys of its one algorithm, each with a ``kid`` (JWKS
style). A token whose header names a ``kid`` is checked with that key only; one without is
tried against each (the newest first), so a key can be rotated in while tokens signed with
the old one are still alive. The token's ``alg`` never picks anything (see
:mod:`shared.tokens`).

Sans-I/O: no sockets; the clock is PyJWT's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from switchboard.shared.envelope import Envelope, Recovery
from switchboard.shared.errors import ConfigError, Refused
from switchboard.shared.tokens import HMAC_ALGORITHMS, Identity, TokenError, Verifier

log = logging.getLogger("switchboard.access")

NO_TOKEN = "Authentication error: No token provided"
INVALID_TOKEN = "Authentication error: Invalid token"


def access_denied(role: str) -> str:
    return f"Access denied: {role} role required"


@dataclass(frozen=True, slots=True)
class Rule:
    """What one namespace demands: a token at all, and if so which role (None: any)."""

    token_required: bool = False
    role: str | None = None


ANONYMOUS = Rule()


def parse_rule(text: str) -> Rule:
    mode = text.strip()
    if mode == "token":
        return Rule(token_required=True)
    if mode in ("anonymous", "optional"):
        return ANONYMOUS
    if mode == "admin":
        return Rule(token_required=True, role="admin")
    if mode.startswith("role:") and mode[5:].strip():
        return Rule(token_required=True, role=mode[5:].strip())
    raise ConfigError(
        f"auth policy: unknown mode {mode!r} (use token, anonymous, admin or role:NAME)"
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """Namespace → :class:`Rule`, with a default for namespaces not listed."""

    rules: dict[str, Rule] = field(default_factory=dict)
    default: Rule = ANONYMOUS

    @classmethod
    def parse(cls, text: str) -> Policy:
        rules: dict[str, Rule] = {}
        default = ANONYMOUS
        for entry in text.split(","):
            entry = entry.strip()
            if not entry:
                continue
            ns, sep, mode = entry.partition("=")
            ns = ns.strip()
            if not sep or not ns:
                raise ConfigError(f"auth policy: expected NAMESPACE=MODE, got {entry!r}")
            if ns != "*" and not ns.startswith("/"):
                raise ConfigError(f"auth policy: namespace must start with '/', got {ns!r}")
            rule = parse_rule(mode)
            if ns == "*":
                default = rule
            else:
                rules[ns] = rule
        return cls(rules, default)

    def rule_for(self, ns: str) -> Rule:
        return self.rules.get(ns, self.default)


def token_from(auth: Any, headers: Mapping[str, str]) -> str | None:
    """The client's token: ``auth.token`` first, then ``authorization: Bearer <jwt>``.

    Returns ``""`` for something that is present but not a usable token (a non-string
    ``auth.token``, a non-Bearer authorization header) so that it is refused as invalid
    rather than quietly treated as anonymous; None when the client sent nothing.
    """
    token = auth.get("token") if isinstance(auth, dict) else None
    if token is not None and token != "":
        return token if isinstance(token, str) else ""
    header = headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return ""
    return value.strip()


def key_id(material: bytes) -> str:
    """A key's ``kid`` when its configuration names none: a digest, which tells nothing of
    a secret."""
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class KeySet(Envelope):
    """``[instance, algorithm, keys, leeway, policy]``: what the auth service instance
    ``instance`` checks tokens with. ``keys``: ``[[kid, material], …]``, newest first (an
    HMAC secret, or a PEM public key); ``policy``: the ``auth_policy`` text."""

    instance: str
    algorithm: str
    keys: tuple[Any, ...]
    leeway: float = 0.0
    policy: str = ""


class Access:
    """A gateway's copy of the auth service's keys and policy: decides who a CONNECT is."""

    def __init__(self, keys: KeySet) -> None:
        """Raises :class:`ConfigError` for a key set that cannot be used."""
        self.instance = keys.instance
        self.policy = Policy.parse(keys.policy)
        if not keys.keys:
            raise ConfigError("a key set without keys")
        hmac = keys.algorithm in HMAC_ALGORITHMS
        self._verifiers: list[tuple[str, Verifier]] = []
        for entry in keys.keys:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ConfigError("a key set's keys are [kid, material] pairs")
            kid, material = entry
            self._verifiers.append((str(kid), Verifier(
                keys.algorithm, material if hmac else None, None if hmac else material,
                keys.leeway)))
        self._by_kid = dict(self._verifiers)

    def verify(self, token: str) -> Identity:
        """Who ``token`` says the client is; :class:`TokenError` when no key accepts it."""
        if len(self._verifiers) == 1:
            return self._verifiers[0][1].verify(token)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise TokenError(f"{exc.__class__.__name__}: {exc}") from None
        if kid is not None:
            verifier = self._by_kid.get(str(kid))
            if verifier is None:
                raise TokenError(f"no key {kid!r}")
            return verifier.verify(token)
        error = TokenError("no key")
        for _, verifier in self._verifiers:
            try:
                return verifier.verify(token)
            except TokenError as exc:
                error = exc
        raise error

    def admit(self, ns: str, auth: Any, headers: Mapping[str, str],
              recovery: Recovery = Recovery.NONE, user_id: str | None = None,
              address: str = "") -> Identity | None:
        """Who a CONNECT to ``ns`` is (None: anonymous); :class:`Refused` with the client's
        text when it may not join. ``recovery``/``user_id``: a socket coming back by
        connection state recovery, as whom it left."""
        rule = self.policy.rule_for(ns)
        token = token_from(auth, headers)
        identity: Identity | None = None
        if token is not None:
            try:
                identity = self.verify(token)
            except TokenError as exc:
                # The reason stays in the log: the client gets one message for every failure.
                log.info("refused token for %s from %s: %s", ns, address, exc)
                raise Refused(INVALID_TOKEN) from None
        if identity is None:
            if rule.token_required:
                raise Refused(NO_TOKEN)
            if recovery == Recovery.CHECK and user_id is not None:
                # Checked again without a token: it may not keep the user's session (and
                # its user room) as an anonymous socket.
                raise Refused(NO_TOKEN)
            return None
        if rule.role is not None and identity.role != rule.role:
            raise Refused(access_denied(rule.role))
        if recovery == Recovery.CHECK and identity.user_id != user_id:
            raise Refused(INVALID_TOKEN)  # a token of someone else: not its session
        return identity
