"""``switchboard up`` passes settings on to its children: each one it shares with a part is
that part's declaration (``shared.config.setting_of``), so its help, variable and default
cannot drift; the few it declares itself mean something else at its level."""

from __future__ import annotations

import dataclasses

from switchboard.gateway.config import GatewayConfig
from switchboard.services.auth.config import Config as AuthConfig
from switchboard.services.recovery.config import Config as RecoveryConfig
from switchboard.supervisor import UpConfig

#: Up's own meaning of a name a part uses too: where it listens (the first of its gateways),
#: and demo mode, on by default for a first try (a gateway alone starts without it).
UP_OWN = {"host", "port", "demo"}


def fields(cls: type) -> dict[str, dataclasses.Field[object]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def test_every_setting_up_shares_with_a_part_is_that_parts_declaration() -> None:
    parts = [fields(part) for part in (GatewayConfig, AuthConfig, RecoveryConfig)]
    shared = 0
    for name, mine in fields(UpConfig).items():
        theirs = [part[name] for part in parts if name in part]
        if not theirs or name in UP_OWN:
            continue
        shared += 1
        # The gateway and auth both declare jwt_secret (one variable, each its own help):
        # up's is one of them.
        assert any(mine.metadata == field.metadata
                   and (mine.default, mine.default_factory)
                   == (field.default, field.default_factory) for field in theirs), name
    assert shared >= 7  # jwt secret, Engine.IO timings and size, EIO3, Admin UI, recovery


def test_a_declaration_of_ups_own_is_listed_as_such() -> None:
    parts = set(fields(GatewayConfig)) | set(fields(AuthConfig)) | set(fields(RecoveryConfig))
    assert parts >= UP_OWN  # each name here is really one a part uses too
