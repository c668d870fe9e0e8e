"""The publisher's journal: numbering, beats, bounded memory, replays."""

from __future__ import annotations

from switchboard.shared.envelope import PubKind, Publication, Reply
from switchboard.shared.journal import Journal


def publish(journal: Journal, count: int, now: float = 0.0) -> list[int]:
    seqs = []
    for _ in range(count):
        stamp = journal.stamp()
        body = Publication(PubKind.EMIT, "/", "e", [stamp.seq]).encode_stamped(
            stamp.origin, stamp.seq, stamp.epoch)
        journal.record(stamp.seq, now, b"topic", body)
        seqs.append(stamp.seq)
    return seqs


def test_publications_are_numbered_and_carry_the_last_beat() -> None:
    journal = Journal(origin="o1")
    first = journal.stamp()
    assert (first.origin, first.seq, first.epoch) == ("o1", 1, 0)
    beat = journal.beat(0.0)
    assert (beat.seq, beat.epoch) == (1, 1)  # a beat names the latest seq, not a new one
    after = journal.stamp()
    assert (after.seq, after.epoch) == (2, 1)
    journal.path_broken()
    assert journal.stamp().epoch == 2


def test_replay_returns_what_follows_in_order_as_published() -> None:
    journal = Journal(origin="o1")
    publish(journal, 5)
    batch = journal.replay(2)
    assert (batch.origin, batch.upto, batch.complete, batch.more) == ("o1", 5, True, False)
    assert [e.seq for e in batch.entries] == [3, 4, 5]
    decoded = Publication.decode(batch.entries[0].body)
    assert (decoded.args, decoded.origin, decoded.seq) == ([3], "o1", 3)
    assert journal.replay(5).entries == ()
    assert journal.replay(5).complete
    # Through the wire, as a reply.
    assert Reply.decode(Reply(7, replay=batch).encode()).replay == batch


def test_replay_in_pages() -> None:
    journal = Journal(origin="o1")
    publish(journal, 25)
    first = journal.replay(0, limit=10)
    assert ([e.seq for e in first.entries][-1], first.upto, first.more) == (10, 10, True)
    second = journal.replay(first.upto, limit=10)
    third = journal.replay(second.upto, limit=10)
    assert (third.upto, third.more, len(third.entries)) == (25, False, 5)


def test_bounded_by_count_and_age_and_says_when_incomplete() -> None:
    journal = Journal(size=10, keep=5.0, origin="o1")
    publish(journal, 30, now=0.0)
    assert len(journal) == 10
    batch = journal.replay(5)
    assert not batch.complete and [e.seq for e in batch.entries] == list(range(21, 31))
    assert journal.replay(20).complete  # 21 onwards are all there
    publish(journal, 3, now=10.0)
    journal.beat(12.0)  # the first 30 are older than 5 s now
    assert len(journal) == 3
    assert [e.seq for e in journal.replay(30).entries] == [31, 32, 33]
    assert not journal.replay(29).complete
