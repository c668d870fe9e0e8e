"""Every list-valued option of every command, tried as its help shows it: a repeated flag, items
between commas in one flag, and the same in its environment variable — all giving the same
items; a value that names nothing real stops the command with exit 2, naming it.

The commands run for real up to the config object they build; only the ``run`` they call
with it is replaced, to catch that object (what it does is every other test's business).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from switchboard import cli, parts, supervisor


@dataclass(frozen=True)
class ListOption:
    command: tuple[str, ...]
    flag: str
    env: str
    items: tuple[str, ...]
    #: How the built config holds them: (config kind, field) caught from the run call.
    field: str
    bad: str
    #: What the refusal says of ``bad``.
    says: str
    #: The part of ``bad`` the refusal names (default: all of it).
    named: str = ""
    #: Other arguments every invocation needs (a list that must match another's length).
    extra: tuple[str, ...] = ()


OPTIONS = [
    ListOption(("gateway",), "--recovery-namespaces", "SWITCHBOARD_RECOVERY_NAMESPACES",
               ("/", "/chat"), "recovery_namespaces", "chat", "is not a namespace"),
    ListOption(("gateway",), "--allowed-origins", "SWITCHBOARD_ALLOWED_ORIGINS",
               ("https://chat.example.com", "http://127.0.0.1:8080"), "allowed_origins",
               "https://chat.example.com/", "is not an origin"),
    ListOption(("gateway",), "--trusted-proxies", "SWITCHBOARD_TRUSTED_PROXIES",
               ("10.0.0.5", "172.16.0.0/12"), "trusted_proxies", "10.0.0.300",
               "is not an IP address or network"),
    ListOption(("gateway",), "--services", "SWITCHBOARD_SERVICES",
               ("room=tcp://127.0.0.1:6000", "auth=tcp://10.1.2.3:6001"), "services",
               "room=127.0.0.1:6000", "is not a ZeroMQ endpoint", "127.0.0.1:6000"),
    ListOption(("service", "room"), "--services", "SWITCHBOARD_SERVICES",
               ("moderation=tcp://127.0.0.1:6000", "game=ipc:///tmp/game"), "services",
               "moderation=tcp://127.0.0.1:99999", "is not 1-65535", "tcp://127.0.0.1:99999"),
    ListOption(("service", "room"), "--room-instances", "SWITCHBOARD_ROOM_INSTANCES",
               ("room", "room-1"), "room_instances", "room=tcp://127.0.0.1:5562",
               "is not a service name"),
    ListOption(("service", "moderation"), "--ban-namespaces", "SWITCHBOARD_BAN_NAMESPACES",
               ("/", "/game"), "ban_namespaces", "/game?x", "is not a namespace"),
    ListOption(("service", "recovery"), "--recovery-namespaces",
               "SWITCHBOARD_RECOVERY_NAMESPACES", ("/", "/chat"), "recovery_namespaces",
               "/chat#x", "is not a namespace"),
    ListOption(("up",), "--recovery-namespaces", "SWITCHBOARD_RECOVERY_NAMESPACES",
               ("/", "/chat"), "recovery_namespaces", "/chat,nosuch", "is not a namespace",
               "nosuch"),
    ListOption(("service", "auth"), "--jwt-previous-public-key-files",
               "SWITCHBOARD_JWT_PREVIOUS_PUBLIC_KEY_FILES", (__file__, __file__.replace(
                   "test_list_options", "test_up_settings")), "jwt_previous_public_key_files",
               "/nonexistent/old.pem", "is not a readable file"),
    # No check names a bad secret: the refusal would print it (a secret is never shown).
    ListOption(("service", "auth"), "--jwt-previous-secrets",
               "SWITCHBOARD_JWT_PREVIOUS_SECRETS", ("old-secret-1", "old-secret-2"),
               "jwt_previous_secrets", "", ""),
    ListOption(("emit",), "--exclude", "SWITCHBOARD_EMIT_EXCLUDE",
               ("gw1.abc", "gw2.def"), "exclude", "", ""),
    # Several brokers: every part lists them, in one order.
    ListOption(("gateway",), "--broker-sub", "SWITCHBOARD_BROKER_SUB",
               ("tcp://127.0.0.1:5551", "tcp://10.0.0.2:5551"), "broker_sub",
               "127.0.0.1:5551", "is not a ZeroMQ endpoint",
               extra=("--broker-pub", "tcp://127.0.0.1:5550,tcp://10.0.0.2:5550")),
    ListOption(("gateway",), "--broker-pub", "SWITCHBOARD_BROKER_PUB",
               ("tcp://127.0.0.1:5550", "tcp://10.0.0.2:5550"), "broker_pub",
               "tcp://127.0.0.1:65536", "is not 1-65535", "tcp://127.0.0.1:65536",
               extra=("--broker-sub", "tcp://127.0.0.1:5551,tcp://10.0.0.2:5551")),
    ListOption(("service", "room"), "--broker-pub", "SWITCHBOARD_BROKER_PUB",
               ("tcp://127.0.0.1:5550", "tcp://10.0.0.2:5550"), "broker_pub",
               "tcp://127.0.0.1", "has no host:port"),
    ListOption(("service", "recovery"), "--broker-sub", "SWITCHBOARD_BROKER_SUB",
               ("tcp://127.0.0.1:5551", "ipc:///tmp/broker-1"), "broker_sub",
               "tcp://127.0.0.1:0", "is not 1-65535", "tcp://127.0.0.1:0"),
    ListOption(("emit",), "--broker-pub", "SWITCHBOARD_BROKER_PUB",
               ("tcp://127.0.0.1:5550", "tcp://10.0.0.2:5550"), "broker_pub",
               "udp://127.0.0.1:5550", "is not tcp, ipc or inproc"),
]


@pytest.fixture
def caught(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The config objects the commands would run with."""
    configs: list[Any] = []

    def catch(*args: Any, **_: Any) -> int:
        configs.extend(args)
        return 0

    monkeypatch.setattr(parts, "run_gateway", catch)
    monkeypatch.setattr(parts, "run_service", catch)
    monkeypatch.setattr(supervisor, "run", catch)
    import switchboard.emitter as emitter
    monkeypatch.setattr(emitter, "run_emit", catch)
    return configs


def invoke(command: tuple[str, ...], args: list[str], env: dict[str, str] | None = None) -> Any:
    extra = ["event"] if command == ("emit",) else []
    return CliRunner().invoke(cli.main, [*command, *args, *extra], env=env or {},
                              catch_exceptions=False)


def value_of(configs: list[Any], field: str) -> Any:
    for config in configs:
        if hasattr(config, field):
            return getattr(config, field)
    raise AssertionError(f"no config with {field}: {configs}")


def _ways(option: ListOption) -> dict[str, Callable[[], Any]]:
    first, second = option.items
    extra = list(option.extra)
    return {
        "repeated flag": lambda: invoke(option.command,
                                        [option.flag, first, option.flag, second, *extra]),
        "commas in one flag": lambda: invoke(option.command,
                                             [option.flag, f"{first},{second}", *extra]),
        "env, commas": lambda: invoke(option.command, extra,
                                      {option.env: f"{first},{second}"}),
        "env, commas and spaces": lambda: invoke(option.command, extra,
                                                 {option.env: f" {first}, {second} "}),
        "env, spaces": lambda: invoke(option.command, extra,
                                      {option.env: f"{first} {second}"}),
    }


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: f"{' '.join(o.command)} {o.flag}")
def test_a_list_option_takes_every_form_its_help_shows(option: ListOption,
                                                       caught: list[Any]) -> None:
    for way, run in _ways(option).items():
        caught.clear()
        result = run()
        assert result.exit_code == 0, (way, result.output)
        assert tuple(value_of(caught, option.field)) == option.items, way


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.bad],
                         ids=lambda o: f"{' '.join(o.command)} {o.flag}")
def test_a_list_item_that_names_nothing_real_stops_the_command(option: ListOption,
                                                               caught: list[Any]) -> None:
    extra = list(option.extra)
    for result in (invoke(option.command, [option.flag, option.items[0], option.flag,
                                           option.bad, *extra]),
                   invoke(option.command, extra,
                          {option.env: f"{option.items[0]},{option.bad}"})):
        assert result.exit_code == 2, result.output
        assert option.says in result.output and option.flag in result.output, result.output
        assert repr(option.named or option.bad) in result.output, result.output
        assert caught == []  # nothing ran


def test_every_list_option_of_every_command_is_covered() -> None:
    """A list option added later gets a row above (the settings every service shares,
    ``parts.ServiceRuntime``, once for all services)."""
    import dataclasses

    import click

    shared = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(parts.ServiceRuntime)}

    def key(path: tuple[str, ...], flag: str) -> tuple[tuple[str, ...], str]:
        return (("service", "*") if path[:1] == ("service",) and flag in shared else path), flag

    covered = {key(o.command, o.flag) for o in OPTIONS}
    found = set()

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, (*path, name))
            return
        for param in command.params:
            if isinstance(param, click.Option) and param.multiple:
                found.add(key(path, param.opts[0]))

    walk(cli.main, ())
    assert found - covered == set()


@pytest.mark.parametrize("args, says", [
    (["--broker-sub", "127.0.0.1:5551"], "is not a ZeroMQ endpoint"),
    (["--broker-pub", "tcp://127.0.0.1"], "has no host:port"),
    (["--peer-bind", "udp://127.0.0.1:*"], "is not tcp, ipc or inproc"),
    (["--admin-ui-namespace", "admin-ui"], "is not a namespace"),
])
def test_a_malformed_endpoint_or_namespace_stops_the_gateway(args: list[str], says: str,
                                                            caught: list[Any]) -> None:
    result = invoke(("gateway",), args)
    assert result.exit_code == 2 and says in result.output, result.output
    assert caught == []


@pytest.mark.parametrize("args", [
    ["--broker-sub", "tcp://127.0.0.1:5551,tcp://127.0.0.1:5553"],
    ["--broker-pub", "tcp://127.0.0.1:5550", "--broker-pub", "tcp://127.0.0.1:5552"],
])
def test_a_gateway_given_unlike_broker_lists_stops(args: list[str], caught: list[Any]) -> None:
    result = invoke(("gateway",), args)
    assert result.exit_code == 2, result.output
    assert "give each broker's two endpoints, in the same order" in result.output
    assert caught == []


@pytest.mark.parametrize("args, says", [
    (["--room-instance", "room-2", "--room-instances", "room-0,room-1"],
     "'room-2' is none of --room-instances (room-0, room-1)"),
    (["--room-instance", "room 2"], "is not a service name"),
])
def test_a_room_instance_outside_its_group_stops_the_service(args: list[str], says: str,
                                                            caught: list[Any]) -> None:
    result = invoke(("service", "room"), args)
    assert result.exit_code == 2 and says in result.output, result.output
    assert caught == []


@pytest.mark.parametrize("brokers", ["0", "6"])
def test_brokers_out_of_range_stop_up(brokers: str, caught: list[Any]) -> None:
    result = invoke(("up",), ["--brokers", brokers])
    assert result.exit_code == 2 and f"--brokers {brokers}: must be 1-5" in result.output
    assert caught == []


def test_up_runs_brokers_on_their_own_ports_and_every_part_lists_them_in_order() -> None:
    children = {c.name: c for c in supervisor.plan(
        supervisor.UpConfig(brokers=3, room_shards=2, data_dir="/tmp/d"))}
    brokers = ["broker-0", "broker-1", "broker-2"]
    assert [name for name in children if name.startswith("broker")] == brokers
    publish, subscribe = [], []
    for name in brokers:
        argv = children[name].argv
        assert argv[argv.index("--name") + 1] == name
        publish.append(argv[argv.index("--publish-bind") + 1])
        subscribe.append(argv[argv.index("--subscribe-bind") + 1])
    bound = [port for child in children.values() for _, port in child.binds]
    assert len(bound) == len(set(bound)), "two parts bind one port"
    for name, child in children.items():
        argv = child.argv
        if "--broker-pub" in argv:
            assert argv[argv.index("--broker-pub") + 1] == ",".join(publish), name
        if "--broker-sub" in argv:
            assert argv[argv.index("--broker-sub") + 1] == ",".join(subscribe), name
        if name.startswith(("room", "auth", "moderation", "game", "gateway")):
            assert "--broker-pub" in argv, name
    single = {c.name for c in supervisor.plan(supervisor.UpConfig(data_dir="/tmp/d"))}
    assert "broker" in single and "broker-0" not in single


@pytest.mark.parametrize("shards", ["0", "65"])
def test_room_shards_out_of_range_stop_up(shards: str, caught: list[Any]) -> None:
    result = invoke(("up",), ["--room-shards", shards])
    assert result.exit_code == 2 and f"--room-shards {shards}: must be 1-64" in result.output
    assert caught == []


def test_up_runs_each_room_shard_as_a_room_instance_the_gateways_know() -> None:
    config = supervisor.UpConfig(room_shards=3, data_dir="/tmp/d")
    children = {child.name: child for child in supervisor.plan(config)}
    rooms = ["room-0", "room-1", "room-2"]
    assert [name for name in children if name.startswith("room")] == rooms
    endpoints = set()
    for name in rooms:
        argv = children[name].argv
        assert argv[argv.index("service") + 1] == "room"
        assert argv[argv.index("--room-instance") + 1] == name
        assert argv[argv.index("--room-instances") + 1] == ",".join(rooms)
        assert argv[argv.index("--room-db") + 1] == f"/tmp/d/{name}.sqlite3"
        endpoints.add(argv[argv.index("--bind") + 1])
    assert len(endpoints) == 3
    gateway = next(child for name, child in children.items() if name.startswith("gateway"))
    named = {item.split("=")[0]: item.split("=")[1] for item in gateway.argv
             if "=tcp://" in item}
    assert {named[name] for name in rooms} == endpoints
    single = {child.name for child in supervisor.plan(supervisor.UpConfig(data_dir="/tmp/d"))}
    assert "room" in single and not any(name.startswith("room-") for name in single)


def test_up_hands_its_store_to_the_room_instances_and_moderation_only() -> None:
    url = "postgresql://chat:s3cret@db.example.com:5432/chat"
    children = supervisor.plan(supervisor.UpConfig(room_shards=2, store=url))
    given = {child.name for child in children if child.env.get("SWITCHBOARD_STORE") == url}
    assert given == {"room-0", "room-1", "moderation"}
    assert not any("s3cret" in arg for child in children for arg in child.argv)  # ps shows argv


@pytest.mark.parametrize("command", [("up",), ("service", "room"), ("service", "moderation")])
@pytest.mark.parametrize("store, says", [
    ("mysql://db/chat", "is not a store"),
    ("postgresql://db.example.com", "names no host or no database"),
    ("postgresql://u:pw@db:port/chat", "the port is not a number"),
])
def test_a_store_that_is_no_store_stops_the_command(command: tuple[str, ...], store: str,
                                                    says: str, caught: list[Any]) -> None:
    for result in (invoke(command, ["--store", store]),
                   invoke(command, [], {"SWITCHBOARD_STORE": store})):
        assert result.exit_code == 2 and says in result.output, result.output
        assert "pw@" not in result.output  # a password is never printed
        assert caught == []


def test_up_plans_spare_room_instances_every_part_knows_but_does_not_start() -> None:
    url = "postgresql://chat@db.example.com/chat"
    config = supervisor.UpConfig(room_shards=2, room_spares=2, store=url, data_dir="/tmp/d")
    children = {child.name: child for child in supervisor.plan(config)}
    rooms = ["room-0", "room-1", "room-2", "room-3"]
    assert [name for name in children if name.startswith("room")] == rooms
    assert [children[name].autostart for name in rooms] == [True, True, False, False]
    for name in rooms:
        argv = children[name].argv
        assert argv[argv.index("--room-instances") + 1] == ",".join(rooms)
    gateway = next(child for name, child in children.items() if name.startswith("gateway"))
    assert {item.split("=")[0] for item in gateway.argv if "=tcp://" in item} >= set(rooms)
    one = supervisor.UpConfig(room_spares=1, store=url)
    assert one.room_instances() == ("room-0", "room-1") and one.room_spare_names() == (
        "room-1",)


@pytest.mark.parametrize("args, says", [
    (["--room-spares", "1"], "--room-spares needs a PostgreSQL --store"),
    (["--room-spares", "-1", "--store", "postgresql://db/chat"], "--room-spares -1: must be 0-63"),
    (["--room-shards", "60", "--room-spares", "5", "--store", "postgresql://db/chat"],
     "--room-spares 5: must be 0-4"),
])
def test_room_spares_that_cannot_be_stop_up(args: list[str], says: str,
                                            caught: list[Any]) -> None:
    result = invoke(("up",), args)
    assert result.exit_code == 2 and says in result.output, result.output
    assert caught == []


def test_room_spares_as_a_flag_and_from_its_variable(caught: list[Any]) -> None:
    url = "postgresql://chat@db.example.com/chat"
    assert invoke(("up",), ["--room-spares", "2", "--store", url]).exit_code == 0
    assert value_of(caught, "room_spares") == 2
    caught.clear()
    assert invoke(("up",), [], {"SWITCHBOARD_ROOM_SPARES": "1",
                                "SWITCHBOARD_STORE": url}).exit_code == 0
    assert value_of(caught, "room_spares") == 1
    caught.clear()
    result = invoke(("up",), [], {"SWITCHBOARD_ROOM_SPARES": "1"})  # SQLite: nothing moves
    assert result.exit_code == 2 and "--room-spares needs a PostgreSQL --store" in result.output
    assert invoke(("up",), [], {"SWITCHBOARD_ROOM_SPARES": "some"}).exit_code == 2
    assert caught == []


def test_room_handover_as_flags_and_from_its_variable(caught: list[Any]) -> None:
    assert invoke(("service", "room"), []).exit_code == 0
    assert value_of(caught, "room_handover") is True  # the default
    for args, env in ((["--no-room-handover"], {}),
                      ([], {"SWITCHBOARD_ROOM_HANDOVER": "false"})):
        caught.clear()
        assert invoke(("service", "room"), args, env).exit_code == 0
        assert value_of(caught, "room_handover") is False
    caught.clear()
    assert invoke(("service", "room"), ["--room-handover"],
                  {"SWITCHBOARD_ROOM_HANDOVER": "false"}).exit_code == 0
    assert value_of(caught, "room_handover") is True  # the flag wins over the variable
    caught.clear()
    result = invoke(("service", "room"), [], {"SWITCHBOARD_ROOM_HANDOVER": "maybe"})
    assert result.exit_code == 2 and caught == []
