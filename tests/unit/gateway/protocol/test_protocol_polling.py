"""Long-polling payloads and the polling/upgrade state machine, byte for byte.

Golden bodies are the official engine.io-protocol test suite's and the reference server's
(engine.io 6.6, engine.io-parser 5.2).
"""

from __future__ import annotations

import pytest

from switchboard.gateway.protocol import Connection, ConnectionConfig
from switchboard.gateway.protocol.engineio import decode_payload, encode_open, encode_payload
from switchboard.gateway.protocol.errors import (
    DecodeError,
    LocalProtocolError,
    PollOverlap,
    RemoteProtocolError,
    TransportMismatch,
    UpgradeRefused,
)
from switchboard.gateway.protocol.polling import TRANSITIONS, Polling, UpgradeState, UpgradeStep

# ------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(("packets", "body"), [
    (["4hello"], "4hello"),
    (["4test1", "4test2", "4test3"], "4test1\x1e4test2\x1e4test3"),
    (["4hello", bytes([1, 2, 3, 4])], "4hello\x1ebAQIDBA=="),
    ([bytes([1, 2, 3])], "bAQID"),
    (["2"], "2"),
    (["6", "1"], "6\x1e1"),
    (['451-["up",{"_placeholder":true,"num":0}]', b"\xff"],
     '451-["up",{"_placeholder":true,"num":0}]\x1eb/w=='),
])
def test_payload_golden_vectors(packets: list[str | bytes], body: str) -> None:
    assert encode_payload(packets) == body
    assert decode_payload(body) == packets


@pytest.mark.parametrize("body", ["", "4a\x1e", "\x1e4a", "b!!!", "bAQI"])
def test_malformed_payloads(body: str) -> None:
    with pytest.raises(DecodeError):
        decode_payload(body)


def test_open_packet_for_polling_advertises_the_upgrade() -> None:
    assert encode_open("s1", 300, 200, 1_000_000, ("websocket",)) == (
        '0{"sid":"s1","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,'
        '"maxPayload":1000000}')
    conn = Connection("s1", ConnectionConfig(0.3, 0.2), 0.0, upgrades=("websocket",))
    assert conn.data_to_send() == [encode_open("s1", 300, 200, 1_000_000, ("websocket",))]
    assert Connection("s1", ConnectionConfig(), 0.0, send_open=False).data_to_send() == []


# ---------------------------------------------------------------------- GET / POST


def test_a_get_waits_until_there_is_something_to_say() -> None:
    p = Polling()
    assert p.get() is None and p.waiting
    assert p.flush() is None  # nothing queued yet
    p.send(["4hello", b"\x01\x02\x03\x04"])
    assert p.flush() == "4hello\x1ebAQIDBA==" and not p.waiting
    p.send(["2"])
    assert p.get() == "2" and not p.waiting  # answered at once: something was queued


def test_a_second_get_while_one_waits_is_an_overlap() -> None:
    p = Polling()
    p.get()
    with pytest.raises(PollOverlap) as err:
        p.get()
    assert isinstance(err.value, RemoteProtocolError)
    assert p.abort() == "1"  # the first GET learns the session is over
    assert p.finished


def test_responses_carry_at_most_max_packets() -> None:
    p = Polling(max_packets=2)
    p.send(["41", "42", "43", "44", "45"])
    assert [p.get(), p.get(), p.get()] == ["41\x1e42", "43\x1e44", "45"]
    assert p.buffered == 0


def test_buffered_bytes_follow_the_queue() -> None:
    p = Polling()
    p.send(["4abc", b"\x00" * 3])
    assert p.buffered == 4 + 5
    p.get()
    assert p.buffered == 0


def test_post_returns_packets_and_drops_those_meaningless_over_polling() -> None:
    p = Polling()
    assert p.post(decode_payload("3\x1e40\x1e5\x1e6\x1ebAQ=="), 0.0) == ["3", "40", b"\x01"]


# ------------------------------------------------------------------------ closing


def test_client_close_answers_a_waiting_get_with_noop() -> None:
    p = Polling()
    p.get()
    assert p.client_closed() == "6" and p.finished
    q = Polling()
    assert q.client_closed() is None and q.finished


def test_graceful_close_goes_out_behind_queued_packets() -> None:
    p = Polling()
    p.send(["42[\"bye\"]"])
    assert p.close() is None and not p.finished  # no GET waiting: queued
    p.send(["42[\"late\"]"])  # nothing after the CLOSE
    assert p.get() == "42[\"bye\"]\x1e1" and p.finished
    q = Polling()
    q.get()
    assert q.close() == "1" and q.finished


def test_going_away_sends_what_is_queued_and_ends_without_close() -> None:
    """A shutdown must not say CLOSE: python-engineio's client would not reconnect."""
    p = Polling()
    p.send(["42[\"server shutdown\"]"])
    assert p.go_away() is None and not p.finished  # no GET waiting: kept for the next
    p.send(["42[\"late\"]"])  # nothing after it
    assert p.get() == "42[\"server shutdown\"]" and p.finished
    waiting = Polling()
    assert waiting.get() is None
    assert waiting.go_away() == "6" and waiting.finished  # nothing queued: a NOOP
    idle = Polling()
    assert idle.go_away() is None and idle.finished
    with pytest.raises(LocalProtocolError):
        idle.get()  # the I/O layer answers it as an unknown session


def test_requests_after_the_end_are_local_misuse() -> None:
    p = Polling()
    p.abort()
    with pytest.raises(LocalProtocolError):
        p.get()


# ------------------------------------------------------------------------ upgrade


def test_upgrade_sequence() -> None:
    p = Polling()
    p.send(["4before"])
    p.probe_opened()
    assert p.state is UpgradeState.PROBING
    assert p.get() == "4before"  # still polling while probing
    assert p.get() is None
    assert p.probe_received("2probe") == "3probe"
    assert p.flush() == "6"  # the paused poll is released
    p.send(["4during"])
    assert p.probe_received("5") is None
    assert p.state is UpgradeState.UPGRADED
    assert p.take_all() == ["4during"]
    with pytest.raises(TransportMismatch):
        p.get()
    with pytest.raises(TransportMismatch):
        p.post(["4x"], 0.0)


def test_polls_during_the_probe_get_data_or_noop_at_once() -> None:
    p = Polling()
    p.probe_opened()
    assert p.get() is None  # probing: still an ordinary poll
    p.probe_received("2probe")
    p.send(["4x"])
    assert p.flush() == "4x"  # data rather than a NOOP when there is some
    assert p.get() == "6"  # probed: a poll is never left waiting
    assert p.probe_received("5") is None
    assert p.take_all() == []


@pytest.mark.parametrize("frames", [["5"], ["2probe", "2probe"], ["4hello"], ["2probe", "3"]])
def test_a_broken_probe_is_refused_and_polling_goes_on(frames: list[str]) -> None:
    p = Polling()
    p.probe_opened()
    with pytest.raises(UpgradeRefused):
        for frame in frames:
            p.probe_received(frame)
    p.probe_failed()
    assert p.state is UpgradeState.NONE
    assert p.get() is None  # still a polling session
    p.probe_opened()  # and it may try again


def test_a_second_websocket_is_refused_while_probing_or_upgraded() -> None:
    p = Polling()
    p.probe_opened()
    with pytest.raises(UpgradeRefused):
        p.probe_opened()
    p.probe_received("2probe")
    p.probe_received("5")
    with pytest.raises(UpgradeRefused):
        p.probe_opened()


def test_transition_table_is_explicit() -> None:
    assert TRANSITIONS[(UpgradeState.NONE, UpgradeStep.OPEN)] is UpgradeState.PROBING
    assert (UpgradeState.UPGRADED, UpgradeStep.OPEN) not in TRANSITIONS
    assert all(TRANSITIONS[(s, UpgradeStep.CLOSE)] is UpgradeState.CLOSED for s in UpgradeState)


# ------------------------------------------------------------------------ holding


def test_holding_keeps_messages_and_lets_heartbeats_through() -> None:
    p = Polling(hold=0.3)
    assert p.holding and p.next_deadline() is None
    assert p.post(["40", "3", '42["x"]'], 10.0) == ["3"]
    assert p.next_deadline() == pytest.approx(10.3)
    assert p.post([b"\x01"], 10.1) == []
    assert p.release() == ["40", '42["x"]', b"\x01"]
    assert not p.holding and p.next_deadline() is None
    assert p.post(["41"], 11.0) == ["41"]


def test_export_hands_over_queued_and_held_packets() -> None:
    p = Polling(hold=0.3)
    p.post(["40"], 0.0)
    p.send(["2"])
    assert p.export() == (["2"], ["40"])
    assert p.finished
