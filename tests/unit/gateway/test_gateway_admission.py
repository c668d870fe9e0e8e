"""gateway.admission: handshake budgets per address, refunds for sessions that authenticate,
and the credit of a dropped peer's crowds (pure: the clock is passed in)."""

from __future__ import annotations

from switchboard.gateway.admission import CREDIT_SECONDS, CROWD, MAX_CROWDS, Admission

NAT = "198.51.100.7"


def test_anonymous_handshakes_are_bounded_per_address() -> None:
    admission = Admission(5)
    assert [admission.admit(NAT, 0.0) for _ in range(5)] == [0.0] * 5
    assert admission.admit(NAT, 0.0) > 0  # the sixth waits
    assert admission.admit("203.0.113.1", 0.0) == 0.0  # another address costs nothing
    assert admission.counters["refused"] == 1


def test_a_session_that_authenticates_gives_its_handshake_back() -> None:
    admission = Admission(5)
    for i in range(1000):  # a crowd with valid tokens: never more than 1 pending at once
        assert admission.admit(NAT, 0.0) == 0.0, i
        admission.authenticated(f"s{i}", NAT)
    assert admission.counters["refunded"] == 1000
    # Once per session, however many namespaces it joins.
    admission.authenticated("s1", NAT)
    assert admission.counters["refunded"] == 1000


def test_failed_authentications_keep_their_handshake() -> None:
    admission = Admission(3)
    for _ in range(3):
        assert admission.admit(NAT, 0.0) == 0.0  # sessions whose CONNECT was refused
    assert admission.admit(NAT, 0.0) > 0


def test_crowds_are_announced_from_the_authenticated_sessions_held() -> None:
    admission = Admission(0)
    for i in range(CROWD + 5):
        admission.authenticated(f"s{i}", NAT)
    for i in range(CROWD - 1):
        admission.authenticated(f"t{i}", "203.0.113.9")  # below the floor: not announced
    assert admission.crowds() == [[NAT, CROWD + 5]]
    for i in range(10):
        admission.closed(f"s{i}")
    admission.closed("never-authenticated")
    assert admission.crowds() == []  # CROWD - 5 left


def test_a_dropped_peers_crowd_comes_back_at_once_within_the_credit_window() -> None:
    admission = Admission(10)
    for _ in range(10):
        assert admission.admit(NAT, 0.0) == 0.0  # its own bucket is empty now
    admission.peer_crowds("gw2", [[NAT, 50], ["bad"], [NAT, -1], [1, 2]])
    admission.peer_dropped("gw2", 1.0)
    assert [admission.admit(NAT, 1.0) for _ in range(50)] == [0.0] * 50
    assert admission.counters["credited"] == 50
    assert admission.admit(NAT, 1.0) > 0  # the credit is what the peer held, no more
    # A second drop of the same peer grants nothing until it announces again.
    admission.peer_dropped("gw2", 2.0)
    assert admission.admit(NAT, 2.0) > 0


def test_credit_lapses() -> None:
    admission = Admission(1)
    admission.admit(NAT, 0.0)
    admission.peer_crowds("gw2", [[NAT, 50]])
    admission.peer_dropped("gw2", 0.0)
    assert admission.admit(NAT, 0.0) == 0.0
    later = CREDIT_SECONDS + 1
    admission.admit(NAT, later)  # the refilled token
    assert admission.admit(NAT, later) > 0


def test_announcements_are_bounded() -> None:
    admission = Admission(0)
    for a in range(MAX_CROWDS + 10):
        for i in range(CROWD):
            admission.authenticated(f"{a}-{i}", f"10.0.{a // 256}.{a % 256}")
    assert len(admission.crowds()) == MAX_CROWDS
    admission.peer_crowds("gw2", [[f"10.1.0.{i}", 30] for i in range(MAX_CROWDS * 3)])
    admission.peer_dropped("gw2", 0.0)
    assert len(admission._credit) == MAX_CROWDS


def test_a_session_refused_too_often_asks_the_services_no_more() -> None:
    from switchboard.gateway.admission import MAX_REFUSALS

    admission = Admission(5)
    for _ in range(MAX_REFUSALS):
        assert admission.may_ask("s1")
        admission.refused("s1")
    assert not admission.may_ask("s1")
    assert admission.may_ask("s2")
    admission.closed("s1")
    assert admission.may_ask("s1")  # a new session of that id (it cannot be) starts afresh
