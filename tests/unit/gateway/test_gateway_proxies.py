from switchboard.gateway.proxies import client_address, parse_networks

LB = parse_networks(["10.0.0.0/8", "127.0.0.5"])


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    assert client_address("203.0.113.9", "1.2.3.4", LB) == "203.0.113.9"
    assert client_address("203.0.113.9", None, LB) == "203.0.113.9"
    assert client_address("203.0.113.9", "1.2.3.4", ()) == "203.0.113.9"


def test_trusted_balancer_names_the_rightmost_untrusted_hop() -> None:
    assert client_address("127.0.0.5", "198.51.100.7", LB) == "198.51.100.7"
    # A client-supplied left part is ignored; proxies on the right are skipped.
    assert client_address("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", LB) == "198.51.100.7"
    assert client_address("10.1.2.3", " 2001:db8::1 ", LB) == "2001:db8::1"


def test_garbage_or_only_proxies_fall_back_to_the_peer() -> None:
    assert client_address("10.1.2.3", "not-an-ip", LB) == "10.1.2.3"
    assert client_address("10.1.2.3", "10.0.0.1, 10.0.0.2", LB) == "10.1.2.3"
    assert client_address("10.1.2.3", "", LB) == "10.1.2.3"
