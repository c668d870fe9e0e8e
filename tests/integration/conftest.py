from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="module")
def mini_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Broker + the miniapp service + one gateway, as real processes."""
    from tests.support.cluster import start_mini_cluster

    cluster = start_mini_cluster(Path(tmp_path_factory.mktemp("mini")),
                                 "--ping-interval", "1", "--ping-timeout", "1")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module", params=["direct", "polling-behind-balancer"])
def chat_cluster(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The whole application (separate processes), twice: two gateways that clients on their
    default options (polling, then the upgrade) reach directly; and three gateways behind
    HAProxy (round robin, no stickiness) that polling-only clients reach through it, so that
    their requests land on every gateway, with rooms and presence partitioned over two room
    instances (every contract row then crosses partitions: rooms, users and the reads
    gathered from both), publications over two brokers, and the store in PostgreSQL."""
    from tests.integration.chat_helpers import ROOM_GRACE
    from tests.support.balancer import balancer
    from tests.support.cluster import metric, start_chat_cluster

    workdir = Path(tmp_path_factory.mktemp("chat"))
    grace = ("--room-empty-grace", str(ROOM_GRACE))
    if request.param == "direct":
        cluster = start_chat_cluster(workdir, gateways=2, room_args=grace)
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    # The several-hosts variant keeps everything in one PostgreSQL database, as several
    # hosts would (docs/storage.md); the direct one in SQLite files, the default.
    postgres = request.getfixturevalue("postgres")
    store = postgres.fresh_url()
    cluster = start_chat_cluster(workdir, gateways=3, room_args=grace, room_instances=2,
                                 brokers=2, store=store)
    try:
        with balancer(workdir, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 3
            cluster.transports = ["polling"]
            yield cluster
            # The variant is only worth its name if requests did cross gateways.
            forwarded = [cluster.stats(i)["pollsForwarded"] for i in range(3)]
            assert sum(forwarded) > 0, forwarded
            # ... and the partitions only if both instances had events of their own.
            events = {name: sum(metric(cluster.url(i), "switchboard_gateway_request_seconds_count",
                                       service=name, kind="event") for i in range(3))
                      for name in ("room-0", "room-1")}
            assert all(count > 0 for count in events.values()), events
            # ... and the store only if the messages are in PostgreSQL, and no file was made.
            schema = postgres.schema_of(store)
            assert int(postgres.psql(f"SELECT count(*) FROM {schema}.messages")) > 0
            assert not list(workdir.glob("*.sqlite3"))
            # ... and the two brokers only if both carried publications.
            carried = [sum(cluster.stats(i)["brokers"][k]["publications"] for i in range(3))
                       for k in range(2)]
            assert all(count > 0 for count in carried), carried
    finally:
        cluster.stop()
