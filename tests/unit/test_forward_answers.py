"""The owner's answers on a node channel survive encoding, including both a version
and an error (a rejected Yjs update: committed with its revert, and refused)."""

from __future__ import annotations

from tandem.errors import Rejected
from tandem.session.forwards import Answer, OwnerRefused, decode, encode_answer


def test_answers_round_trip() -> None:
    refused = OwnerRefused("ERR_REJECTED", "no", {"rejection": {"code": "locked", "reason": "r"}})
    for answer in (
        Answer(1, version=7),
        Answer(2, not_owner=True),
        Answer(3, error=refused),
        Answer(4, 9, refused),
    ):
        decoded = decode(encode_answer(answer))
        assert isinstance(decoded, Answer)
        assert (decoded.id, decoded.version, decoded.not_owner) == (
            answer.id,
            answer.version,
            answer.not_owner,
        )
        if answer.error is None:
            assert decoded.error is None
        else:
            assert decoded.error is not None
            assert (decoded.error.code, decoded.error.extra) == (refused.code, refused.extra)


def test_a_rejection_answered_with_its_version_is_raised_as_the_rejection() -> None:
    refused = OwnerRefused("ERR_REJECTED", "no", {"rejection": {"code": "locked", "reason": "r"}})
    decoded = decode(encode_answer(Answer(5, 3, refused)))
    assert isinstance(decoded, Answer) and decoded.error is not None
    assert isinstance(decoded.error.local(), Rejected)
