"""The auth service: JWT verification and per-namespace policy on CONNECT.

``create(config, publisher)`` builds the service; :mod:`.tokens` issues and verifies tokens
(also used by the ``switchboard token`` command).
"""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .policy import Policy, Rule
from .service import AuthService
from .tokens import Identity, TokenError, Verifier, issue_token, verify_token

__all__ = [
    "AuthService",
    "Config",
    "Identity",
    "Policy",
    "Rule",
    "TokenError",
    "Verifier",
    "create",
    "issue_token",
    "verify_token",
]


def create(config: Config, publisher: Publisher) -> AuthService:
    return AuthService(publisher, config)
