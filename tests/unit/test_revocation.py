"""``tandem.revocation``: what a revocation covers, and the list each node keeps (pure)."""

from __future__ import annotations

import pytest

from tandem.auth import Principal
from tandem.errors import Revoked
from tandem.revocation import Revocation, RevocationList

T = 1_700_000_000.0


def who(user: str = "ada", jti: str | None = None, issued: float | None = T - 10) -> Principal:
    return Principal(user, user, (("*", "write"),), T + 600, token_id=jti, issued=issued)


def test_a_jti_revocation_covers_that_token_only() -> None:
    revoked = RevocationList()
    revoked.add(Revocation("r1", T, T + 60, jti="t1"))
    with pytest.raises(Revoked, match="this token"):
        revoked.apply(who(jti="t1"))
    assert revoked.apply(who(jti="t2")) == who(jti="t2")


def test_a_user_revocation_covers_tokens_issued_before_it() -> None:
    revoked = RevocationList()
    revoked.add(Revocation("r1", T, None, user="ada", reason="left"))
    with pytest.raises(Revoked, match="user 'ada': left"):
        revoked.apply(who(issued=T - 1))
    with pytest.raises(Revoked):
        revoked.apply(who(issued=None))  # no iat: cannot tell, so covered
    assert revoked.apply(who(issued=T + 1)).user == "ada"  # signed in again afterwards
    assert revoked.apply(who("bob")).user == "bob"


def test_a_document_revocation_takes_away_matching_documents_only() -> None:
    revoked = RevocationList()
    revoked.add(Revocation("r1", T, None, user="ada", docs="secret/*"))
    principal = revoked.apply(who())
    assert principal.permission("secret/plan") is None
    assert principal.permission("public/plan") == "write"
    assert revoked.affected(principal, ["public/a"]) is None
    assert revoked.affected(principal, ["public/a", "secret/b"]) is not None


def test_prune_and_replace_all() -> None:
    revoked = RevocationList()
    old = Revocation("r1", T, T + 10, user="ada")
    forever = Revocation("r2", T, None, jti="x")
    assert revoked.add(old) and not revoked.add(old)
    revoked.prune(T + 11)
    assert len(revoked) == 0
    assert revoked.replace_all([forever, old]) == [forever, old]
    assert revoked.replace_all([forever]) == []
    assert revoked.all() == [forever]


@pytest.mark.parametrize(
    "fields",
    [{}, {"jti": "a", "user": "b"}, {"jti": "a", "docs": "x"}, {"user": ""}, {"user": "u" * 300}],
)
def test_malformed_revocations_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Revocation("r", T, None, **fields)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    revocation = Revocation("r1", T, None, user="ada", docs="a/*", reason="why")
    assert Revocation.from_json(revocation.to_json()) == revocation
    with pytest.raises(ValueError):
        Revocation.from_json(b'{"id": 1}')
