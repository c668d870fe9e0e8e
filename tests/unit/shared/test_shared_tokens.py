"""shared.tokens: issuing and verifying JWTs, key rules and the policy syntax."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from switchboard.shared.access import Policy, Rule
from switchboard.shared.errors import ConfigError
from switchboard.shared.tokens import (
    Identity,
    TokenError,
    Verifier,
    issue_token,
    load_public_key,
    verify_token,
)

SECRET = "a-test-secret-that-is-32-bytes-long!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand, so tests can make tokens PyJWT itself refuses to sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_hs256_round_trip() -> None:
    token = issue_token(SECRET, "u1", "alice", role="admin")
    assert verify_token(token, SECRET) == Identity("u1", "alice", "admin")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == claims["userId"] == "u1"
    assert claims["exp"] - claims["iat"] == 3600


def test_expired_token_refused_but_leeway_tolerates_skew() -> None:
    token = issue_token(SECRET, "u1", "alice", ttl=60, now=time.time() - 65)
    with pytest.raises(TokenError):
        verify_token(token, SECRET)
    assert verify_token(token, SECRET, leeway=30).user_id == "u1"


def test_forged_signature_refused() -> None:
    token = issue_token("another-secret-another-secret-xx", "u1", "alice")
    with pytest.raises(TokenError):
        verify_token(token, SECRET)


def test_alg_none_refused() -> None:
    token = handmade({"alg": "none", "typ": "JWT"},
                     {"userId": "u1", "exp": int(time.time()) + 60}, None)
    with pytest.raises(TokenError):
        verify_token(token, SECRET)


def test_exp_required() -> None:
    token = jwt.encode({"userId": "u1"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        verify_token(token, SECRET)


def test_sub_claim_and_defaults() -> None:
    token = jwt.encode({"sub": "42", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert verify_token(token, SECRET) == Identity("42", "42", "user")


def test_numeric_user_id_becomes_a_string() -> None:
    token = jwt.encode({"userId": 7, "username": "bob", "exp": int(time.time()) + 60}, SECRET,
                       algorithm="HS256")
    assert verify_token(token, SECRET) == Identity("7", "bob", "user")


@pytest.mark.parametrize("claims", [
    {},  # no subject at all
    {"userId": "a\x00b"},  # would corrupt a ZeroMQ topic
    {"userId": "x" * 500},
    {"userId": True},
    {"userId": "u1", "role": ["admin"]},
])
def test_bad_subject_claims_refused(claims: dict[str, Any]) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError):
        verify_token(token, SECRET)


def test_garbage_refused() -> None:
    for token in ("", "abc", "a.b.c", "x" * 9000):
        with pytest.raises(TokenError):
            verify_token(token, SECRET)


def test_rs256_round_trip_and_confusion(rsa_key: rsa.RSAPrivateKey) -> None:
    public = pem_public(rsa_key)
    token = issue_token(None, "u1", "alice", algorithm="RS256", private_key=rsa_key)
    assert verify_token(token, algorithm="RS256", public_key=public).user_id == "u1"
    # The classic confusion: an HS256 token whose HMAC secret is the RSA public key's PEM.
    forged = handmade({"alg": "HS256", "typ": "JWT"},
                      {"userId": "evil", "exp": int(time.time()) + 60}, public)
    with pytest.raises(TokenError):
        verify_token(forged, algorithm="RS256", public_key=public)
    # An HS256 token signed with the right secret is still refused when RS256 is configured.
    hs = issue_token(SECRET, "u1", "alice")
    with pytest.raises(TokenError):
        verify_token(hs, SECRET, algorithm="RS256", public_key=public)
    # And an RS256 token is refused when HS256 is configured.
    with pytest.raises(TokenError):
        verify_token(token, SECRET)


def test_es256_round_trip(ec_key: ec.EllipticCurvePrivateKey,
                          rsa_key: rsa.RSAPrivateKey) -> None:
    public = pem_public(ec_key)
    pem_private = ec_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    token = issue_token(None, "u1", "alice", algorithm="ES256", private_key=pem_private)
    assert verify_token(token, algorithm="ES256", public_key=public).user_id == "u1"
    rs = issue_token(None, "u1", "alice", algorithm="RS256", private_key=rsa_key)
    with pytest.raises(TokenError):
        verify_token(rs, algorithm="ES256", public_key=public)


def test_key_type_must_match_algorithm(rsa_key: rsa.RSAPrivateKey,
                                       ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError):
        load_public_key(pem_public(ec_key), "RS256")
    with pytest.raises(ConfigError):
        load_public_key(pem_public(rsa_key), "ES256")
    with pytest.raises(ConfigError):  # ES256 fixes the curve: P-384 is not acceptable
        load_public_key(pem_public(ec.generate_private_key(ec.SECP384R1())), "ES256")
    with pytest.raises(ConfigError):  # a PEM key is never an HMAC secret
        Verifier("HS256", secret=pem_public(rsa_key))
    with pytest.raises(ConfigError):
        Verifier("HS256", secret="")
    with pytest.raises(ConfigError):
        Verifier("RS256")  # no public key
    with pytest.raises(ConfigError):
        Verifier("none", secret=SECRET)
    with pytest.raises(ConfigError):
        issue_token(None, "u1", "alice", algorithm="RS256", private_key=ec_key)


def test_weak_secret_detected() -> None:
    assert Verifier("HS256", secret="short").weak_secret
    assert not Verifier("HS256", secret=SECRET).weak_secret


def test_issue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        issue_token(SECRET, "u1", "alice", ttl=0)
    with pytest.raises(ValueError):
        issue_token(SECRET, "", "alice")


def test_policy_syntax() -> None:
    policy = Policy.parse("/=token, /game=anonymous,/admin=admin,/ops=role:ops,*=token")
    assert policy.rule_for("/") == Rule(token_required=True)
    assert policy.rule_for("/game") == Rule()
    assert policy.rule_for("/admin") == Rule(True, "admin")
    assert policy.rule_for("/ops") == Rule(True, "ops")
    assert policy.rule_for("/other") == Rule(token_required=True)
    assert Policy.parse("/=token").rule_for("/other") == Rule()
    for bad in ("/=tokn", "chat=token", "/", "/=role:"):
        with pytest.raises(ConfigError):
            Policy.parse(bad)
