"""Delta value types, the canonical builder, and the strict JSON form."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.errors import InvalidOperation
from tandem.ot import Delete, Delta, Insert, Retain
from tandem.ot.delta import MAX_ATTRIBUTE_NAME, MAX_ATTRIBUTES, MAX_COUNT, same_attributes


class TestCanonicalForm:
    def test_empty_components_are_dropped(self) -> None:
        assert Delta().insert("").retain(0).delete(0) == Delta()
        assert Delta.of(Insert(""), Retain(0), Delete(0)).ops == []

    def test_adjacent_inserts_with_equal_attributes_merge(self) -> None:
        delta = Delta().insert("a", {"bold": True}).insert("b", {"bold": True}).insert("c")
        assert delta.ops == [Insert("ab", {"bold": True}), Insert("c")]

    def test_true_and_one_are_different_attributes(self) -> None:
        delta = Delta().insert("a", {"bold": True}).insert("b", {"bold": 1})
        assert len(delta.ops) == 2
        assert Insert("a", {"bold": True}) != Insert("a", {"bold": 1})
        assert Insert("a", {"size": 1}) == Insert("a", {"size": 1.0})

    def test_retains_merge_and_deletes_merge(self) -> None:
        assert Delta().retain(2).retain(3).ops == [Retain(5)]
        assert Delta().retain(2, {"b": 1}).retain(3, {"b": 1}).ops == [Retain(5, {"b": 1})]
        assert Delta().retain(2, {"b": 1}).retain(3).ops == [Retain(2, {"b": 1}), Retain(3)]
        assert Delta().delete(2).delete(3).ops == [Delete(5)]

    def test_insert_goes_before_a_delete(self) -> None:
        assert Delta().delete(2).insert("x").ops == [Insert("x"), Delete(2)]
        assert Delta().retain(1).delete(2).insert("x").ops == [
            Retain(1),
            Insert("x"),
            Delete(2),
        ]

    def test_insert_after_delete_merges_with_the_insert_before_it(self) -> None:
        delta = Delta().insert("a").delete(2).insert("b")
        assert delta.ops == [Insert("ab"), Delete(2)]

    def test_chop_drops_only_a_plain_trailing_retain(self) -> None:
        assert Delta().insert("a").retain(3).chop().ops == [Insert("a")]
        formatted = Delta().insert("a").retain(3, {"bold": True})
        assert formatted.chop().ops == [Insert("a"), Retain(3, {"bold": True})]

    def test_empty_attribute_maps_mean_none(self) -> None:
        assert Insert("a", {}).attributes is None
        assert Delta.of(Insert("a", {})) == Delta().insert("a")
        assert same_attributes(None, {})

    def test_constructor_normalises(self) -> None:
        delta = Delta([Retain(1), Retain(2), Delete(1), Insert("x"), Insert("y")])
        assert delta.ops == [Retain(3), Insert("xy"), Delete(1)]

    def test_concat_merges_at_the_seam(self) -> None:
        left = Delta().insert("a")
        right = Delta().insert("b").retain(2)
        assert left.concat(right).ops == [Insert("ab"), Retain(2)]
        assert left.ops == [Insert("a")]  # unchanged


class TestMeasuring:
    def test_lengths_count_code_points(self) -> None:
        delta = Delta().insert("a😀b").retain(2).delete(1)
        assert len(Insert("a😀b")) == 3
        assert delta.length() == 6
        assert delta.base_length() == 3
        assert delta.target_length(5) == 7

    def test_document_helpers(self) -> None:
        assert Delta().insert("x").insert("😀", {"b": 1}).is_document()
        assert not Delta().retain(1).insert("x").is_document()
        assert Delta().insert("a😀").insert("b", {"b": 1}).text() == "a😀b"
        assert Delta().is_noop() and not Delta()

    def test_deltas_are_unhashable_values(self) -> None:
        assert Delta().insert("a") == Delta().insert("a")
        assert Delta().insert("a") != [Insert("a")]
        with pytest.raises(TypeError):
            hash(Delta())


class TestJson:
    def test_round_trip(self) -> None:
        wire = [
            {"retain": 2, "attributes": {"bold": None, "color": "red"}},
            {"insert": "a😀", "attributes": {"size": 1.5, "em": True}},
            {"delete": 3},
        ]
        delta = Delta.from_json(wire)
        assert delta.to_json() == wire
        assert Delta.from_json(delta.to_json()) == delta

    def test_from_json_normalises(self) -> None:
        delta = Delta.from_json([{"delete": 1}, {"insert": "a"}, {"insert": "b"}, {"retain": 1}])
        assert delta.ops == [Insert("ab"), Delete(1), Retain(1)]

    def test_empty_attributes_and_null_attributes_key_are_none(self) -> None:
        assert Delta.from_json([{"insert": "a", "attributes": {}}]).ops == [Insert("a")]
        assert Delta.from_json([{"retain": 1, "attributes": None}]).ops == [Retain(1)]

    def test_a_delta_passes_through(self) -> None:
        delta = Delta().insert("a")
        assert Delta.from_json(delta) is delta

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"insert": "a"}, "must be a JSON array"),
            ("abc", "must be a JSON array"),
            (None, "must be a JSON array"),
            (["insert"], "component 0: must be an object"),
            ([{"insert": "a"}, 3], "component 1: must be an object"),
            ([{}], "exactly one of insert, retain, delete"),
            ([{"insert": "a", "delete": 1}], "exactly one of insert, retain, delete"),
            ([{"retain": 1, "delete": 1}], "exactly one of insert, retain, delete"),
            ([{"insert": "a", "bold": True}], "unknown key 'bold'"),
            ([{"attributes": {"bold": True}}], "exactly one of"),
            ([{"insert": 5}], "insert must be a string"),
            ([{"insert": {"image": "x.png"}}], "embeds are not supported"),
            ([{"insert": None}], "insert must be a string"),
            ([{"insert": ""}], "insert must not be empty"),
            ([{"insert": "a\ud83d"}], "lone UTF-16 surrogate"),
            ([{"retain": 0}], "retain must be a positive integer"),
            ([{"retain": -2}], "retain must be a positive integer, got -2"),
            ([{"delete": 0}], "delete must be a positive integer"),
            ([{"delete": True}], "delete must be a positive integer"),
            ([{"retain": False}], "retain must be a positive integer"),
            ([{"retain": 1.0}], "retain must be a positive integer"),
            ([{"delete": 2.5}], "delete must be a positive integer"),
            ([{"retain": "3"}], "retain must be a positive integer"),
            ([{"retain": MAX_COUNT + 1}], "retain is too large"),
            ([{"delete": 10**30}], "delete is too large"),
            ([{"delete": 1, "attributes": {"bold": True}}], "a delete cannot carry attributes"),
            ([{"delete": 1, "attributes": None}], "a delete cannot carry attributes"),
            ([{"retain": 1, "attributes": ["bold"]}], "attributes must be an object"),
            ([{"retain": 1, "attributes": "bold"}], "attributes must be an object"),
            ([{"insert": "a", "attributes": {"font": {"size": 3}}}], "'font' must be a string"),
            ([{"insert": "a", "attributes": {"tags": ["x"]}}], "'tags' must be a string"),
            ([{"insert": "a", "attributes": {"bold": None}}], "only allowed on retain"),
            ([{"retain": 1, "attributes": {"": True}}], "attribute names must be strings"),
            (
                [{"retain": 1, "attributes": {"x" * (MAX_ATTRIBUTE_NAME + 1): True}}],
                "attribute names must be strings of 1 to",
            ),
            (
                [{"retain": 1, "attributes": {f"a{i}": 1 for i in range(MAX_ATTRIBUTES + 1)}}],
                "too many attributes",
            ),
            ([{"retain": 1, "attributes": {"size": float("nan")}}], "must be a finite number"),
            ([{"retain": 1, "attributes": {"size": float("inf")}}], "must be a finite number"),
            ([{"retain": 1, "attributes": {"size": 2**40}}], "'size' is out of range"),
            ([{"retain": 1, "attributes": {"link": "x" * 5000}}], "'link' is too long"),
            ([{"retain": 1, "attributes": {"link": "\udc00"}}], "lone surrogate"),
        ],
    )
    def test_every_validation_error_names_the_problem(self, data: Any, message: str) -> None:
        with pytest.raises(InvalidOperation, match=message) as caught:
            Delta.from_json(data)
        assert caught.value.code == "ERR_INVALID_OP"

    def test_validation_reports_the_first_bad_component(self) -> None:
        with pytest.raises(InvalidOperation, match="component 2"):
            Delta.from_json([{"retain": 1}, {"insert": "a"}, {"delete": -1}])

    def test_long_unknown_keys_are_truncated_in_the_message(self) -> None:
        with pytest.raises(InvalidOperation) as caught:
            Delta.from_json([{"insert": "a", "k" * 1000: 1}])
        assert len(str(caught.value)) < 200
