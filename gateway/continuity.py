"""The gateway's side of delivery across a broker crash (pure: no sockets, no loop).

Every service publication carries its publisher process (``origin``), its number
(``seq``) and the epoch of the publisher's last beat (see :mod:`switchboard.shared.journal`).
Per origin, :class:`Continuity` keeps a *watermark*: the ``seq`` of the last beat it
received with every beat before it, so every publication up to it that this gateway was
meant to get has arrived (one publisher → broker → gateway path is FIFO). Then:

- a publication at or below the watermark, or one already seen since, is a duplicate;
- a beat or publication whose epoch says a beat was missed means the path broke (a broker
  crash, a reconnection): the origin goes to ``REPLAYING``, what arrives meanwhile is held,
  and the caller is asked (:class:`AskReplay`) to fetch everything after the watermark
  from the publisher over request/reply; :meth:`Continuity.replayed` merges that batch
  with what was held, in ``seq`` order, without duplicates;
- a new broker (:meth:`Continuity.broker_changed`) makes every origin whose path passes it
  suspect: its next message asks for a replay even if no beat looks missing. An origin
  whose replay is still to be sent is not: the gateway sends it only once the new broker
  has settled (:meth:`Continuity.asking`), so it covers what the change lost too.

With several brokers a publisher numbers each path as an origin of its own
(:mod:`switchboard.shared.journal`), and each track remembers the broker its path passes.

State per origin::

    LIVE --gap / suspect--> REPLAYING --replayed(batch)--> LIVE
                              \\--replayed(batch with more)--> REPLAYING (ask again)
                              \\--replayed(None: failed)--> LIVE (what was held, delivered)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from switchboard.shared.envelope import PubKind, Publication, ReplayBatch

__all__ = ["AskReplay", "Continuity", "Track", "TrackState"]

#: Origins remembered (publisher processes: a restarted service is a new one).
MAX_ORIGINS = 256
#: Publications held per origin while its replay is under way; beyond, the replay is
#: abandoned and what was held delivered (a flood during an outage must not grow forever).
MAX_HELD = 100_000


class TrackState(Enum):
    LIVE = "live"
    REPLAYING = "replaying"


@dataclass(frozen=True, slots=True)
class AskReplay:
    """Fetch what ``origin`` (a process of service ``source``, its path through broker
    ``broker``) published after ``after``."""

    source: str
    origin: str
    after: int
    broker: int = 0


@dataclass(slots=True)
class Track:
    """What this gateway knows of one publisher process."""

    source: str
    epoch: int
    watermark: int
    #: The broker (its position in the gateway's list) this origin's path passes.
    broker: int = 0
    state: TrackState = TrackState.LIVE
    #: seqs delivered above the watermark (pruned at each beat).
    seen: set[int] = field(default_factory=set)
    #: Publications that arrived while REPLAYING, delivered after the replay.
    held: list[Publication] = field(default_factory=list)
    #: The highest epoch seen while REPLAYING (the track resumes from it).
    pending_epoch: int = 0
    suspect: bool = False
    #: Whether the replay of this REPLAYING track has been sent (:meth:`Continuity.asking`).
    asked: bool = False


class Continuity:
    """Dedupes, detects gaps, merges replays; see the module docstring."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self.tracks: dict[str, Track] = {}
        self.max_held = max_held
        self.counters = {"duplicates": 0, "gaps": 0, "replayed": 0, "incomplete": 0,
                         "abandoned": 0}

    # -- what arrives from the broker ----------------------------------------------------------
    def receive(self, pub: Publication,
                broker: int = 0) -> tuple[list[Publication], AskReplay | None]:
        """A numbered publication or beat from broker ``broker``: what to deliver now, and
        maybe a replay to fetch."""
        origin, beat = pub.origin, pub.kind is PubKind.BEAT
        track = self.tracks.get(origin)
        if track is None:
            # First word from this process: nothing before it was ours to miss.
            self._remember(origin, Track(pub.source, pub.epoch,
                                         pub.seq if beat else pub.seq - 1, broker))
            track = self.tracks[origin]
            if beat:
                return [], None
            track.seen.add(pub.seq)
            return [pub], None
        if track.state is TrackState.REPLAYING:
            track.pending_epoch = max(track.pending_epoch, pub.epoch)
            if not beat and pub.seq > track.watermark and pub.seq not in track.seen:
                track.held.append(pub)
                if len(track.held) > self.max_held:
                    self.counters["abandoned"] += 1
                    return self._resume(track, ()), None
            return [], None
        expected = track.epoch + 1 if beat else track.epoch
        if track.suspect or pub.epoch > expected:
            self.counters["gaps"] += 1
            track.suspect = False
            track.asked = False
            track.state = TrackState.REPLAYING
            track.pending_epoch = pub.epoch
            track.held = [] if beat or pub.seq <= track.watermark else [pub]
            return [], AskReplay(track.source, origin, track.watermark, track.broker)
        if beat:
            if pub.epoch > track.epoch:
                track.epoch = pub.epoch
            if pub.seq > track.watermark:
                track.watermark = pub.seq
                track.seen = {seq for seq in track.seen if seq > pub.seq}
            return [], None
        if pub.seq <= track.watermark or pub.seq in track.seen:
            self.counters["duplicates"] += 1
            return [], None
        track.seen.add(pub.seq)
        return [pub], None

    def broker_changed(self, broker: int = 0) -> None:
        """A new instance of broker ``broker``: whatever was in the old one may be lost."""
        for track in self.tracks.values():
            if track.broker == broker and (track.state is TrackState.LIVE or track.asked):
                track.suspect = True

    def asking(self, origin: str) -> None:
        """The replay asked for ``origin`` is being sent now (its broker settled): a broker
        change from here on may have lost what it will not cover."""
        track = self.tracks.get(origin)
        if track is not None and track.state is TrackState.REPLAYING:
            track.asked = True

    # -- what the publisher answered -----------------------------------------------------------
    def replayed(
        self,
        origin: str,
        batch: ReplayBatch | None,
        decode: Callable[[bytes], Publication] = Publication.decode,
    ) -> tuple[list[Publication], AskReplay | None]:
        """The answer to an :class:`AskReplay` (None: it failed for good): what to deliver,
        in order, and maybe the next replay to fetch (the batch had ``more``)."""
        track = self.tracks.get(origin)
        if track is None or track.state is not TrackState.REPLAYING:
            return [], None
        if batch is None or batch.origin != origin:
            # The publisher cannot answer (unreachable, or restarted: a new process).
            self.counters["incomplete"] += 1
            return self._resume(track, ()), None
        if not batch.complete:
            self.counters["incomplete"] += 1
        replayed = []
        for entry in batch.entries:
            if entry.seq > track.watermark and entry.seq not in track.seen:
                replayed.append(decode(entry.body))
        self.counters["replayed"] += len(replayed)
        track.pending_epoch = max(track.pending_epoch, batch.epoch)
        if batch.more:
            track.watermark = max(track.watermark, batch.upto)
            track.seen = {seq for seq in track.seen if seq > track.watermark}
            track.held = [p for p in track.held if p.seq > track.watermark]
            track.asked = False
            return replayed, AskReplay(track.source, origin, track.watermark, track.broker)
        return self._resume(track, replayed, batch.upto), None

    def _resume(self, track: Track, replayed: list[Publication] | tuple[()],
                upto: int = 0) -> list[Publication]:
        """Back to LIVE: the replayed publications, then what was held, in ``seq`` order and
        each once; the watermark moves to what is now known delivered."""
        out: list[Publication] = []
        delivered: set[int] = set()
        for pub in sorted([*replayed, *track.held], key=lambda p: p.seq):
            if pub.seq in delivered or pub.seq <= track.watermark or pub.seq in track.seen:
                if pub.seq not in delivered:
                    self.counters["duplicates"] += 1
                continue
            delivered.add(pub.seq)
            out.append(pub)
        track.held = []
        track.state = TrackState.LIVE
        track.epoch = max(track.epoch, track.pending_epoch)
        if upto:
            track.watermark = max(track.watermark, upto)
        elif out:
            track.watermark = max(track.watermark, out[-1].seq)
        track.seen = {seq for seq in (track.seen | delivered) if seq > track.watermark}
        return out

    def _remember(self, origin: str, track: Track) -> None:
        tracks = self.tracks
        tracks[origin] = track
        while len(tracks) > MAX_ORIGINS:
            del tracks[next(iter(tracks))]

    def replaying(self) -> int:
        return sum(1 for t in self.tracks.values() if t.state is TrackState.REPLAYING)
