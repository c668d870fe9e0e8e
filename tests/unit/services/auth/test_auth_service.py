"""AuthService and the gateway's token check: the key set auth hands out (through the real
dispatch and over ZeroMQ), and how a gateway's :class:`Gatekeeper` admits CONNECTs with it —
namespace policy, token sources and claims, key types, key rotation."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from switchboard.gateway.gatekeeper import Gatekeeper
from switchboard.services.auth import AuthService, Config, create, issue_token
from switchboard.shared.access import Access, KeySet
from switchboard.shared.envelope import Recovery, RequestKind, Session
from switchboard.shared.errors import ConfigError, Refused
from switchboard.shared.policy import PolicyReplica
from switchboard.shared.publisher import MemoryPublisher
from switchboard.shared.testing import ServiceHarness
from switchboard.shared.tokens import TokenError
from tests.support.backbone import FakeGateway, running_broker, running_service

SECRET = "a-test-secret-that-is-32-bytes-long!"
NO_TOKEN = "Authentication error: No token provided"
INVALID = "Authentication error: Invalid token"
DENIED = "Access denied: admin role required"


def service(**kw: Any) -> AuthService:
    return AuthService(MemoryPublisher(), Config(**{"jwt_secret": SECRET, **kw}))


def session(ns: str = "/") -> Session:
    return Session(sid="gw1.abc", ns=ns, gateway="gw1", address="10.0.0.1")


class Admitted(NamedTuple):
    ok: bool
    error: str | None = None
    session: Session | None = None
    joins: tuple[str, ...] = ()


async def key_set(svc: AuthService) -> KeySet:
    reply = await ServiceHarness(svc).request(RequestKind.KEYS)
    assert reply.ok
    return KeySet.from_list((reply.args or [None])[0])


async def connect(svc: AuthService, ns: str = "/", token: Any = None,
                  header: str | None = None, auth: Any = None,
                  recovery: Recovery = Recovery.NONE, user: str | None = None) -> Admitted:
    """How a gateway admits a CONNECT with the key set ``svc`` hands out."""
    if auth is None:
        auth = {} if token is None else {"token": token}
    headers = {} if header is None else {"authorization": header}
    gate = Gatekeeper(PolicyReplica(), keys_required=lambda: True,
                      policy_required=lambda: False)
    gate.load(await key_set(svc))
    start = session(ns)
    if user is not None:
        start = start.with_user(user, user, "user")
    try:
        admitted = gate.admit(start, auth, headers, recovery)
    except Refused as exc:
        return Admitted(False, exc.message)
    return Admitted(True, None, admitted, gate.rooms_of(admitted))


def token(role: str = "user", **kw: Any) -> str:
    return issue_token(SECRET, "u1", "alice", role=role, **kw)


def write_pem(path: Path, key: Any) -> str:
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


async def test_valid_token_sets_identity_and_joins_user_room() -> None:
    reply = await connect(service(), "/", token())
    assert reply.ok
    assert reply.session == session().with_user("u1", "alice", "user")
    assert reply.joins == ("user:u1",)


@pytest.mark.parametrize("ns", ["/", "/chat", "/admin"])
async def test_token_required_namespaces_refuse_missing_token(ns: str) -> None:
    reply = await connect(service(), ns)
    assert (reply.ok, reply.error) == (False, NO_TOKEN)


async def test_empty_token_counts_as_missing() -> None:
    reply = await connect(service(), "/", auth={"token": ""})
    assert reply.error == NO_TOKEN


@pytest.mark.parametrize("bad", [
    issue_token(SECRET, "u1", "alice", ttl=60, now=time.time() - 120),  # expired
    issue_token("some-other-secret-of-32-bytes-xx", "u1", "alice"),  # forged
    "not-a-jwt",
    12345,  # not even a string
])
async def test_invalid_tokens_get_one_message(bad: Any) -> None:
    reply = await connect(service(), "/", bad)
    assert (reply.ok, reply.error) == (False, INVALID)


async def test_alg_none_refused() -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    forged = b64({"alg": "none"}) + "." + b64(
        {"userId": "u1", "role": "admin", "exp": int(time.time()) + 60}) + "."
    reply = await connect(service(), "/admin", forged)
    assert reply.error == INVALID


async def test_bearer_header_token() -> None:
    reply = await connect(service(), "/chat", header=f"Bearer {token()}")
    assert reply.ok and reply.joins == ("user:u1",)
    lower = await connect(service(), "/chat", header=f"bearer {token()}")
    assert lower.ok
    basic = await connect(service(), "/chat", header="Basic dXNlcjpwYXNz")
    assert basic.error == INVALID


async def test_auth_payload_wins_over_header() -> None:
    other = issue_token(SECRET, "u2", "bob")
    reply = await connect(service(), "/", token(), header=f"Bearer {other}")
    assert reply.session is not None and reply.session.user_id == "u1"


async def test_admin_namespace_needs_admin_role() -> None:
    assert (await connect(service(), "/admin", token())).error == DENIED
    ok = await connect(service(), "/admin", token(role="admin"))
    assert ok.ok and ok.session is not None and ok.session.role == "admin"


async def test_anonymous_namespace() -> None:
    anon = await connect(service(), "/game")
    assert anon.ok and anon.joins == ()
    assert anon.session == session("/game")  # user_id, username, role all None
    known = await connect(service(), "/game", token())
    assert known.ok and known.joins == ("user:u1",)
    bad = await connect(service(), "/game", "garbage")
    assert bad.error == INVALID  # a bad token is never silently downgraded to anonymous


async def test_unknown_namespace_token_optional() -> None:
    assert (await connect(service(), "/elsewhere")).ok
    reply = await connect(service(), "/elsewhere", token())
    assert reply.session is not None and reply.session.user_id == "u1"
    assert (await connect(service(), "/elsewhere", "garbage")).error == INVALID


async def test_policy_is_configuration() -> None:
    svc = service(auth_policy="/=anonymous,/ops=role:ops,*=token")
    assert (await connect(svc, "/")).ok
    assert (await connect(svc, "/other")).error == NO_TOKEN
    assert (await connect(svc, "/ops", token())).error == "Access denied: ops role required"
    assert (await connect(svc, "/ops", token(role="ops"))).ok


async def test_rs256_configured(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    svc = service(jwt_algorithm="RS256", jwt_public_key_file=write_pem(tmp_path / "k.pem", key))
    good = issue_token(None, "u9", "carol", algorithm="RS256", private_key=key)
    reply = await connect(svc, "/", good)
    assert reply.ok and reply.joins == ("user:u9",)
    # An HS256 token (even one made with the configured fallback secret) is refused.
    assert (await connect(svc, "/", token())).error == INVALID


async def test_hs256_configured_refuses_rs256(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = issue_token(None, "u9", "carol", algorithm="RS256", private_key=key)
    assert (await connect(service(), "/", rs)).error == INVALID


async def test_es256_configured(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svc = service(jwt_algorithm="ES256", jwt_public_key_file=write_pem(tmp_path / "k.pem", key))
    good = issue_token(None, "u9", "carol", algorithm="ES256", private_key=key)
    assert (await connect(svc, "/", good)).ok
    assert (await connect(svc, "/", token())).error == INVALID


def test_misconfigured_key_refused_at_start(tmp_path: Path) -> None:
    ec_file = write_pem(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError):
        service(jwt_algorithm="RS256", jwt_public_key_file=ec_file)
    with pytest.raises(ConfigError):
        service(jwt_algorithm="RS256")  # no key file
    with pytest.raises(ConfigError):
        service(jwt_algorithm="RS256", jwt_public_key_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError):
        service(auth_policy="/=sometimes")


def test_default_secret_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="switchboard.auth"):
        create(Config(), MemoryPublisher())
    assert any("default JWT secret" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchboard.auth"):
        service()
    assert not caplog.records


def test_routes() -> None:
    info = service().info()
    assert info.name == "auth"
    assert [(r.kind, r.ns) for r in info.routes] == [(RequestKind.KEYS, "*")]  # no CONNECT


async def test_the_key_set_names_the_instance_and_keeps_an_asymmetric_secret_out(
        tmp_path: Path) -> None:
    svc = service()
    keys = await key_set(svc)
    assert (keys.instance, keys.algorithm, keys.policy) == (
        svc.instance, "HS256", Config().auth_policy)
    [(kid, material)] = keys.keys
    assert material == SECRET.encode() and kid and SECRET not in kid
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = service(jwt_algorithm="RS256", jwt_public_key_file=write_pem(tmp_path / "k.pem", key))
    [(_, pem)] = (await key_set(rs)).keys
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # the public half only


async def test_recovery_skips_the_token_or_checks_it_is_the_same_user() -> None:
    svc = service()
    skipped = await connect(svc, "/", recovery=Recovery.SKIP, user="u1")
    assert skipped.ok and skipped.session is not None and skipped.session.user_id == "u1"
    assert (await connect(svc, "/", token(), recovery=Recovery.CHECK, user="u1")).ok
    other = await connect(svc, "/", token(), recovery=Recovery.CHECK, user="u2")
    assert other.error == INVALID
    # Checked again without a token where none is needed: not as the user it was.
    assert (await connect(svc, "/game", recovery=Recovery.CHECK, user="u1")).error == NO_TOKEN
    assert (await connect(svc, "/game", recovery=Recovery.CHECK)).ok  # anonymous before too


async def test_a_rotation_accepts_the_previous_secrets_and_keys_until_they_are_dropped(
        tmp_path: Path) -> None:
    old, new = SECRET, "the-next-secret-of-at-least-32-bytes!"
    svc = service(jwt_secret=new, jwt_previous_secrets=(old,))
    assert [material for _, material in (await key_set(svc)).keys] == [
        new.encode(), old.encode()]  # the current one first
    for secret in (new, old):
        admitted = await connect(svc, "/", issue_token(secret, "u1", "alice"))
        assert admitted.ok and admitted.session is not None
    stranger = issue_token("a-third-secret-nobody-configured-here", "u1", "alice")
    assert (await connect(svc, "/", stranger)).error == INVALID
    assert (await connect(service(jwt_secret=new), "/", issue_token(old, "u1", "a"))).error \
        == INVALID  # dropped: refused
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    rs = service(jwt_algorithm="RS256",
                 jwt_public_key_file=write_pem(tmp_path / "new.pem", keys[0]),
                 jwt_previous_public_key_files=(write_pem(tmp_path / "old.pem", keys[1]),))
    assert len((await key_set(rs)).keys) == 2
    for key in keys:
        token = issue_token(None, "u1", "alice", algorithm="RS256", private_key=key)
        assert (await connect(rs, "/", token)).ok
    with pytest.raises(ConfigError, match="looks like a PEM"):  # checked as the current one
        service(jwt_previous_secrets=("-----BEGIN PUBLIC KEY-----\nAAAA",))


def test_a_rotated_key_set_accepts_both_keys_and_picks_by_kid() -> None:
    old, new = SECRET, "another-test-secret-of-32-bytes-long"
    access = Access(KeySet("i1", "HS256", (("new", new.encode()), ("old", old.encode()))))
    assert access.verify(issue_token(old, "u1", "alice")).user_id == "u1"
    assert access.verify(issue_token(new, "u2", "bob")).user_id == "u2"
    signed_new = jwt.encode({"sub": "u3", "exp": int(time.time()) + 60}, new,
                            algorithm="HS256", headers={"kid": "old"})
    with pytest.raises(TokenError):  # the kid names the key: no other one is tried
        access.verify(signed_new)
    with pytest.raises(ConfigError):
        Access(KeySet("i1", "HS256", ()))


async def test_keys_over_real_sockets() -> None:
    with running_broker() as broker:
        async with running_service(lambda p: AuthService(p, Config(jwt_secret=SECRET)),
                                   broker) as (svc, cfg):
            gw = FakeGateway()
            try:
                reply = await gw.request(cfg.bind, kind=RequestKind.KEYS)
                keys = KeySet.from_list((reply.args or [None])[0])
                assert isinstance(svc, AuthService) and keys.instance == svc.instance
                gate = Gatekeeper(PolicyReplica(), keys_required=lambda: True,
                                  policy_required=lambda: False)
                gate.load(keys)
                s = gw.session(ns="/chat")
                with pytest.raises(Refused, match=NO_TOKEN):
                    gate.admit(s, {}, {})
                ok = gate.admit(s, {}, {"authorization": f"Bearer {token()}"})
                assert ok == s.with_user("u1", "alice", "user")
            finally:
                gw.close()
