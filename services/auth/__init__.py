"""The auth service: the keys and the per-namespace policy every gateway checks CONNECTs by.

``create(config, publisher)`` builds the service. Tokens are issued and verified by
:mod:`switchboard.shared.tokens` (which the gateway's demo sign-in and ``switchboard token``
use too).
"""

from __future__ import annotations

from switchboard.shared.access import Policy, Rule
from switchboard.shared.publisher import Publisher
from switchboard.shared.tokens import Identity, TokenError, Verifier, issue_token, verify_token

from .config import Config
from .service import AuthService

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
