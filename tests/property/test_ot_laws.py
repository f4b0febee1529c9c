"""The laws the OT core must satisfy, checked by hypothesis on random documents and ops.

Example counts come from the profiles in ``tests/conftest.py`` ("ci" by default,
"slow" under ``pytest --slow``); nothing here hard-codes ``max_examples``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.errors import InvalidOperation, OperationTooLong
from tandem.ot import (
    Delta,
    Document,
    Insert,
    Side,
    apply,
    compose,
    diff,
    invert,
    transform,
    transform_position,
)
from tandem.ot.delta import _checked_component_from_json, _component_from_json
from tandem.ot.transform import _single_edit

from .strategies import (
    document_and_concurrent_ops,
    document_and_op,
    document_and_sequential_ops,
    document_and_single_edit_pairs,
    documents,
    json_blobs,
    ops,
)

sides = st.sampled_from(["left", "right"])


def assert_valid_document(document: Document) -> None:
    """Canonical runs: no empty text, no null attribute, neighbours formatted differently."""
    delta = document.to_delta()
    assert delta == Delta(delta.ops)
    for component in delta.ops:
        assert type(component) is Insert and component.text
        assert component.attributes is None or None not in component.attributes.values()
    assert len(document) == len(document.text()) == delta.length()


@given(document_and_concurrent_ops())
def test_tp1(case: tuple[Document, Delta, Delta]) -> None:
    document, a, b = case
    via_a = apply(apply(document, a), transform(b, a, "left"))
    via_b = apply(apply(document, b), transform(a, b, "right"))
    assert via_a == via_b
    assert_valid_document(via_a)


@given(document_and_single_edit_pairs())
def test_tp1_for_single_edits(case: tuple[Document, Delta, Delta]) -> None:
    """TP1 where nearly all real traffic goes: two keystrokes, through the fast path."""
    document, a, b = case
    assert _single_edit(a) is not None and _single_edit(b) is not None  # the fast path's shape
    via_a = apply(apply(document, a), transform(b, a, "left"))
    via_b = apply(apply(document, b), transform(a, b, "right"))
    assert via_a == via_b
    assert_valid_document(via_a)


@given(document_and_concurrent_ops())
def test_tp1_as_compose(case: tuple[Document, Delta, Delta]) -> None:
    """The same diamond written with compose: a·b' == b·a' as deltas' effects."""
    document, a, b = case
    left = compose(a, transform(b, a, "left"))
    right = compose(b, transform(a, b, "right"))
    assert apply(document, left) == apply(document, right)


@given(document_and_sequential_ops(2))
def test_compose_matches_sequential_apply(case: tuple[Document, list[Delta]]) -> None:
    document, (a, b) = case
    assert apply(apply(document, a), b) == apply(document, compose(a, b))


@given(document_and_sequential_ops(3))
def test_compose_is_associative(case: tuple[Document, list[Delta]]) -> None:
    document, (a, b, c) = case
    left = compose(compose(a, b), c)
    right = compose(a, compose(b, c))
    assert left == right
    assert apply(document, left) == apply(apply(apply(document, a), b), c)


@given(document_and_op())
def test_invert_undoes(case: tuple[Document, Delta]) -> None:
    document, op = case
    assert apply(apply(document, op), invert(op, document)) == document


@given(document_and_op())
def test_compose_with_inverse_is_identity_on_the_document(case: tuple[Document, Delta]) -> None:
    document, op = case
    assert apply(document, compose(op, invert(op, document))) == document


@given(st.data(), document_and_op(), sides)
def test_transform_position_agrees_with_transform(
    data: st.DataObject, case: tuple[Document, Delta], side: Side
) -> None:
    document, op = case
    index = data.draw(st.integers(0, len(document)), label="index")
    probe = Delta().retain(index).insert("\x00")
    moved = transform(probe, op, side)
    landed = apply(apply(document, op), moved).text().index("\x00")
    assert landed == transform_position(index, op, side)


@given(document_and_op(), sides)
def test_transform_position_is_monotonic(case: tuple[Document, Delta], side: Side) -> None:
    document, op = case
    positions = [transform_position(i, op, side) for i in range(len(document) + 1)]
    assert positions == sorted(positions)
    assert all(0 <= p <= len(apply(document, op)) for p in positions)


@given(documents, documents)
def test_diff_takes_a_to_b(a: Document, b: Document) -> None:
    delta = diff(a, b)
    assert apply(a, delta) == b
    assert delta == Delta(delta.ops)


@given(documents)
def test_diff_of_equal_documents_is_empty(document: Document) -> None:
    assert diff(document, document).is_noop()


@given(document_and_op())
def test_json_round_trip(case: tuple[Document, Delta]) -> None:
    _, op = case
    wire = json.loads(json.dumps(op.to_json()))
    assert Delta.from_json(wire) == op
    assert Delta.from_json(wire).to_json() == op.to_json()


@given(documents.flatmap(lambda d: st.tuples(st.just(d), ops(len(d) + 3))))
def test_apply_never_half_applies(case: tuple[Document, Delta]) -> None:
    """An op too long for the document raises and leaves it untouched; others apply."""
    document, op = case
    before = document.to_delta()
    try:
        after = apply(document, op)
    except OperationTooLong:
        assert op.base_length() > len(document)
    else:
        assert op.base_length() <= len(document)
        assert len(after) == op.target_length(len(document))
        assert_valid_document(after)
    assert document.to_delta() == before


@given(documents, json_blobs)
def test_random_json_is_rejected_or_applies_cleanly(document: Document, blob: Any) -> None:
    try:
        op = Delta.from_json(blob)
        result = apply(document, op)
    except InvalidOperation:  # OperationTooLong is an InvalidOperation
        return
    assert_valid_document(result)
    json.dumps(result.to_delta().to_json())  # encodable: no lone surrogates got through


@given(json_blobs)
def test_from_json_shortcut_agrees_with_every_check(blob: Any) -> None:
    """The inline checks for well-formed components decide exactly as the full ones."""
    for item in blob if isinstance(blob, list) else [blob]:
        outcomes = []
        for parse in (_component_from_json, _checked_component_from_json):
            try:
                outcomes.append(parse(item, 0))
            except InvalidOperation as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1]


@given(document_and_concurrent_ops(), sides)
def test_transform_with_noops(case: tuple[Document, Delta, Delta], side: Side) -> None:
    _, a, _ = case
    assert transform(a, Delta(), side) == a.chop()
    assert transform(Delta(), a, side) == Delta()


def test_transform_does_not_commute_with_compose() -> None:
    """algorithms.md §3 / BRIEF decision 6: never pre-compose the ops you transform against.

    Document "x"; the server commits b1 = delete 1, then b2 = insert "c"; the client
    sent a = retain 1, insert "b". With side "left" (client's op loses the tie):
    step by step the result is "bc", against the composed op it is "cb".
    """
    document = Document("x")
    b1, b2 = Delta().delete(1), Delta().insert("c")
    a = Delta().retain(1).insert("b")
    committed = apply(apply(document, b1), b2)

    stepwise = transform(transform(a, b1, "left"), b2, "left")
    composed = transform(a, compose(b1, b2), "left")

    assert apply(committed, stepwise).text() == "bc"
    assert apply(committed, composed).text() == "cb"
    # With side "right" the two paths happen to agree.
    stepwise_right = transform(transform(a, b1, "right"), b2, "right")
    composed_right = transform(a, compose(b1, b2), "right")
    assert apply(committed, stepwise_right) == apply(committed, composed_right)


@pytest.mark.parametrize("side", ["left", "right"])
def test_tp1_on_the_counterexample(side: Side) -> None:
    """Each step of the stepwise path is itself a TP1 diamond."""
    document = Document("x")
    a, b1 = Delta().retain(1).insert("b"), Delta().delete(1)
    assert apply(apply(document, a), transform(b1, a, "left")) == apply(
        apply(document, b1), transform(a, b1, "right")
    )
