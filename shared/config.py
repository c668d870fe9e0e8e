"""Configuration: frozen dataclasses turned into click options, each with an env variable.

Every part's settings are a frozen dataclass whose fields carry ``help`` (and optionally
``env``) in their metadata. :func:`click_options` turns such a class into typed click options
(``--jwt-secret`` ↔ ``SWITCHBOARD_JWT_SECRET``) showing their defaults, and
:func:`from_options` builds the config object back from the parsed values, so a command is
just "build config, call ``run(config)``" and tests call ``run`` with a config directly.
"""

from __future__ import annotations

import dataclasses
import re
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


#: Checks one item of a setting as typed: returns it, or raises ``ValueError`` saying why not
#: (``shared.checks``).
Check = Callable[[str], str]
#: Items of a list setting, in a flag or its env variable: commas or whitespace between them.
_SEPARATORS = re.compile(r"[,\s]+")
LIST_HELP = "Repeat the flag, or separate items with commas (in the env variable too)."


def setting(default: Any, help: str, env: str | None = None, check: Check | None = None,
            **kw: Any) -> Any:
    """A dataclass field with the help text, (optional) env variable and (optional) check of
    its option: a value the check refuses stops the command at start (exit 2)."""
    meta: dict[str, Any] = {"help": help}
    if env:
        meta["env"] = env
    if check is not None:
        meta["check"] = check
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta, **kw)


def setting_of(cls: type[Any], name: str, default: Any = dataclasses.MISSING) -> Any:
    """The setting ``name`` of config class ``cls`` declared again, the same (help, env
    variable, check, and default unless given): how a command that passes a setting on to
    its children (``switchboard up``) offers it without a second declaration to drift."""
    original = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = dict(original.metadata)
    if default is dataclasses.MISSING:
        if original.default_factory is not dataclasses.MISSING:
            return dataclasses.field(default_factory=original.default_factory, metadata=meta)
        default = original.default
    return dataclasses.field(default=default, metadata=meta)


def split_items(values: typing.Iterable[str]) -> tuple[str, ...]:
    """The items of a list setting: each value may hold several, between commas or spaces."""
    return tuple(item for value in values for item in _SEPARATORS.split(value) if item)


def endpoints(items: typing.Iterable[str]) -> dict[str, list[str]]:
    """``NAME=ENDPOINT`` items as endpoints by name."""
    out: dict[str, list[str]] = {}
    for item in split_items(items):
        name, sep, endpoint = item.partition("=")
        if not sep or not name or not endpoint:
            raise ValueError(f"service must be NAME=ENDPOINT, got {item!r}")
        out.setdefault(name, []).append(endpoint)
    return out


def _checked(check: Check | None, item: str, param: click.Parameter) -> str:
    if check is None:
        return item
    try:
        return check(item)
    except ValueError as exc:  # click names the option and its env variable
        raise click.BadParameter(str(exc), param=param) from None


def _list_callback(check: Check | None) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
        return tuple(_checked(check, item, param) for item in split_items(value or ()))
    return callback


def _scalar_callback(check: Check) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        return _checked(check, value, param) if value else value  # empty: the default's
    return callback


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
            elif multiple:
                func = click.option(
                    opt, type=tp, default=default, show_default=True, multiple=True,
                    envvar=env, show_envvar=True, help=f"{help_text} {LIST_HELP}",
                    callback=_list_callback(f.metadata.get("check")),
                )(func)
            else:
                check = f.metadata.get("check")
                func = click.option(
                    opt, type=tp, default=default, show_default=True, envvar=env,
                    show_envvar=True, help=help_text,
                    callback=_scalar_callback(check) if check is not None else None,
                )(func)
        return func

    return decorate


def from_options(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from parsed click values (extra keys are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    return cls(**kwargs)
