"""The moderation policy at the edge, end to end: every gateway judges events by what
moderation publishes (gateway.policing), so events go from their gateway to their owner only.

Shown here, with clients on their default options (polling, then the upgrade) through
HAProxy (round robin, no stickiness) in front of three gateways: a mute and a ban reach every
gateway within 1 s; a user with a socket on each gateway gets no more than its per-user
limit in all; a gateway
whose moderation was killed keeps enforcing the mutes it holds, lets chat go on, and says so
in /health; a gateway that never had a snapshot says so and loads one when moderation
answers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from switchboard.shared.envelope import RequestKind
from switchboard.shared.policy import PolicySnapshot
from tests.integration.chat_helpers import (
    Clients,
    failed,
    policy_agreed,
    policy_applied,
    unique,
)
from tests.support.backbone import FakeGateway
from tests.support.balancer import balanced
from tests.support.cluster import Cluster, http_get, start_chat_cluster
from tests.support.polling import poll_until

#: Per socket, per user, per window (s): low enough to reach, the window long enough for
#: nothing to leave it while a test runs.
EVENT_LIMIT, USER_EVENT_LIMIT, WINDOW = 50, 9, 60
MUTED = "you are muted for 60 more seconds"


@pytest.fixture
def three(tmp_path: Path) -> Iterator[Cluster]:
    """Three gateways behind HAProxy, fresh for each test: a test counts the policy's
    versions, so no other test's departures may change it meanwhile."""
    cluster = start_chat_cluster(
        tmp_path, gateways=3,
        moderation_args=("--event-limit", str(EVENT_LIMIT), "--user-event-limit",
                         str(USER_EVENT_LIMIT), "--event-window", str(WINDOW)))
    with balanced(cluster, tmp_path):  # stops the cluster at the end
        yield cluster


async def moderation_snapshot(cluster: Cluster) -> PolicySnapshot:
    """The policy moderation itself holds now (asked the way a gateway asks)."""
    gateway = FakeGateway("gwprobe")
    try:
        reply = await gateway.request(cluster.services["moderation"], kind=RequestKind.POLICY)
        return PolicySnapshot.from_list((reply.args or [None])[0])
    finally:
        gateway.close()


def health(cluster: Cluster, index: int) -> tuple[int, dict[str, object]]:
    status, _, body = http_get(cluster.url(index) + "/health")
    return status, json.loads(body)


async def test_a_mute_and_a_ban_reach_every_gateway_within_a_second(three: Cluster) -> None:
    async with Clients(three) as clients:
        admin = await clients.admin(0)
        hushed_id, banned_id = unique("hushed"), unique("banned")
        hushed = [await clients.user_on(i, hushed_id) for i in range(3)]
        banned = [await clients.user_on(i, banned_id) for i in range(3)]
        before = await policy_agreed(three, "mutes")
        asked = time.monotonic()
        assert await admin.call("mute user", {"userId": hushed_id, "seconds": 60},
                                ns="/admin") == {"success": True}
        took = await policy_applied(three, before, "mutes", since=asked)
        print(f"mute on each gateway after {[round(t, 3) for t in took]} s")
        assert max(took) < 1.0, took
        for client in hushed:  # one on each gateway
            assert await client.call("chat message", {"content": "hello?"}) == failed(MUTED)

        before = await policy_agreed(three, "bans")
        asked = time.monotonic()
        assert await admin.call("ban user", {"userId": banned_id, "reason": "spam"},
                                ns="/admin") == {"success": True}
        took = await policy_applied(three, before, "bans", since=asked)
        print(f"ban on each gateway after {[round(t, 3) for t in took]} s")
        assert max(took) < 1.0, took
        for client in banned:
            assert await client.next("banned") == {"reason": "spam"}


async def test_a_user_on_three_gateways_gets_its_limit_in_all(three: Cluster) -> None:
    async with Clients(three) as clients:
        user_id = unique("spread")
        sockets = [await clients.user_on(i, user_id) for i in range(3)]
        # Moderation counts the user on three gateways; every gateway has that before the
        # test sends anything.
        snapshot = await poll_until(
            lambda: moderation_snapshot(three),
            lambda snap: [user_id, 3] in [list(entry) for entry in snap.spread],
            "moderation to count the user on three gateways")
        await policy_applied(three, snapshot.version - 1)
        accepted = 0
        for client in sockets:
            while (await client.call("get online users"))["success"]:
                accepted += 1
        assert accepted <= USER_EVENT_LIMIT * 1.1
        assert accepted == 3 * (USER_EVENT_LIMIT // 3)  # each gateway its share
        # Another user is not affected.
        other = await clients.user(1, unique("other"))
        assert (await other.call("get online users"))["success"] is True


async def test_a_gateway_keeps_enforcing_when_moderation_is_gone(tmp_path: Path) -> None:
    cluster = start_chat_cluster(tmp_path, gateways=1)
    try:
        async with Clients(cluster) as clients:
            admin = await clients.admin(0)
            hushed = await clients.user(0, unique("hushed"))
            talker = await clients.user(0, unique("talker"))
            listener = await clients.user(0, unique("listener"))
            before = await policy_agreed(cluster, "mutes")
            assert await admin.call("mute user", {"userId": hushed.user_id, "seconds": 60},
                                    ns="/admin") == {"success": True}
            await policy_applied(cluster, before, "mutes")

            cluster.parts["moderation"].kill()
            status, body = await poll_until(
                lambda: asyncio.to_thread(health, cluster, 0),
                lambda answer: answer[1]["status"] == "warning",
                "/health to warn that moderation is gone")
            assert status == 200  # chat goes on: the balancer keeps the gateway
            reasons = body["reasons"]
            assert isinstance(reasons, list) and any(
                "service moderation unreachable: enforcing the last policy" in r
                for r in reasons), reasons

            ack = await hushed.call("chat message", {"content": "now?"})
            assert ack["success"] is False and ack["error"].startswith("you are muted"), ack
            sent = await talker.call("chat message", {"content": "still here"})
            assert sent["success"] is True
            line = await listener.wait_for("chat message", lambda p: p["id"] == sent["messageId"])
            assert line["content"] == "still here"
    finally:
        cluster.stop()


async def test_a_gateway_without_a_snapshot_says_so_until_moderation_answers(
        tmp_path: Path) -> None:
    cluster = start_chat_cluster(tmp_path, gateways=1)
    try:
        moderation = cluster.parts["moderation"]
        moderation.signal(signal.SIGSTOP)
        try:
            # Not waiting long for services at start: it serves (and says what it lacks).
            cluster.start_gateway("--ready-timeout", "1", "--request-timeout", "1", wait=False)
            status, body = await poll_until(
                lambda: asyncio.to_thread(health, cluster, 1),
                lambda answer: "no policy from moderation yet: events and connections refused"
                in cast(list[str], answer[1]["reasons"]), "/health to say it has no policy", 20,
                retry_on=(OSError,))
            assert status == 503 and body["status"] == "unhealthy"
        finally:
            moderation.signal(signal.SIGCONT)
        await poll_until(lambda: asyncio.to_thread(health, cluster, 1),
                         lambda answer: answer[0] == 200, "the snapshot once moderation answers")
        async with Clients(cluster) as clients:
            user = await clients.user(1, unique("late"))
            assert (await user.call("get online users"))["success"] is True
    finally:
        cluster.stop()
