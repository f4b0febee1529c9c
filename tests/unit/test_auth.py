"""tandem.auth: every way a token can be wrong, the permission rules, token transport."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tandem.auth import SUBPROTOCOL, Authenticator, Principal, extract_token
from tandem.auth_keys import load_authenticator
from tandem.errors import AuthError, Forbidden, ReadOnly, TokenExpired
from tandem.settings import Settings
from tandem.signing_keys import JwksRefresh

NOW = 1_700_000_000.0
SECRET = "s3cret-" + "x" * 40  # 47 bytes: long enough for HS256 and HS384


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "ada", "iat": NOW, "exp": NOW + 600, "docs": {"*": "write"}}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(**extra), secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


@pytest.fixture
def hs() -> Authenticator:
    return load_authenticator(Settings(jwt_secret=SECRET))


@pytest.fixture
def rs(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Authenticator:
    pem = write(tmp_path, "rsa.pem", public_pem(rsa_key))
    return load_authenticator(Settings(jwt_public_key_file=pem, jwt_algorithms=("RS256",)))


# -- happy paths -----------------------------------------------------------------------


def test_hs256_token_verifies(hs: Authenticator) -> None:
    p = hs.verify(hs_token(name="Ada L."), now=NOW)
    assert p == Principal(
        user="ada", name="Ada L.", permissions=(("*", "write"),), expires=NOW + 600, issued=NOW
    )


def test_jti_admin_and_lifetime_claims() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET))
    p = auth.verify(auth.issue("root", now=NOW, admin=True, token_id="t-9"), now=NOW)
    assert (p.admin, p.token_id, p.issued) == (True, "t-9", NOW)
    assert not auth.verify(hs_token(admin="yes"), now=NOW).admin  # only a JSON true counts
    with pytest.raises(AuthError, match="jwt_max_token_lifetime"):
        auth.verify(hs_token(exp=NOW + 31 * 86400), now=NOW)
    with pytest.raises(AuthError):
        auth.verify(hs_token(jti=7), now=NOW)  # PyJWT checks jti is a string
    with pytest.raises(AuthError, match="jti must be"):
        auth.verify(hs_token(jti="j" * 300), now=NOW)


def test_name_defaults_to_user(hs: Authenticator) -> None:
    assert hs.verify(hs_token(), now=NOW).name == "ada"


def test_rs256_token_verifies(rs: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert rs.verify(token, now=NOW).user == "ada"


def test_es256_token_verifies(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = write(tmp_path, "ec.pem", public_pem(ec_key))
    auth = load_authenticator(Settings(jwt_public_key_file=pem, jwt_algorithms=("ES256",)))
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert auth.verify(token, now=NOW).user == "ada"


def test_issue_verify_round_trip(hs: Authenticator) -> None:
    token = hs.issue("bob", name="Bob", docs={"notes/*": "write"}, ttl=60, now=NOW)
    p = hs.verify(token, now=NOW + 30)
    assert (p.user, p.name, p.permissions, p.expires) == (
        "bob",
        "Bob",
        (("notes/*", "write"),),
        NOW + 60,
    )
    assert p.seconds_left(NOW + 30) == 30
    with pytest.raises(TokenExpired):
        hs.verify(token, now=NOW + 60 + Settings().jwt_leeway)


def test_issue_sets_configured_audience_and_issuer() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET, jwt_audience="tandem", jwt_issuer="me"))
    assert auth.verify(auth.issue("ada", now=NOW), now=NOW).user == "ada"


def test_issue_refuses_without_a_secret(rs: Authenticator) -> None:
    with pytest.raises(RuntimeError, match="only public keys"):
        rs.issue("ada", now=NOW)


def test_issue_validates_its_input(hs: Authenticator) -> None:
    with pytest.raises(ValueError):
        hs.issue("", now=NOW)
    with pytest.raises(ValueError):
        hs.issue("ada", docs={"x": "admin"}, now=NOW)  # type: ignore[dict-item]


# -- attacks and broken tokens ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(hs: Authenticator, alg: str) -> None:
    token = unsigned({"alg": alg, "typ": "JWT"}, claims())
    with pytest.raises(AuthError, match="not accepted"):
        hs.verify(token, now=NOW)


def test_alg_none_is_refused_by_asymmetric_config(rs: Authenticator) -> None:
    with pytest.raises(AuthError):
        rs.verify(unsigned({"alg": "none"}, claims()), now=NOW)


def test_algorithm_confusion_hs256_signed_with_public_key(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = public_pem(rsa_key)
    # Sign by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    path = write(tmp_path, "rsa.pem", pem)
    only_rs = load_authenticator(Settings(jwt_public_key_file=path, jwt_algorithms=("RS256",)))
    with pytest.raises(AuthError, match="not accepted"):
        only_rs.verify(token, now=NOW)
    # Even with HS256 also pinned, an HS token is checked against the secret, never the key.
    both = load_authenticator(
        Settings(jwt_secret=SECRET, jwt_public_key_file=path, jwt_algorithms=("RS256", "HS256"))
    )
    with pytest.raises(AuthError, match="signature"):
        both.verify(token, now=NOW)


def test_hs_token_refused_when_only_rs_configured(rs: Authenticator) -> None:
    with pytest.raises(AuthError, match="not accepted"):
        rs.verify(hs_token(), now=NOW)


def test_rs_token_refused_when_only_hs_configured(
    hs: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(AuthError, match="not accepted"):
        hs.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"), now=NOW)


def test_es_token_refused_by_rsa_key(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem = write(tmp_path, "rsa.pem", public_pem(rsa_key))
    auth = load_authenticator(Settings(jwt_public_key_file=pem, jwt_algorithms=("RS256", "ES256")))
    with pytest.raises(AuthError, match="does not fit"):
        auth.verify(jwt.encode(claims(), ec_key, algorithm="ES256"), now=NOW)


def test_expired(hs: Authenticator) -> None:
    leeway = Settings().jwt_leeway
    token = hs_token(iat=NOW - 100, exp=NOW - 10)
    assert hs.verify(token, now=NOW - 10 + leeway - 0.5).user == "ada"  # within leeway
    with pytest.raises(TokenExpired):
        hs.verify(token, now=NOW)


def test_not_yet_valid(hs: Authenticator) -> None:
    token = hs_token(nbf=NOW + 100)
    with pytest.raises(AuthError, match="nbf"):
        hs.verify(token, now=NOW)
    assert hs.verify(token, now=NOW + 100).user == "ada"


def test_issued_in_the_future(hs: Authenticator) -> None:
    with pytest.raises(AuthError, match="iat"):
        hs.verify(hs_token(iat=NOW + 100), now=NOW)


@pytest.mark.parametrize("value", ["soon", True, [1], {"a": 1}])
def test_time_claims_must_be_numbers(hs: Authenticator, value: object) -> None:
    with pytest.raises(AuthError, match="exp"):
        hs.verify(hs_token(exp=value), now=NOW)


def test_non_finite_exp_is_refused(hs: Authenticator) -> None:
    # Python's json accepts Infinity/NaN; a NaN exp would otherwise never expire.
    for literal in ("Infinity", "NaN"):
        header = b64(b'{"alg":"HS256","typ":"JWT"}')
        payload = b64(f'{{"sub":"ada","exp":{literal}}}'.encode())
        sig = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(AuthError, match="exp"):
            hs.verify(f"{header}.{payload}.{b64(sig)}", now=NOW)


def test_token_without_exp_is_refused_by_default(hs: Authenticator) -> None:
    with pytest.raises(AuthError, match="no exp claim"):
        hs.verify(hs_token(exp=None), now=NOW)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(jwt_secret=SECRET, jwt_allow_no_exp=True),
        Settings(jwt_secret=SECRET, dev_mode=True),
    ],
)
def test_token_without_exp_never_expires_when_allowed(settings: Settings) -> None:
    p = load_authenticator(settings).verify(hs_token(exp=None), now=NOW)
    assert p.expires is None
    assert p.seconds_left(NOW) == math.inf


# -- HS secrets by kid (rotation) ------------------------------------------------------------

OLD, NEW = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32


def test_hs_secret_rotation_with_two_secrets() -> None:
    """Both secrets verify during the rotation; the kid picks the one, never the other."""
    before = load_authenticator(Settings(jwt_secrets=("k1:" + OLD,)))
    old_token = before.issue("ada", docs={"*": "read"}, now=NOW)
    assert jwt.get_unverified_header(old_token)["kid"] == "k1"
    during = load_authenticator(Settings(jwt_secrets=("k2:" + NEW, "k1:" + OLD)))
    new_token = during.issue("bob", now=NOW)
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"  # the first entry signs
    assert during.verify(old_token, now=NOW).user == "ada"  # nobody is logged out
    assert during.verify(new_token, now=NOW).user == "bob"
    forged = jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "k2"})
    with pytest.raises(AuthError, match="signature"):
        during.verify(forged, now=NOW)  # k2 is checked against k2's secret only
    with pytest.raises(AuthError, match="unknown signing key 'k9'"):
        during.verify(jwt.encode(claims(), OLD, algorithm="HS256", headers={"kid": "k9"}), now=NOW)
    after = load_authenticator(Settings(jwt_secrets=("k2:" + NEW,)))
    assert after.verify(new_token, now=NOW).user == "bob"
    with pytest.raises(AuthError, match="unknown signing key 'k1'"):
        after.verify(old_token, now=NOW)  # retired


def test_hs_kidless_token_uses_jwt_secret_beside_kid_secrets() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET, jwt_secrets=("k1:" + OLD,)))
    assert auth.verify(hs_token(), now=NOW).user == "ada"
    plain = load_authenticator(Settings(jwt_secret=SECRET))  # no jwt_secrets: kids are ignored
    assert plain.verify(
        jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "x"}), now=NOW
    )


@pytest.mark.parametrize("entry", ["nokid", ":secret", "k1:", "k1:" + OLD + ",k1:" + NEW])
def test_bad_jwt_secrets_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="jwt_secrets"):
        load_authenticator(Settings(jwt_secrets=tuple(entry.split(","))))


def test_short_rotated_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="jwt_secrets entry 'k1' is 5 bytes"):
        load_authenticator(Settings(jwt_secrets=("k1:short",)))


def test_jwks_refresh_schedule() -> None:
    schedule = JwksRefresh(max_age=300, min_interval=10)
    assert schedule.due(NOW)  # nothing fetched yet
    schedule.started(NOW)
    schedule.succeeded(NOW)
    assert not schedule.due(NOW + 5)
    assert not schedule.due(NOW + 5, unknown_kid=True)  # too soon after the last fetch
    assert schedule.due(NOW + 10, unknown_kid=True)
    assert not schedule.due(NOW + 299)
    assert schedule.due(NOW + 300)  # aged out
    schedule.started(NOW + 300)  # ... and that fetch failed: no retry storm
    assert not schedule.due(NOW + 301)
    assert schedule.due(NOW + 310)


def test_wrong_audience() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET, jwt_audience="tandem"))
    with pytest.raises(AuthError, match="audience"):
        auth.verify(hs_token(aud="other"), now=NOW)
    with pytest.raises(AuthError, match="'aud'"):
        auth.verify(hs_token(), now=NOW)
    assert auth.verify(hs_token(aud="tandem"), now=NOW).user == "ada"
    assert auth.verify(hs_token(aud=["x", "tandem"]), now=NOW).user == "ada"


def test_audience_refused_when_none_configured(hs: Authenticator) -> None:
    with pytest.raises(AuthError, match="audience"):
        hs.verify(hs_token(aud="somebody-else"), now=NOW)


def test_wrong_issuer() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET, jwt_issuer="https://id.example"))
    with pytest.raises(AuthError, match="issuer"):
        auth.verify(hs_token(iss="https://evil.example"), now=NOW)
    with pytest.raises(AuthError, match="'iss'"):
        auth.verify(hs_token(), now=NOW)
    assert auth.verify(hs_token(iss="https://id.example"), now=NOW).user == "ada"


def test_tampered_payload(hs: Authenticator) -> None:
    header, _, signature = hs_token(docs={"a": "read"}).split(".")
    forged = b64(json.dumps(claims(docs={"*": "write"})).encode())
    with pytest.raises(AuthError, match="signature"):
        hs.verify(f"{header}.{forged}.{signature}", now=NOW)


def test_tampered_rs_payload(rs: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = jwt.encode(claims(sub="eve"), rsa_key, algorithm="RS256").split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    with pytest.raises(AuthError, match="signature"):
        rs.verify(f"{header}.{forged}.{signature}", now=NOW)


def test_wrong_secret(hs: Authenticator) -> None:
    with pytest.raises(AuthError, match="signature"):
        hs.verify(hs_token(secret="another-secret-" + "y" * 40), now=NOW)


def test_missing_sub(hs: Authenticator) -> None:
    with pytest.raises(AuthError, match="sub"):
        hs.verify(hs_token(sub=None), now=NOW)


@pytest.mark.parametrize("sub", ["", "x" * 257])
def test_bad_sub(hs: Authenticator, sub: str) -> None:
    with pytest.raises(AuthError, match="sub"):
        hs.verify(hs_token(sub=sub), now=NOW)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "....", "x" * 20_000, "é.ü.ß"])
def test_empty_and_garbage_tokens(hs: Authenticator, token: str) -> None:
    with pytest.raises(AuthError):
        hs.verify(token, now=NOW)


@pytest.mark.parametrize(
    "docs",
    [["*"], "write", {"*": "admin"}, {"*": True}, {"": "read"}],
)
def test_malformed_permissions_claim(hs: Authenticator, docs: object) -> None:
    with pytest.raises(AuthError, match="permission"):
        hs.verify(hs_token(docs=docs), now=NOW)


def test_custom_permissions_claim() -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET, jwt_permissions_claim="tandem/docs"))
    token = jwt.encode(
        {"sub": "ada", "exp": NOW + 60, "tandem/docs": {"a": "read"}, "docs": {"*": "write"}},
        SECRET,
        "HS256",
    )
    assert auth.verify(token, now=NOW).permissions == (("a", "read"),)


def test_error_messages_never_leak_token_or_secret(hs: Authenticator) -> None:
    bad = [
        hs_token(secret="wrong-secret-" + "z" * 40),
        hs_token(exp=NOW - 1000),
        hs_token(sub=None),
        hs_token(docs={"x": "root"}),
        hs_token(aud="elsewhere"),
        unsigned({"alg": "none"}, claims()),
        hs_token()[:-3] + "AAA",
    ]
    for token in bad:
        with pytest.raises(AuthError) as info:
            hs.verify(token, now=NOW)
        text = f"{info.value} {info.value!r} {info.value.message}"
        for part in filter(None, token.split(".")):
            assert part not in text
        assert SECRET not in text
        assert info.value.__cause__ is None


# -- keys: JWKS, configuration, dev secret ------------------------------------------------


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, **extra: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    data.update(extra)
    return dict(data)


def test_jwks_picks_key_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = [jwk(rsa_key, kid="r1"), jwk(other, kid="r2"), jwk(ec_key, kid="e1", alg="ES256")]
    path = write(tmp_path, "jwks.json", json.dumps({"keys": keys}))
    auth = load_authenticator(Settings(jwt_jwks_file=path, jwt_algorithms=("RS256", "ES256")))

    def sign(key: Any, kid: str | None, alg: str) -> str:
        return jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid} if kid else None)

    assert auth.verify(sign(rsa_key, "r1", "RS256"), now=NOW).user == "ada"
    assert auth.verify(sign(other, "r2", "RS256"), now=NOW).user == "ada"
    assert auth.verify(sign(ec_key, "e1", "ES256"), now=NOW).user == "ada"
    with pytest.raises(AuthError, match="signature"):
        auth.verify(sign(rsa_key, "r2", "RS256"), now=NOW)  # right key, wrong kid
    with pytest.raises(AuthError, match="unknown signing key"):
        auth.verify(sign(rsa_key, "nope", "RS256"), now=NOW)
    with pytest.raises(AuthError, match="no kid"):
        auth.verify(sign(rsa_key, None, "RS256"), now=NOW)  # several keys: kid needed


def test_jwks_single_key_without_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write(tmp_path, "jwks.json", json.dumps({"keys": [jwk(rsa_key, kid="only")]}))
    auth = load_authenticator(Settings(jwt_jwks_file=path, jwt_algorithms=("RS256",)))
    assert auth.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"), now=NOW).user == "ada"


def test_jwks_key_alg_must_match_token_alg(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write(tmp_path, "jwks.json", json.dumps({"keys": [jwk(rsa_key, alg="RS512")]}))
    auth = load_authenticator(Settings(jwt_jwks_file=path, jwt_algorithms=("RS256", "RS512")))
    with pytest.raises(AuthError, match="not for algorithm"):
        auth.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"), now=NOW)


def test_jwks_ignores_symmetric_keys(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    oct_key = {"kty": "oct", "kid": "h", "k": b64(SECRET.encode())}
    path = write(tmp_path, "jwks.json", json.dumps({"keys": [oct_key]}))
    with pytest.raises(ValueError, match="no usable"):
        load_authenticator(Settings(jwt_jwks_file=path, jwt_algorithms=("RS256",)))


@pytest.mark.parametrize(
    "settings, message",
    [
        (Settings(jwt_algorithms=("none",)), "jwt_algorithms"),
        (Settings(jwt_algorithms=()), "jwt_algorithms"),
        (Settings(), "jwt_secret is empty"),
        (Settings(jwt_secret="short"), "at least 32"),
        (Settings(jwt_secret=SECRET, jwt_algorithms=("HS512",)), "at least 64"),
        (Settings(jwt_algorithms=("RS256",)), "none of"),
    ],
)
def test_bad_configuration(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_authenticator(settings)


def test_public_key_without_asymmetric_algorithm(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = write(tmp_path, "rsa.pem", public_pem(rsa_key))
    with pytest.raises(ValueError, match="pins no"):
        load_authenticator(Settings(jwt_secret=SECRET, jwt_public_key_file=pem))


def test_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PEM"):
        load_authenticator(
            Settings(
                jwt_public_key_file=write(tmp_path, "x.pem", "nope"), jwt_algorithms=("RS256",)
            )
        )
    with pytest.raises(ValueError, match="cannot read"):
        load_authenticator(
            Settings(jwt_jwks_file=str(tmp_path / "missing"), jwt_algorithms=("RS256",))
        )


def test_dev_secret_is_generated_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_authenticator(Settings(), data_dir=data_dir)
    secret_file = data_dir / "dev-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 43  # 32 random bytes, urlsafe base64
    token = first.issue("ada", docs={"*": "read"}, now=NOW)
    second = load_authenticator(Settings(), data_dir=data_dir)
    assert second.verify(token, now=NOW).user == "ada"
    assert sorted(p.name for p in data_dir.iterdir()) == ["dev-secret"]  # no temp files left


def test_explicit_secret_wins_over_dev_secret(tmp_path: Path) -> None:
    auth = load_authenticator(Settings(jwt_secret=SECRET), data_dir=tmp_path)
    assert not (tmp_path / "dev-secret").exists()
    assert auth.verify(hs_token(), now=NOW).user == "ada"


# -- permissions ---------------------------------------------------------------------


def principal(**docs: str) -> Principal:
    return Principal(user="u", name="u", permissions=tuple(docs.items()))  # type: ignore[arg-type]


def rules(*pairs: tuple[str, str]) -> Principal:
    return Principal(user="u", name="u", permissions=pairs)  # type: ignore[arg-type]


def test_no_permissions_claim_means_no_access(hs: Authenticator) -> None:
    p = hs.verify(hs_token(docs=None), now=NOW)
    assert p.permissions == ()
    assert p.permission("anything") is None
    with pytest.raises(Forbidden) as info:
        p.require_read("anything")
    assert not isinstance(info.value, ReadOnly)


def test_read_write_none() -> None:
    p = rules(("a", "read"), ("b", "write"))
    assert (p.can_read("a"), p.can_write("a")) == (True, False)
    assert (p.can_read("b"), p.can_write("b")) == (True, True)
    assert (p.can_read("c"), p.can_write("c")) == (False, False)
    p.require_read("a")
    p.require_write("b")
    with pytest.raises(ReadOnly, match="'a'"):
        p.require_write("a")
    with pytest.raises(Forbidden, match="'c'") as info:
        p.require_write("c")
    assert type(info.value) is Forbidden


def test_token_for_one_doc_cannot_open_another(hs: Authenticator) -> None:
    p = hs.verify(hs.issue("ada", docs={"doc-a": "write"}, now=NOW), now=NOW)
    assert p.can_write("doc-a")
    with pytest.raises(Forbidden):
        p.require_read("doc-b")
    assert not p.can_read("doc-a2")  # exact names are not prefixes


def test_glob_patterns() -> None:
    p = rules(("notes/*", "write"), ("shared/?", "read"), ("team-[ab]", "write"))
    assert p.can_write("notes/x") and p.can_write("notes/x/y")  # "*" crosses "/"
    assert not p.can_read("notes")
    assert not p.can_read("Notes/x")  # case-sensitive
    assert p.permission("shared/1") == "read" and not p.can_read("shared/12")
    assert p.can_write("team-a") and not p.can_read("team-c")


def test_star_gives_access_to_everything() -> None:
    assert rules(("*", "read")).permission("any/doc name") == "read"


def test_most_specific_rule_wins() -> None:
    p = rules(("*", "read"), ("notes/*", "write"), ("notes/secret", "read"))
    assert p.permission("todo") == "read"
    assert p.permission("notes/a") == "write"
    assert p.permission("notes/secret") == "read"
    # Order does not matter when specificity differs.
    q = rules(("notes/secret", "read"), ("notes/*", "write"), ("*", "read"))
    assert [q.permission(d) for d in ("todo", "notes/a", "notes/secret")] == [
        "read",
        "write",
        "read",
    ]


def test_exact_name_beats_equally_literal_glob() -> None:
    assert rules(("a", "read"), ("a*", "write")).permission("a") == "read"
    assert rules(("a*", "write"), ("a", "read")).permission("a") == "read"


def test_ties_go_to_the_later_rule() -> None:
    # "notes/*" and "*/draft" both have six literal characters.
    assert rules(("notes/*", "read"), ("*/draft", "write")).permission("notes/draft") == "write"
    assert rules(("*/draft", "write"), ("notes/*", "read")).permission("notes/draft") == "read"


def test_wildcards_do_not_count_as_specific() -> None:
    assert rules(("n*", "write"), ("*****", "read")).permission("notes") == "write"
    assert rules(("[abc]x", "read"), ("?x", "write")).permission("ax") == "write"


def test_seconds_left() -> None:
    p = Principal(user="u", name="u", expires=NOW + 90)
    assert p.seconds_left(NOW) == 90
    assert p.seconds_left(NOW + 100) == -10


# -- where the token travels ------------------------------------------------------------


def test_extract_from_header() -> None:
    assert extract_token(None, "Bearer abc.def.ghi", None) == ("abc.def.ghi", None)
    assert extract_token(None, "bearer   abc", None) == ("abc", None)
    assert extract_token(None, "Basic dXNlcg==", None) == (None, None)
    assert extract_token(None, "Bearer ", None) == (None, None)


def test_extract_from_subprotocol() -> None:
    offered = [SUBPROTOCOL, "bearer.abc.def.ghi"]
    assert extract_token(None, None, offered) == ("abc.def.ghi", "tandem.v1")
    assert extract_token(None, None, ["bearer.abc"]) == ("abc", None)
    assert extract_token(None, None, [SUBPROTOCOL]) == (None, "tandem.v1")
    assert extract_token(None, None, [SUBPROTOCOL, "bearer."]) == (None, "tandem.v1")


def test_extract_from_query() -> None:
    assert extract_token("q.q.q", None, None) == ("q.q.q", None)
    assert extract_token("", None, []) == (None, None)


def test_extract_precedence_header_subprotocol_query() -> None:
    offered = [SUBPROTOCOL, "bearer.sub"]
    assert extract_token("query", "Bearer header", offered) == ("header", SUBPROTOCOL)
    assert extract_token("query", None, offered) == ("sub", SUBPROTOCOL)
    assert extract_token("query", "Basic x", [SUBPROTOCOL]) == ("query", SUBPROTOCOL)


def test_percent_encoded_token_names_are_redacted_too() -> None:
    from tandem.redaction import redact_tokens

    assert redact_tokens("GET /collab?tok%65n=abc.def&doc=x") == (
        "GET /collab?tok%65n=[redacted]&doc=x"
    )
    assert redact_tokens("?%74%6F%6B%65%6E%3Dabc") == "?%74%6F%6B%65%6E%3D[redacted]"
    assert redact_tokens("?mytoken=abc") == "?mytoken=abc"
