"""End to end: moderation's rate limits — per socket and per user across gateways, enforced
by the gateways from the policy moderation publishes; connects per user, and per client
address for anonymous sockets, by moderation.

This module runs its own two-gateway cluster with low limits: 5 events per socket and 8 per
user per 30 s, and 5 new connections per user (or anonymous address) per 60 s. Every client
of the tests comes from 127.0.0.1: each test's users are new ones, and only the connect test
connects anonymously. The module takes a few seconds, far less than the windows, so nothing
leaves a window while it runs. It also sets banned words.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.chat_helpers import (
    ChatClient,
    Clients,
    failed,
    policy_applied,
    policy_figures,
    refusal,
    unique,
)
from tests.support.cluster import Cluster, start_chat_cluster, token

EVENT_LIMIT = 5
USER_EVENT_LIMIT = 8
CONNECT_LIMIT = 5
RATE_LIMITED = "rate limit exceeded"


@pytest.fixture(scope="module")
def limits_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_chat_cluster(
        Path(tmp_path_factory.mktemp("limits")),
        moderation_args=(
            "--event-limit", str(EVENT_LIMIT), "--user-event-limit", str(USER_EVENT_LIMIT),
            "--connect-limit", str(CONNECT_LIMIT), "--event-window", "30",
            "--connect-window", "60",
        ),
        room_args=("--banned-words", "darn,heck no"),
    )
    try:
        yield cluster
    finally:
        cluster.stop()


async def ok(client: ChatClient, times: int) -> None:
    for _ in range(times):
        assert (await client.call("get online users"))["success"] is True


async def test_event_limits_per_socket_and_per_user(limits_cluster: Cluster) -> None:
    async with Clients(limits_cluster) as clients:
        solo = await clients.user(0, unique("solo"))
        pair_id = unique("pair")
        pair_gw0 = await clients.user(0, pair_id)
        pair_gw1 = await clients.user(1, pair_id)
        calm = await clients.user(1, unique("calm"))

        # Per socket: 5 events, then refused (with an ack: failed ack; without: `error`).
        await ok(solo, EVENT_LIMIT)
        assert await solo.call("get online users") == failed(RATE_LIMITED)
        await solo.emit("get rooms")
        assert await solo.next("error") == {"event": "get rooms", "message": RATE_LIMITED}
        assert await solo.call("chat message", {"content": "over the limit"}) == failed(
            RATE_LIMITED)

        # Per user, across two sockets on two gateways: moderation tells both that the user
        # is on two, and each lets it send half of its 8; then both refuse, although
        # neither socket reached its own limit of 5.
        await ok(pair_gw0, 4)
        await ok(pair_gw1, 4)
        assert await pair_gw1.call("get online users") == failed(RATE_LIMITED)
        assert await pair_gw0.call("chat message", {"content": "over the limit"}) == failed(
            RATE_LIMITED)

        # Another user is unaffected; refused lines reached nobody (this one is the barrier;
        # it also shows banned words replaced case-insensitively, whole words only).
        await ok(calm, 3)
        sent = await calm.call("chat message",
                               {"content": "Darn it, HECK NO <b>darned</b> heck"})
        assert sent["success"] is True
        for client in (solo, pair_gw0, pair_gw1):
            line = await client.next("chat message")
            assert line["id"] == sent["messageId"]
            assert line["content"] == "*** it, *** darned heck"
            assert not client.seen("chat message",
                                   predicate=lambda p: p["content"] == "over the limit")


async def test_connect_limit_per_user_and_per_anonymous_address(
        limits_cluster: Cluster) -> None:
    """A user with a valid token has the connect limit to itself (thousands of users share
    an office's address: one of them reconnecting in a loop costs the others nothing);
    anonymous sockets share their address's. The limit is the cluster's: the connects
    spread over both gateways add up at moderation, which throttles the connector on each."""
    async with Clients(limits_cluster) as clients:
        user_id = unique("eager")
        throttles = max(policy_figures(limits_cluster, "throttles"))
        allowed = [await clients.user(i % 2, user_id) for i in range(CONNECT_LIMIT)]
        await policy_applied(limits_cluster, throttles, "throttles")
        limited = {"message": "Rate limit exceeded"}
        again = token(user_id, "Eager")
        for gateway in (0, 1):
            assert await refusal(limits_cluster.url(gateway), "/", auth={"token": again}) == \
                limited
        # Other users of the same address are not counted against it.
        others = [await clients.user(i % 2, unique("colleague"))
                  for i in range(CONNECT_LIMIT + 2)]
        # Anonymous sockets (/game allows them) share the address's limit.
        throttles = max(policy_figures(limits_cluster, "throttles"))
        anonymous = [await clients.anonymous(i % 2) for i in range(CONNECT_LIMIT)]
        await policy_applied(limits_cluster, throttles, "throttles")
        assert await refusal(limits_cluster.url(1), "/game") == limited
        # Auth runs first: a missing token is refused for that reason, not counted.
        assert await refusal(limits_cluster.url(0), "/") == {
            "message": "Authentication error: No token provided"}
        # Connected clients are unaffected.
        for client in [*allowed, *others]:
            assert (await client.call("get online users"))["success"] is True
        assert len(anonymous) == CONNECT_LIMIT
