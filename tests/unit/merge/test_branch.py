"""The offline-branch merge (tandem.merge.branch): exact convergence, no lost or doubled inserts."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.property.strategies import documents, ops

from tandem.merge.branch import Engine, compose_branch, merge_branches
from tandem.ot.compose import compose
from tandem.ot.delta import Delta
from tandem.ot.document import Document

ENGINES: tuple[Engine, ...] = ("compose", "yrs")


@st.composite
def branch(draw: st.DrawFn, base: Document, marks: list[int]) -> list[Delta]:
    """Ops each based on the previous; every insert is one fresh private-use character."""
    length = len(base)
    result: list[Delta] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(("insert", "insert", "delete", "format")))
        if kind == "insert" or length == 0:
            at = draw(st.integers(0, length))
            marks[0] += 1
            attrs = draw(st.sampled_from((None, {"bold": True})))
            result.append(Delta().retain(at).insert(chr(0xE000 + marks[0]), attrs).chop())
            length += 1
        else:
            at = draw(st.integers(0, length - 1))
            count = draw(st.integers(1, length - at))
            if kind == "delete":
                result.append(Delta().retain(at).delete(count))
                length -= count
            else:
                value = draw(st.sampled_from((True, None)))
                result.append(Delta().retain(at).retain(count, {"italic": value}).chop())
    return result


def _final(base: Document, branch_ops: list[Delta]) -> Document:
    document = base
    for op in branch_ops:
        document = document.apply(op)
    return document


def _marks(document: Document) -> list[str]:
    return [c for c in document.text() if "\ue000" <= c <= "\uf8ff"]


@pytest.mark.parametrize("engine", ENGINES)
@given(data=st.data())
def test_merge_converges_and_keeps_every_insert_once(engine: Engine, data: Any) -> None:
    base = data.draw(documents)
    marks = [0]
    server_ops = data.draw(branch(base, marks))
    client_ops = data.draw(branch(base, marks))
    head = _final(base, server_ops)
    client = _final(base, client_ops)
    result = merge_branches(base, server_ops, client_ops, head, engine=engine)
    assert result.client_document == client
    assert head.apply(result.commit) == result.merged
    assert client.apply(result.catchup) == result.merged
    assert sorted(_marks(result.merged)) == sorted(_marks(head) + _marks(client))


@given(data=st.data())
def test_compose_branch_matches_sequential_apply(data: Any) -> None:
    document = data.draw(documents)
    branch_ops: list[Delta] = []
    current = document
    for _ in range(data.draw(st.integers(0, 7))):
        op = data.draw(ops(len(current)))
        branch_ops.append(op)
        current = current.apply(op)
    assert document.apply(compose_branch(branch_ops)) == current
    if len(branch_ops) == 2:
        assert document.apply(compose(*branch_ops)) == current


def test_big_scattered_branches_converge() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    from bench.offline_merge import make_branch, make_document

    rng = random.Random(seed)
    base = make_document(rng, 5_000)
    server_ops = make_branch(rng, len(base), 300)
    client_ops = make_branch(rng, len(base), 300)
    head = _final(base, server_ops)
    for engine in ENGINES:
        result = merge_branches(base, server_ops, client_ops, head, engine=engine)
        assert result.client_document.apply(result.catchup) == head.apply(result.commit)


def test_empty_branches() -> None:
    base = Document("abc")
    result = merge_branches(base, [], [])
    assert result.commit == Delta() and result.catchup == Delta()
    assert result.merged == base
