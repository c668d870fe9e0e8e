"""Delivery continuity, sans-I/O: duplicates dropped, gaps found, replays merged in order.

A publisher's stream is simulated with its real :class:`Journal`; "the broker" is a list the
test passes to the gateway's :class:`Continuity`, dropping what a crash would lose.
"""

from __future__ import annotations

from switchboard.gateway.continuity import AskReplay, Continuity, TrackState
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.journal import Journal


class Publisher:
    def __init__(self, origin: str = "o1", source: str = "room") -> None:
        self.journal = Journal(origin=origin)
        self.source = source

    def data(self, n: int) -> Publication:
        stamp = self.journal.stamp()
        pub = Publication(PubKind.EMIT, "/", "chat message", [n], room="r", source=self.source,
                          origin=stamp.origin, seq=stamp.seq, epoch=stamp.epoch)
        body = pub.encode()
        self.journal.record(stamp.seq, 0.0, b"t", body)
        return Publication.decode(body)

    def beat(self) -> Publication:
        stamp = self.journal.beat(0.0)
        return Publication(PubKind.BEAT, "", source=self.source, origin=stamp.origin,
                           seq=stamp.seq, epoch=stamp.epoch)


def feed(cont: Continuity, pubs: list[Publication]) -> tuple[list[int], list[AskReplay]]:
    delivered, asks = [], []
    for pub in pubs:
        out, ask = cont.receive(pub)
        delivered += [p.args[0] for p in out]
        if ask:
            asks.append(ask)
    return delivered, asks


def test_a_steady_stream_is_delivered_once_in_order() -> None:
    pub, cont = Publisher(), Continuity()
    stream = [pub.beat()]
    for n in range(1, 31):
        stream.append(pub.data(n))
        if n % 10 == 0:
            stream.append(pub.beat())
    delivered, asks = feed(cont, stream)
    assert delivered == list(range(1, 31)) and asks == []
    assert cont.tracks["o1"].watermark == 30 and cont.tracks["o1"].seen == set()


def test_duplicates_are_dropped() -> None:
    pub, cont = Publisher(), Continuity()
    first, second = pub.data(1), pub.data(2)
    beat = pub.beat()
    delivered, _ = feed(cont, [first, second, second, beat, first, second])
    assert delivered == [1, 2]
    assert cont.counters["duplicates"] == 3


def test_a_lost_stretch_is_replayed_before_what_follows() -> None:
    """The broker dies: messages 3..5 and a beat are lost; 6 arrives via the new broker."""
    pub, cont = Publisher(), Continuity()
    delivered, _ = feed(cont, [pub.beat(), pub.data(1), pub.data(2), pub.beat()])
    assert delivered == [1, 2]
    lost = [pub.data(3), pub.data(4), pub.beat(), pub.data(5)]
    assert len(lost) == 4
    after, asks = feed(cont, [pub.data(6), pub.data(7), pub.beat()])
    assert after == []  # held: nothing may overtake the missing ones
    assert asks == [AskReplay("room", "o1", 2)]
    assert cont.tracks["o1"].state is TrackState.REPLAYING
    out, more = cont.replayed("o1", pub.journal.replay(asks[0].after))
    assert more is None
    assert [p.args[0] for p in out] == [3, 4, 5, 6, 7]  # each once, in order
    assert cont.tracks["o1"].state is TrackState.LIVE
    # Life goes on: the next beat and message are ordinary.
    later, asks = feed(cont, [pub.data(8), pub.beat(), pub.data(9)])
    assert later == [8, 9] and asks == []
    assert cont.counters["gaps"] == 1


def test_a_gap_is_found_on_the_first_publication_after_a_reconnection() -> None:
    """The publisher saw the broker subscribe again: the epoch moves on at once."""
    pub, cont = Publisher(), Continuity()
    feed(cont, [pub.beat(), pub.data(1)])
    pub.data(2)  # lost
    pub.journal.path_broken()
    delivered, asks = feed(cont, [pub.data(3)])
    assert delivered == [] and asks == [AskReplay("room", "o1", 0)]
    out, _ = cont.replayed("o1", pub.journal.replay(0))
    assert [p.args[0] for p in out] == [2, 3]  # 1 was delivered already: not again


def test_a_new_broker_makes_every_origin_suspect() -> None:
    pub, other, cont = Publisher(), Publisher("o2", "game"), Continuity()
    feed(cont, [pub.beat(), pub.data(1), other.beat(), other.data(100)])
    cont.broker_changed()
    _, asks = feed(cont, [pub.beat()])
    assert asks == [AskReplay("room", "o1", 0)]
    _, asks = feed(cont, [other.data(101)])
    assert asks == [AskReplay("game", "o2", 0)]


def test_one_broker_restart_costs_one_replay() -> None:
    """A restart is told twice (the new connection, then the new instance's heartbeat): a
    replay not yet sent covers both, so the second notice asks for nothing more."""
    pub, cont = Publisher(), Continuity()
    feed(cont, [pub.beat(), pub.data(1)])
    pub.data(2)  # lost with the old broker
    cont.broker_changed()  # the new connection
    delivered, asks = feed(cont, [pub.data(3)])
    assert delivered == [] and len(asks) == 1
    cont.broker_changed()  # the new instance's heartbeat, before the replay was sent
    cont.asking("o1")  # the broker settled: the replay goes out now
    out, more = cont.replayed("o1", pub.journal.replay(asks[0].after))
    assert [p.args[0] for p in out] == [2, 3] and more is None
    delivered, asks = feed(cont, [pub.data(4), pub.beat(), pub.data(5)])
    assert delivered == [4, 5] and asks == []


def test_a_broker_change_after_the_replay_was_sent_asks_again() -> None:
    """What the replay already sent cannot cover: the next message asks for a replay."""
    pub, cont = Publisher(), Continuity()
    feed(cont, [pub.beat(), pub.data(1)])
    pub.journal.path_broken()
    _, asks = feed(cont, [pub.data(2)])
    cont.asking("o1")
    cont.broker_changed()
    cont.replayed("o1", pub.journal.replay(asks[0].after))
    _, asks = feed(cont, [pub.data(3)])
    assert asks == [AskReplay("room", "o1", 2)]


def test_a_paged_replay_asks_again_and_keeps_the_order() -> None:
    pub, cont = Publisher(), Continuity()
    feed(cont, [pub.beat()])
    for n in range(1, 26):
        pub.data(n)  # all lost
    pub.beat()
    _, asks = feed(cont, [pub.data(26)])
    got: list[int] = []
    ask: AskReplay | None = asks[0]
    pages = 0
    while ask is not None:
        out, ask = cont.replayed("o1", pub.journal.replay(ask.after, limit=10))
        got += [p.args[0] for p in out]
        pages += 1
    assert pages == 3 and got == list(range(1, 27))


def test_a_failed_replay_delivers_what_was_held_and_resumes() -> None:
    pub, cont = Publisher(), Continuity()
    feed(cont, [pub.beat(), pub.data(1)])
    pub.data(2)
    pub.beat()
    _, asks = feed(cont, [pub.data(3), pub.beat(), pub.data(4)])
    assert len(asks) == 1
    out, more = cont.replayed("o1", None)
    assert [p.args[0] for p in out] == [3, 4] and more is None
    assert cont.counters["incomplete"] == 1
    delivered, asks = feed(cont, [pub.data(5), pub.beat()])
    assert delivered == [5] and asks == []


def test_a_restarted_publisher_cannot_answer_for_its_predecessor() -> None:
    old, cont = Publisher("old"), Continuity()
    feed(cont, [old.beat(), old.data(1)])
    old.data(2)
    old.beat()
    _, asks = feed(cont, [old.data(3)])
    successor = Journal(origin="new")
    out, _ = cont.replayed("old", successor.replay(asks[0].after))
    assert [p.args[0] for p in out] == [3]
    assert cont.counters["incomplete"] == 1
    # The successor is a new origin: its first word starts a track of its own.
    new = Publisher("new")
    delivered, asks = feed(cont, [new.data(10), new.beat(), new.data(11)])
    assert delivered == [10, 11] and asks == []


def test_holding_is_bounded() -> None:
    pub, cont = Publisher(), Continuity(max_held=5)
    feed(cont, [pub.beat()])
    pub.data(0)
    pub.beat()
    delivered, asks = feed(cont, [pub.data(n) for n in range(1, 8)])
    assert len(asks) == 1
    # Gave up holding at the sixth (all six delivered then), the seventh came live.
    assert delivered == [1, 2, 3, 4, 5, 6, 7]
    assert cont.counters["abandoned"] == 1
    assert cont.replayed("o1", pub.journal.replay(0)) == ([], None)  # too late: ignored


def test_unnumbered_and_unknown_are_not_tracked() -> None:
    cont = Continuity()
    assert cont.replayed("nobody", None) == ([], None)
    assert cont.tracks == {}
