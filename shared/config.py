"""Configuration: frozen dataclasses turned into click options, each with an env variable.

Every part's settings are a frozen dataclass whose fields carry ``help`` (and optionally
``env``) in their metadata. :func:`click_options` turns such a class into typed click options
(``--jwt-secret`` ↔ ``SWITCHBOARD_JWT_SECRET``) showing their defaults, and
:func:`from_options` builds the config object back from the parsed values, so a command is
just "build config, call ``run(config)``" and tests call ``run`` with a config directly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import click

C = TypeVar("C")
F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "SWITCHBOARD_"

#: The development secret every part defaults to (and warns about): tokens signed with it are
#: forgeable by anyone who has read this file. Here rather than beside the token code so
#: that parts which never touch a token (broker, supervisor) need not import JWT libraries.
DEFAULT_SECRET = "dev-secret-change-me"


def setting(default: Any, help: str, env: str | None = None, **kw: Any) -> Any:
    """A dataclass field with the help text and (optional) env variable for its option."""
    meta = {"help": help}
    if env:
        meta["env"] = env
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta, **kw)


def endpoints(items: typing.Iterable[str]) -> dict[str, list[str]]:
    """``NAME=ENDPOINT`` items (each may be comma-separated) as endpoints by name."""
    out: dict[str, list[str]] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, endpoint = part.partition("=")
            if not sep or not name or not endpoint:
                raise ValueError(f"service must be NAME=ENDPOINT, got {part!r}")
            out.setdefault(name.strip(), []).append(endpoint.strip())
    return out


def env_name(field_name: str, prefix: str = ENV_PREFIX) -> str:
    return prefix + field_name.upper()


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, is_multiple) for a field annotation such as ``int | None`` or tuple[str]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(tp)[0], True
    return tp, False


def click_options(cls: type[Any], prefix: str = ENV_PREFIX) -> Callable[[F], F]:
    """Decorate a click command with one option per field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)

    def decorate(func: F) -> F:
        for f in reversed(dataclasses.fields(cls)):
            tp, multiple = _base_type(hints[f.name])
            default = (
                f.default if f.default is not dataclasses.MISSING
                else f.default_factory()
                if f.default_factory is not dataclasses.MISSING else None
            )
            opt = "--" + f.name.replace("_", "-")
            env = f.metadata.get("env") or env_name(f.name, prefix)
            help_text = f.metadata.get("help", "")
            if tp is bool:
                func = click.option(
                    f"{opt}/--no-{opt[2:]}", default=default, show_default=True,
                    envvar=env, show_envvar=True, help=help_text,
                )(func)
            else:
                func = click.option(
                    opt, type=tp, default=default, show_default=True, multiple=multiple,
                    envvar=env, show_envvar=True, help=help_text,
                )(func)
        return func

    return decorate


def from_options(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from parsed click values (extra keys are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    return cls(**kwargs)
