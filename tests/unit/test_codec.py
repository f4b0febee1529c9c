"""The stored form of deltas: what ``encode_delta`` refuses is what would not load back.

``encode_delta`` checks the components themselves (``codec.loadable``) instead of
parsing its bytes back with ``Delta.from_json``. The reference here is that round
trip: over deltas built from any components, valid or not, both refuse the same
ones, and what is stored loads back as the same delta.
"""

from __future__ import annotations

import math
import types
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.errors import InvalidOperation
from tandem.ot.delta import MAX_COUNT, Delete, Delta, Insert, Retain
from tandem.storage.codec import decode_delta, encode_delta

_names = st.sampled_from(("bold", "color", "", "x" * 65)) | st.integers(0, 2)
_values = (
    st.sampled_from(("red", True, False, 1, 1.5, None, "x" * 2049))
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.tuples(st.integers())
)
_attributes = st.none() | st.dictionaries(_names, _values, max_size=3)
_counts = st.sampled_from((0, -1, 1, 7, MAX_COUNT, MAX_COUNT + 1, True, 2.0))
_texts = st.sampled_from(("", "a", "héllo", "😀", 3))
_components = st.one_of(
    st.builds(Insert, _texts, _attributes),
    st.builds(Retain, _counts, _attributes),
    st.builds(Delete, _counts),
)


def _delta(components: list[Any]) -> Delta:
    delta = Delta()
    delta.ops = components  # as found, not normalised: the check must not rely on push
    return delta


def _round_trip(delta: Delta) -> bytes:
    """What ``encode_delta`` did before: write the JSON, then load it back."""
    try:
        data = orjson.dumps(delta.to_json())
    except orjson.JSONEncodeError as exc:
        raise InvalidOperation(str(exc)) from exc
    Delta.from_json(orjson.loads(data))
    return data


@given(st.lists(_components, max_size=4))
def test_refuses_exactly_what_would_not_load_back(components: list[Any]) -> None:
    delta = _delta(components)
    try:
        expected: bytes | None = _round_trip(delta)
    except InvalidOperation:
        expected = None
    try:
        stored: bytes | None = encode_delta(delta)
    except InvalidOperation:
        stored = None
    assert stored == expected
    if stored is not None:
        assert decode_delta(stored) == Delta.from_json(delta.to_json())


def test_the_error_names_the_component() -> None:
    with pytest.raises(InvalidOperation, match="component 1: attribute 'bold' is null"):
        encode_delta(_delta([Retain(2), Insert("a", {"bold": None})]))
    with pytest.raises(InvalidOperation, match="component 0: retain must be a positive integer"):
        encode_delta(_delta([Retain(MAX_COUNT + 1)]))


def test_a_non_finite_number_is_refused_rather_than_stored_as_null() -> None:
    # JSON has no infinity: orjson writes null, which would load back as a removal.
    with pytest.raises(InvalidOperation, match="finite"):
        encode_delta(_delta([Retain(1, {"size": math.inf})]))


def test_any_mapping_of_attributes_is_stored_as_an_object() -> None:
    delta = Delta().insert("a", types.MappingProxyType({"bold": True}))
    assert encode_delta(delta) == b'[{"insert":"a","attributes":{"bold":true}}]'
