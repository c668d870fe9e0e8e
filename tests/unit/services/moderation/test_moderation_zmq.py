"""ModerationService behind real ZeroMQ sockets: its policy snapshot (with the connect limits
the gateways apply), a socket told CONNECTED counted, and a ban that reaches the gateways as a
policy update and the user's sockets as a disconnect."""

from __future__ import annotations

from pathlib import Path

from switchboard.services.moderation import Config, ModerationService
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, RequestKind
from switchboard.shared.policy import Change, PolicySnapshot, PolicyUpdate
from switchboard.shared.publisher import Publisher
from tests.support.backbone import FakeGateway, running_broker, running_service


async def test_moderation_over_real_sockets(tmp_path: Path) -> None:
    config = Config(moderation_db=str(tmp_path / "m.sqlite3"), connect_limit=2, event_limit=7)

    def factory(publisher: Publisher) -> ModerationService:
        return ModerationService(publisher, config)

    with running_broker() as broker:
        async with running_service(factory, broker) as (service, cfg):
            gw = FakeGateway(broker=broker)
            try:
                await gw.subscribe(topics.POLICY)
                await gw.subscribe(topics.room("/chat", "user:u1"))

                # The snapshot a gateway starts from: the limits, nobody banned yet.
                reply = await gw.request(cfg.bind, kind=RequestKind.POLICY)
                snapshot = PolicySnapshot.from_list((reply.args or [None])[0])
                assert (snapshot.instance, snapshot.version, snapshot.bans) == (
                    service.instance, 0, ())
                assert snapshot.rules.event_limit == 7
                assert snapshot.rules.mutes("/chat", "chat message")

                assert (snapshot.rules.connect_limit, snapshot.rules.connect_window) == (
                    2, 60.0)  # the gateways limit connects by these

                # The sockets the gateways tell us of are counted, per user and gateway.
                user = gw.session(1, ns="/chat", user_id="u1", username="u1", role="user")
                told = await gw.request(cfg.bind, kind=RequestKind.CONNECTED, session=user)
                assert told.ok and service.spread.counted(user.sid)

                # A ban reaches every socket of the user through the broker.
                root = gw.session(9, ns="/admin", user_id="root", username="root", role="admin")
                ban = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=root,
                                       event="ban user",
                                       args=[{"userId": "u1", "reason": "spam"}])
                assert ban.ok and ban.ack == [{"success": True}]
                topic, pub = await gw.next_publication()
                assert (topic, pub.kind) == (topics.POLICY, PubKind.POLICY)
                update = PolicyUpdate.from_list(pub.args[0])
                assert (update.instance, update.version, update.change, update.user,
                        update.until) == (service.instance, 1, Change.BAN, "u1", None)
                topic, pub = await gw.next_publication()
                assert topic == topics.room("/chat", "user:u1")
                assert (pub.kind, pub.ns, pub.room, pub.event, pub.args) == (
                    PubKind.DISCONNECT, "/chat", "user:u1", "banned", [{"reason": "spam"}])
                assert isinstance(service, ModerationService) and "u1" in service.bans
            finally:
                gw.close()
