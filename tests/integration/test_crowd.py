"""A crowd behind one address (an office's NAT, a campus, a mobile carrier): 1,000 official
Node clients on their default options, each a different user with a valid token, all from
this one host, through HAProxy (no stickiness) over two gateways running the default limits
(``--handshake-rate 600``, moderation's ``--connect-limit 50``).

They all get in within 30 s (users with valid tokens are limited per user, and a session
that authenticates gives its handshake back: gateway.admission); then the gateway holding
about half of them is killed, and all of those are back on the other within 30 s with none
refused (the crash releases its crowd's credit on the survivor). The flood bounds are the
flood tests' (test_polling, test_chat_limits_e2e, tests/unit/gateway/test_gateway_admission).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.balancer import balanced
from tests.support.cluster import get_json, start_chat_cluster, token
from tests.support.node import NODE_DIR, find_node, run_flow

CROWD = 1000
CONNECT_MS = 30_000
BACK_MS = 30_000


@pytest.mark.timeout(240)
def test_a_thousand_users_behind_one_address_get_in_and_back_in_after_a_crash(
        tmp_path: Path) -> None:
    node = find_node("the crowd test")
    # The default limits: start_chat_cluster raises moderation's for the other tests.
    cluster = start_chat_cluster(tmp_path, gateways=2,
                                 moderation_args=("--connect-limit", "50"))
    with balanced(cluster, tmp_path):
        assert cluster.balancer_url is not None
        victim = cluster.parts[f"gateway-{cluster.gateway_ports[0]}"]
        assert victim.process is not None
        victim_id = cluster.stats(0)["gateway"]
        survivor_id = cluster.stats(1)["gateway"]
        tokens = tmp_path / "tokens.json"  # too many for an environment variable
        tokens.write_text(json.dumps([token(f"crowd-{i}", f"Crowd {i}") for i in range(CROWD)]))
        result = run_flow(node, {
            "url": cluster.balancer_url, "tokensFile": str(tokens),
            "victimPid": victim.process.pid,
            "victimId": victim_id, "connectMs": CONNECT_MS, "backMs": BACK_MS,
            "deadlineMs": CONNECT_MS + BACK_MS + 20_000,
        }, NODE_DIR / "crowd.mjs", "CROWD_FLOW", timeout=(CONNECT_MS + BACK_MS) / 1000 + 40)
        survivor = get_json(cluster.url(1) + "/stats")
    print(f"crowd: {CROWD} in {result['connectMs']} ms; {result['victims']} on the killed "
          f"gateway, all back in {result['backMs']} ms; survivor's handshakes "
          f"{survivor['handshakes']}")
    assert result["connectMs"] <= CONNECT_MS and result["backMs"] <= BACK_MS
    # The balancer spread them: the crash took a real share of the crowd with it.
    assert result["victims"] >= CROWD // 4, result["victims"]
    assert all(sid.startswith(survivor_id + ".") for sid in result["ids"])
    assert len(set(result["ids"])) == CROWD
    refusals = [e for phase in ("before", "after") for e in result["errors"][phase]
                if e["data"] is not None or e["status"] in (403, 429)]
    # Before the crash, the first burst may meet the bucket (then retried); after it, none.
    assert [e for e in result["errors"]["after"] if e in refusals] == []
    assert survivor["handshakes"]["refused"] == 0, survivor["handshakes"]
