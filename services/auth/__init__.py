"""The auth service: the keys and the per-namespace policy every gateway checks CONNECTs by.

``create(config, publisher)`` builds the service. Tokens are issued and verified by
:mod:`switchboard.shared.tokens` (which the gateway's demo sign-in and ``switchboard token``
use too). Only :mod:`.config` is imported with the package: ``switchboard up`` declares its
options from it without loading the service, PyJWT or cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import Config

if TYPE_CHECKING:
    from switchboard.shared.access import Policy, Rule
    from switchboard.shared.publisher import Publisher
    from switchboard.shared.tokens import (
        Identity,
        TokenError,
        Verifier,
        issue_token,
        verify_token,
    )

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

#: Where each name of the package lives, loaded on first use.
_LAZY = {
    "AuthService": "switchboard.services.auth.service",
    "Policy": "switchboard.shared.access",
    "Rule": "switchboard.shared.access",
    "Identity": "switchboard.shared.tokens",
    "TokenError": "switchboard.shared.tokens",
    "Verifier": "switchboard.shared.tokens",
    "issue_token": "switchboard.shared.tokens",
    "verify_token": "switchboard.shared.tokens",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create(config: Config, publisher: Publisher) -> AuthService:
    from .service import AuthService

    return AuthService(publisher, config)
