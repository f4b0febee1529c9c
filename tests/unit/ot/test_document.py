"""Document and apply: values, errors, formatting, and the chunked layout past CHUNK."""

from __future__ import annotations

import random
from itertools import accumulate, groupby

import pytest

from tandem.errors import InvalidOperation, OperationTooLong
from tandem.ot import Delta, Document, apply
from tandem.ot.document import CHUNK


def check_layout(document: Document) -> None:
    """The chunk invariants (white-box): non-empty, bounded, ends consistent."""
    chunks = document._chunks
    assert all(0 < len(text) <= CHUNK for text, _ in chunks)
    assert document._ends == list(accumulate(len(text) for text, _ in chunks))


class TestBasics:
    def test_empty_document(self) -> None:
        document = Document()
        assert len(document) == 0 and document.text() == ""
        assert document == Document("") == Delta()
        assert apply(document, Delta()) is document
        assert apply(document, Delta().insert("a😀")).text() == "a😀"

    def test_apply_insert_delete_retain(self) -> None:
        document = Document("a😀bc")
        assert len(document) == 4
        result = apply(document, Delta().retain(1).delete(1).insert("🎉").retain(1, {"b": 1}))
        assert result.to_delta() == Delta().insert("a🎉").insert("b", {"b": 1}).insert("c")

    def test_apply_accepts_str_and_delta_and_leaves_input_alone(self) -> None:
        document = Document("abc")
        assert apply("abc", Delta().delete(1)).text() == "bc"
        assert apply(Delta().insert("abc"), Delta().delete(1)).text() == "bc"
        apply(document, Delta().delete(1))
        assert document.text() == "abc"

    def test_a_document_may_contain_only_inserts(self) -> None:
        with pytest.raises(InvalidOperation, match="only inserts"):
            Document(Delta().retain(1))

    def test_attribute_removal_with_null(self) -> None:
        document = Document(Delta().insert("ab", {"bold": True, "color": "red"}))
        result = document.apply(Delta().retain(1, {"bold": None}))
        assert result.to_delta() == Delta().insert("a", {"color": "red"}).insert(
            "b", {"bold": True, "color": "red"}
        )
        assert result.apply(Delta().retain(2, {"color": None, "bold": None})) == Document("ab")

    def test_true_and_one_are_different_formats(self) -> None:
        a = Document(Delta().insert("x", {"bold": True}))
        b = Document(Delta().insert("x", {"bold": 1}))
        assert a != b
        assert list(a.apply(Delta().retain(1).insert("y", {"bold": 1})).runs()) == [
            ("x", {"bold": True}),
            ("y", {"bold": 1}),
        ]

    def test_runs_slice_repr(self) -> None:
        document = Document(Delta().insert("ab", {"b": 1}).insert("cd"))
        assert list(document.runs()) == [("ab", {"b": 1}), ("cd", None)]
        assert document.slice(1, 3) == [("b", {"b": 1}), ("c", None)]
        assert document.slice(3, 3) == [] and document.slice(5, 9) == []
        assert "runs=2" in repr(document)
        assert document != "abcd"


class TestTooLong:
    @pytest.mark.parametrize(
        "op",
        [
            Delta().retain(4),
            Delta().retain(3).delete(1),
            Delta().delete(4),
            Delta().insert("x").retain(2).delete(2),
            Delta().retain(1, {"bold": True}).retain(3, {"bold": True}),
            Delta().retain(2).retain(2, {"b": 1}),
        ],
    )
    def test_raises_and_leaves_the_document_unchanged(self, op: Delta) -> None:
        document = Document(Delta().insert("a😀", {"b": 1}).insert("c"))
        before = document.to_delta()
        with pytest.raises(OperationTooLong) as caught:
            document.apply(op)
        assert caught.value.code == "ERR_OP_TOO_LONG"
        assert isinstance(caught.value, InvalidOperation)
        assert document.to_delta() == before
        check_layout(document)

    def test_too_long_past_a_chunk_boundary(self) -> None:
        document = Document("x" * (3 * CHUNK))
        with pytest.raises(OperationTooLong):
            document.apply(Delta().retain(CHUNK + 1).delete(2 * CHUNK))
        assert document.text() == "x" * (3 * CHUNK)


class TestChunks:
    text = "".join(chr(0x61 + i % 26) for i in range(5 * CHUNK + 123))

    def test_construction_cuts_evenly(self) -> None:
        document = Document(self.text)
        check_layout(document)
        assert len(document._chunks) == 6
        assert document.text() == self.text

    def test_edits_across_chunk_boundaries(self) -> None:
        document = Document(self.text)
        op = Delta().retain(CHUNK - 2).delete(5).insert("😀").retain(CHUNK, {"bold": True})
        result = document.apply(op)
        check_layout(result)
        expected = self.text[: CHUNK - 2] + "😀" + self.text[CHUNK + 3 :]
        assert result.text() == expected
        assert result.slice(CHUNK - 3, CHUNK) == [(expected[CHUNK - 3 : CHUNK - 1], None)] + [
            (expected[CHUNK - 1], {"bold": True})
        ]
        assert document.text() == self.text  # the old version is intact

    def test_insert_exactly_at_a_boundary_and_at_the_end(self) -> None:
        document = Document(self.text)
        for position in (0, CHUNK, 2 * CHUNK, len(self.text)):
            result = document.apply(Delta().retain(position).insert("X"))
            check_layout(result)
            assert result.text() == self.text[:position] + "X" + self.text[position:]

    def test_many_deletes_do_not_fragment(self) -> None:
        document = Document(self.text)
        rng = random.Random(3)
        for _ in range(3000):
            position = rng.randrange(len(document))
            document = document.apply(Delta().retain(position).delete(1))
        check_layout(document)
        assert len(document) == len(self.text) - 3000
        assert len(document._chunks) <= 2 * len(document) // CHUNK + 2

    def test_typing_does_not_fragment(self) -> None:
        document = Document(self.text)
        rng = random.Random(5)
        for _ in range(5000):
            position = rng.randrange(len(document) + 1)
            document = document.apply(Delta().retain(position).insert("k"))
        check_layout(document)
        assert len(document._chunks) <= 2 * len(document) // CHUNK + 2

    def test_slice_across_chunks(self) -> None:
        document = Document(self.text)
        runs = document.slice(CHUNK - 10, 3 * CHUNK + 10)
        assert "".join(text for text, _ in runs) == self.text[CHUNK - 10 : 3 * CHUNK + 10]
        assert all(attributes is None for _, attributes in runs)

    def test_equality_with_differently_chunked_documents(self) -> None:
        whole = Document(self.text)
        typed = Document()
        for begin in range(0, len(self.text), 997):
            typed = typed.apply(Delta().retain(len(typed)).insert(self.text[begin : begin + 997]))
        assert whole == typed  # whatever the chunk layouts, the values are equal
        assert whole.to_delta() == typed.to_delta() == Delta().insert(self.text)
        assert whole != typed.apply(Delta().retain(5, {"bold": True}))

    def test_formatting_runs_across_chunks(self) -> None:
        document = Document(self.text).apply(Delta().retain(10).retain(3 * CHUNK, {"b": True}))
        check_layout(document)
        runs = list(document.runs())
        assert [len(text) for text, _ in runs] == [10, 3 * CHUNK, len(self.text) - 10 - 3 * CHUNK]
        assert document.to_delta().ops[1].attributes == {"b": True}

    def test_random_edits_match_a_plain_model(self) -> None:
        """Seeded: every apply agrees with a list-of-characters model, across chunks."""
        seed = 11
        rng = random.Random(seed)
        model: list[tuple[str, object]] = [(c, None) for c in self.text[: 3 * CHUNK]]
        document = Document(self.text[: 3 * CHUNK])
        for step in range(300):
            op, position, new = Delta(), 0, []
            for _ in range(rng.randint(1, 4)):
                room, roll = len(model) - position, rng.random()
                if roll < 0.3 or room == 0:
                    text = rng.choice(["x", "😀", "yz" * rng.choice([1, 1500])])
                    op.insert(text)
                    new += [(c, None) for c in text]
                    continue
                count = rng.randint(1, min(room, rng.choice([3, CHUNK + 7])))
                if roll < 0.55:
                    op.retain(count)
                    new += model[position : position + count]
                elif roll < 0.75:
                    op.retain(count, {"b": True})
                    new += [(c, {"b": True}) for c, _ in model[position : position + count]]
                else:
                    op.delete(count)
                position += count
            model = new + model[position:]
            document = document.apply(op)
            expected = [
                ("".join(c for c, _ in run), {"b": True} if bold else None)
                for bold, run in groupby(model, key=lambda item: item[1] is not None)
            ]
            assert list(document.runs()) == expected, f"seed {seed}, step {step}"
            check_layout(document)


class TestKeystrokes:
    """The one-chunk keystroke path and its lazily shifted ends, against a plain model."""

    def test_random_keystrokes_match_a_plain_model(self) -> None:
        """Seeded: typing and deleting in bursts at moving places, some of it formatted."""
        seed = 23
        rng = random.Random(seed)
        text = "".join(chr(0x61 + i % 26) for i in range(4 * CHUNK))
        model: list[tuple[str, object]] = [(c, None) for c in text]
        document = Document(text)
        versions = [(document, list(model))]
        position = 0
        for step in range(4000):
            if rng.random() < 0.05:
                position = rng.randrange(len(model) + 1)  # jump elsewhere
            position = min(position, len(model))
            roll = rng.random()
            if roll < 0.6 or not model:
                inserted = rng.choice(["k", "😀", "xy"])
                bold = {"b": True} if rng.random() < 0.05 else None
                op = Delta().retain(position).insert(inserted, bold)
                model[position:position] = [(c, bold) for c in inserted]
                position += len(inserted)
            elif roll < 0.95:
                start = max(position - 1, 0)
                count = min(rng.choice([1, 1, 2, 40]), len(model) - start) or 1
                op = Delta().retain(start).delete(count)
                del model[start : start + count]
                position = start
            else:
                start = rng.randrange(len(model))
                count = rng.randint(1, min(len(model) - start, 50))
                op = Delta().retain(start).delete(count).insert("z")
                model[start : start + count] = [("z", None)]
            document = document.apply(op)
            assert len(document) == len(model), f"seed {seed}, step {step}"
            if step % 97 == 0:
                versions.append((document, list(model)))
                check_layout(document)
                lo = rng.randrange(len(model) + 1)
                hi = rng.randrange(lo, len(model) + 1)
                assert "".join(t for t, _ in document.slice(lo, hi)) == "".join(
                    c for c, _ in model[lo:hi]
                )
            expected = [
                ("".join(c for c, _ in run), attributes)
                for attributes, run in groupby(model, key=lambda item: item[1])
            ]
            assert list(document.runs()) == expected, f"seed {seed}, step {step}"
        check_layout(document)
        for old, old_model in versions:  # every kept version is intact
            assert old.text() == "".join(c for c, _ in old_model)

    def test_a_keystroke_past_the_end_raises_with_a_pending_shift(self) -> None:
        document = Document("x" * (3 * CHUNK)).apply(Delta().retain(CHUNK + 5).insert("ab"))
        assert len(document) == 3 * CHUNK + 2
        with pytest.raises(OperationTooLong):
            document.apply(Delta().retain(3 * CHUNK + 1).delete(2))
        typed = document.apply(Delta().retain(3 * CHUNK + 2).insert("!"))
        assert typed.text() == "x" * (CHUNK + 5) + "ab" + "x" * (2 * CHUNK - 5) + "!"
        check_layout(typed)
