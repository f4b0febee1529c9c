"""Hypothesis strategies for the OT laws: documents, and valid ops against them.

Text mixes ASCII, a BMP accent and astral characters (emoji, musical symbols),
so every law is also checked with positions that count code points. Attribute
names come from a small set so concurrent formatting actually collides, with
string, number and boolean values (``True`` and ``1`` both appear: they are
different JSON values).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tandem.ot import Delta, Document

CHARACTERS = ("a", "b", "c", " ", "\n", "é", "😀", "𝄞", "中")
NAMES = ("bold", "italic", "color", "size")
VALUES: tuple[object, ...] = ("red", "blue", 1, 2, 1.5, True, False)

texts = st.text(alphabet=st.sampled_from(CHARACTERS), min_size=1, max_size=5)


def attributes(*, allow_null: bool) -> st.SearchStrategy[dict[str, Any] | None]:
    """None, or a small map; with ``allow_null`` a value may be None (a removal, retain only)."""
    values = st.sampled_from(VALUES + ((None,) if allow_null else ()))
    return st.none() | st.dictionaries(st.sampled_from(NAMES), values, min_size=1, max_size=3)


@st.composite
def document_deltas(draw: st.DrawFn, max_runs: int = 6) -> Delta:
    """A document as a (canonical) delta of formatted inserts; possibly empty."""
    runs = draw(
        st.lists(st.tuples(texts, attributes(allow_null=False)), max_size=max_runs),
    )
    document = Delta()
    for text, attrs in runs:
        document.insert(text, attrs)
    return document


documents = document_deltas().map(Document)


@st.composite
def ops(draw: st.DrawFn, length: int, max_components: int = 6) -> Delta:
    """A valid op on a document of ``length`` code points (canonical, sometimes unchopped)."""
    op = Delta()
    position = 0
    for _ in range(draw(st.integers(0, max_components))):
        room = length - position
        kind = draw(st.sampled_from(("insert", "retain", "delete"))) if room else "insert"
        if kind == "insert":
            op.insert(draw(texts), draw(attributes(allow_null=False)))
            continue
        count = draw(st.integers(1, room))
        if kind == "retain":
            op.retain(count, draw(attributes(allow_null=True)))
        else:
            op.delete(count)
        position += count
    return op.chop() if draw(st.booleans()) else op


@st.composite
def document_and_op(draw: st.DrawFn) -> tuple[Document, Delta]:
    document = draw(documents)
    return document, draw(ops(len(document)))


@st.composite
def document_and_concurrent_ops(draw: st.DrawFn) -> tuple[Document, Delta, Delta]:
    """A document and two ops made on it concurrently."""
    document = draw(documents)
    return document, draw(ops(len(document))), draw(ops(len(document)))


@st.composite
def single_edits(draw: st.DrawFn, length: int) -> Delta:
    """One keystroke-shaped op: an optional plain retain, then one insert or one delete.

    This is the shape ``transform``'s fast path takes (``_single_edit``); the
    general ``ops`` strategy almost never draws two of them at once.
    """
    position = draw(st.integers(0, length))
    op = Delta().retain(position)
    if position < length and draw(st.booleans()):
        return op.delete(draw(st.integers(1, length - position)))
    return op.insert(draw(texts), draw(attributes(allow_null=False)))


@st.composite
def document_and_single_edit_pairs(draw: st.DrawFn) -> tuple[Document, Delta, Delta]:
    """A short document and two concurrent single edits on it (ties and overlaps are common)."""
    document = draw(document_deltas(max_runs=3).map(Document))
    return document, draw(single_edits(len(document))), draw(single_edits(len(document)))


@st.composite
def document_and_sequential_ops(draw: st.DrawFn, count: int) -> tuple[Document, list[Delta]]:
    """A document and ``count`` ops, each made on the result of the ones before."""
    document = draw(documents)
    current = document
    sequence = []
    for _ in range(count):
        op = draw(ops(len(current)))
        sequence.append(op)
        current = current.apply(op)
    return document, sequence


# -- arbitrary JSON that may or may not be a valid delta ------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.sampled_from([0, -1, 2**31, 2**63, 1.0, 2.5, float("nan")])
    | st.text(alphabet=st.sampled_from(CHARACTERS + ("\ud800",)), max_size=4)
)
_json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(NAMES + ("",)), children, max_size=2)
    ),
    max_leaves=6,
)
_component_keys = st.sampled_from(("insert", "retain", "delete", "attributes", "embed"))


def _component(kind: str, value: object, attrs: dict[str, Any] | None) -> dict[str, object]:
    return {kind: value} if attrs is None else {kind: value, "attributes": attrs}


_plausible_components = st.dictionaries(_component_keys, _json_values, max_size=3) | st.builds(
    _component,
    st.sampled_from(("insert", "retain", "delete")),
    st.integers(1, 12) | texts,
    attributes(allow_null=True),
)
json_blobs = st.lists(_plausible_components | _json_values, max_size=5) | _json_values


def scripted_edit(
    kind: str, a: int, b: int | None, length: int, tag: str, styles: list[Any]
) -> Delta | None:
    """The edit a scripted action ``(kind, a, b)`` makes in a document ``length`` long,
    at ``a % (length + 1)``: insert ``tag`` in ``styles[b]``, delete ``b``
    characters, or ``format`` two in ``styles[b]``; None where it does not fit."""
    at = a % (length + 1)
    if kind == "insert":
        return Delta().retain(at).insert(tag, None if b is None else styles[b])
    assert b is not None
    if kind == "delete":
        return None if at + b > length else Delta().retain(at).delete(b)
    return None if at >= length else Delta().retain(at).retain(min(2, length - at), styles[b])
