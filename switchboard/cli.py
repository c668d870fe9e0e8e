"""The ``switchboard`` command: ``up`` for the whole system, one command per part."""

from __future__ import annotations

import sys
from typing import Any

import click

from switchboard import parts
from switchboard.broker.broker import BrokerConfig
from switchboard.emitter import EmitConfig
from switchboard.gateway.config import GatewayConfig
from switchboard.shared.config import DEFAULT_SECRET, click_options, from_options
from switchboard.shared.errors import ConfigError
from switchboard.shared.logs import setup_logging
from switchboard.shared.process import die_with_supervisor
from switchboard.supervisor import UpConfig


def _log_options(func: Any) -> Any:
    func = click.option(
        "--log-level", default="info", show_default=True, envvar="SWITCHBOARD_LOG_LEVEL",
        show_envvar=True, type=click.Choice(["debug", "info", "warning", "error"]),
        help="Log level.",
    )(func)
    func = click.option(
        "--log-json/--no-log-json", default=False, show_default=True,
        envvar="SWITCHBOARD_LOG_JSON", show_envvar=True, help="Log one JSON object per line.",
    )(func)
    return func


class ConfigFailure(click.ClickException):
    """A configuration value that names nothing real, found once the command ran (the
    services were asked): exit 2, as click's own option errors."""

    exit_code = 2


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise ConfigFailure(str(exc)) from None


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """switchboard: Socket.IO-compatible real-time messaging on a ZeroMQ backbone."""
    die_with_supervisor()  # a no-op unless started by `switchboard up`


@main.command()
@click_options(UpConfig)
@_log_options
def up(log_level: str, log_json: bool, **options: Any) -> None:
    """Run the whole system locally: broker, services and gateways, supervised."""
    from switchboard.supervisor import run

    setup_logging("up", log_level, log_json)
    config = from_options(UpConfig, options)
    sys.exit(run(config, log_level=log_level, log_json=log_json))


@main.command()
@click_options(BrokerConfig)
@_log_options
def broker(log_level: str, log_json: bool, **options: Any) -> None:
    """Run the PUB/SUB broker (XSUB for services, XPUB for gateways)."""
    setup_logging("broker", log_level, log_json)
    parts.run_broker(from_options(BrokerConfig, options))


@main.command()
@click_options(GatewayConfig)
@_log_options
def gateway(log_level: str, log_json: bool, **options: Any) -> None:
    """Run one WebSocket gateway."""
    config = from_options(GatewayConfig, options)
    setup_logging(f"gateway:{config.port}", log_level, log_json)
    parts.run_gateway(config)


class ServiceGroup(click.Group):
    """Built-in services by name, plus any importable module with ``Config`` and ``create``
    (``switchboard service myapp.scores``): how an application adds its own service."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(parts.SERVICES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        try:
            return _service_command(name)
        except (ImportError, KeyError) as exc:
            raise click.UsageError(str(exc)) from None


@main.group(cls=ServiceGroup)
def service() -> None:
    """Run one service: auth, moderation, room, game, conformance, or a module path."""


def _service_command(name: str) -> click.Command:
    module = parts.service_module(name)

    @click_options(parts.ServiceRuntime)
    @click_options(module.Config)
    @_log_options
    def command(log_level: str, log_json: bool, **options: Any) -> None:
        setup_logging(name, log_level, log_json)
        runtime = from_options(parts.ServiceRuntime, options)
        config = from_options(module.Config, options)
        parts.run_service(name, runtime, config)

    command.__doc__ = f"Run the {name} service."
    return click.command(name)(command)


@main.command()
@click.option("--user-id", required=True, help="The token's userId claim.")
@click.option("--username", required=True, help="The token's username claim.")
@click.option("--role", default="user", show_default=True, type=click.Choice(["user", "admin"]),
              help="The token's role claim.")
@click.option("--ttl", default=3600, show_default=True, type=int, help="Lifetime in seconds.")
@click.option("--jwt-secret", default=DEFAULT_SECRET, show_default=True,
              envvar="SWITCHBOARD_JWT_SECRET", show_envvar=True, help="HS256 signing secret.")
def token(user_id: str, username: str, role: str, ttl: int, jwt_secret: str) -> None:
    """Print a signed token (development and tests)."""
    from switchboard.shared.tokens import issue_token

    click.echo(issue_token(jwt_secret, user_id, username, role=role, ttl=ttl))


@main.command("hash-password")
@click.password_option(help="The password (asked twice when not given).")
def hash_password(password: str) -> None:
    """Print an argon2 hash of a password (for --admin-ui-password-hash)."""
    from argon2 import PasswordHasher

    click.echo(PasswordHasher().hash(password))


@main.command()
@click_options(EmitConfig)
@click.argument("event")
@click.argument("args", nargs=-1)
def emit(event: str, args: tuple[str, ...], **options: Any) -> None:
    """Emit EVENT with ARGS (each one JSON value) to a room, a user, a socket or a whole
    namespace, from outside the system (switchboard.emitter).

    \b
    switchboard emit --room r1 "room message" '{"text": "deploy done"}'
    """
    import json

    from switchboard.emitter import EmitterError, run_emit

    values = []
    for raw in args:
        try:
            values.append(json.loads(raw))
        except ValueError:
            raise click.BadParameter(f"not JSON: {raw}", param_hint="ARGS") from None
    try:
        run_emit(from_options(EmitConfig, options), event, values)
    except EmitterError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
