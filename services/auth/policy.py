"""Per-namespace access policy: which namespaces need a token, and which role.

Syntax (the ``auth_policy`` setting): comma-separated ``NAMESPACE=MODE`` entries, e.g. the
default ``/=token,/chat=token,/game=anonymous,/admin=admin``. Modes:

``token``      a valid token is required (``Authentication error: No token provided``)
``anonymous``  a token is optional: verified when present (a bad one is refused, so a client
               never silently loses its identity), anonymous otherwise. Alias: ``optional``.
``admin``      a valid token whose ``role`` is ``admin`` (same as ``role:admin``)
``role:NAME``  a valid token whose ``role`` is ``NAME`` (``Access denied: NAME role required``)

The entry ``*=MODE`` sets the mode of namespaces not listed; without it they are ``anonymous``
(token optional), so a new namespace works for everyone until a policy entry says otherwise.
Whether a namespace exists at all is not auth's business: the services that declare it decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.shared.errors import ConfigError


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
