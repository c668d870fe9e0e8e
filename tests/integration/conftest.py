from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="module")
def mini_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Broker + the miniapp service + one gateway, as real processes."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("mini")))
    cluster.start_broker()
    cluster.start_service("tests.support.miniapp")
    cluster.start_gateway("--ping-interval", "1", "--ping-timeout", "1")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def chat_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The whole application behind two gateways (separate processes)."""
    from tests.support.cluster import start_chat_cluster

    cluster = start_chat_cluster(Path(tmp_path_factory.mktemp("chat")), gateways=2)
    try:
        yield cluster
    finally:
        cluster.stop()
