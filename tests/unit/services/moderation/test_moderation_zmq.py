"""ModerationService behind real ZeroMQ sockets: a CONNECT refusal, filter verdicts, a ban."""

from __future__ import annotations

from pathlib import Path

from switchboard.services.moderation import Config, ModerationService
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, RequestKind
from switchboard.shared.publisher import Publisher
from tests.support.backbone import FakeGateway, running_broker, running_service


async def test_moderation_over_real_sockets(tmp_path: Path) -> None:
    config = Config(moderation_db=str(tmp_path / "m.sqlite3"), connect_limit=2,
                    banned_words="darn")

    def factory(publisher: Publisher) -> ModerationService:
        return ModerationService(publisher, config)

    with running_broker() as broker:
        async with running_service(factory, broker) as (service, cfg):
            gw = FakeGateway(broker=broker)
            try:
                await gw.subscribe(topics.room("/chat", "user:u1"))
                user = gw.session(1, ns="/chat", user_id="u1", username="ann", role="user")

                # FILTER: a good event comes back cleaned, a bad one is refused.
                ok = await gw.request(cfg.bind, kind=RequestKind.FILTER, session=user,
                                      event="chat message",
                                      args=[{"content": "<script>x</script>darn <b>hi</b>"}])
                assert ok.ok and ok.args == [{"content": "*** hi", "type": "text"}]
                bad = await gw.request(cfg.bind, kind=RequestKind.FILTER, session=user,
                                       event="chat message", args=[{"content": ""}])
                assert (bad.ok, bad.error) == (False, "content: must be 1..1000 characters")

                # CONNECT: the per-IP limit (2 here) refuses the third connection.
                for n in (1, 2):
                    first = await gw.request(cfg.bind, kind=RequestKind.CONNECT,
                                             session=gw.session(n, ns="/game"), auth={})
                    assert first.ok
                third = await gw.request(cfg.bind, kind=RequestKind.CONNECT,
                                         session=gw.session(3, ns="/game"), auth={})
                assert (third.ok, third.error) == (False, "Rate limit exceeded")

                # A ban reaches every socket of the user through the broker.
                root = gw.session(9, ns="/admin", user_id="root", username="root", role="admin")
                ban = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=root,
                                       event="ban user",
                                       args=[{"userId": "u1", "reason": "spam"}])
                assert ban.ok and ban.ack == [{"success": True}]
                topic, pub = await gw.next_publication()
                assert topic == topics.room("/chat", "user:u1")
                assert (pub.kind, pub.ns, pub.room, pub.event, pub.args) == (
                    PubKind.DISCONNECT, "/chat", "user:u1", "banned", [{"reason": "spam"}])
                assert isinstance(service, ModerationService) and "u1" in service.bans
            finally:
                gw.close()
