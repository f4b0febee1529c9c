"""The rich-text delta: value types, the normalising builder, and the JSON form.

A delta is a list of components, in the Quill Delta style:

* ``Insert(text, attributes)`` puts ``text`` at the cursor;
* ``Retain(count, attributes)`` skips ``count`` characters, and with attributes
  formats them (an attribute set to ``None``/``null`` removes it);
* ``Delete(count)`` removes ``count`` characters.

Lengths and positions count Unicode code points (Python ``str`` semantics).

Every ``Delta`` built through ``push`` (and so every one this package returns)
is in canonical form, the same one quill-delta produces:

1. no empty insert and no zero count;
2. adjacent components of the same kind and the same attributes are merged;
3. an insert directly after a delete is moved in front of it;
4. a trailing ``Retain`` without attributes is dropped (``chop``).

Two canonical deltas that do the same thing are equal as values.
This module is pure: it must not import asyncio, storage or network code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, TypeAlias

from tandem.errors import InvalidOperation

__all__ = [
    "AttributeValue",
    "Attributes",
    "Component",
    "Delete",
    "Delta",
    "Insert",
    "MAX_COUNT",
    "Retain",
    "has_lone_surrogate",
    "same_attributes",
    "same_value",
    "validate_attributes",
]

AttributeValue: TypeAlias = str | int | float | bool | None
#: Attribute maps are treated as immutable once built; never mutate one in place.
Attributes: TypeAlias = Mapping[str, AttributeValue]

#: Largest count or attribute-name length a component may carry (keeps numbers sane).
MAX_COUNT: Final = 2**31 - 1
MAX_ATTRIBUTE_NAME: Final = 64
MAX_ATTRIBUTE_VALUE: Final = 2048
MAX_ATTRIBUTES: Final = 32


class Insert:
    """Insert ``text`` (non-empty) with optional formatting ``attributes``."""

    __slots__ = ("text", "attributes")

    def __init__(self, text: str, attributes: Attributes | None = None) -> None:
        self.text = text
        self.attributes = attributes or None

    def __len__(self) -> int:
        return len(self.text)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Insert
            and self.text == other.text
            and same_attributes(self.attributes, other.attributes)
        )

    def __hash__(self) -> int:
        return hash(("insert", self.text))

    def __repr__(self) -> str:
        if self.attributes:
            return f"Insert({self.text!r}, {dict(self.attributes)!r})"
        return f"Insert({self.text!r})"


class Retain:
    """Keep ``count`` characters; with ``attributes``, (re)format them."""

    __slots__ = ("count", "attributes")

    def __init__(self, count: int, attributes: Attributes | None = None) -> None:
        self.count = count
        self.attributes = attributes or None

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Retain
            and self.count == other.count
            and same_attributes(self.attributes, other.attributes)
        )

    def __hash__(self) -> int:
        return hash(("retain", self.count))

    def __repr__(self) -> str:
        if self.attributes:
            return f"Retain({self.count}, {dict(self.attributes)!r})"
        return f"Retain({self.count})"


class Delete:
    """Remove ``count`` characters."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        return type(other) is Delete and self.count == other.count

    def __hash__(self) -> int:
        return hash(("delete", self.count))

    def __repr__(self) -> str:
        return f"Delete({self.count})"


Component: TypeAlias = Insert | Retain | Delete


def same_value(a: AttributeValue, b: AttributeValue) -> bool:
    """Attribute values equal as JSON values: ``True`` is not ``1``; ``1`` is ``1.0``."""
    return a == b and (type(a) is bool) is (type(b) is bool)


def same_attributes(a: Attributes | None, b: Attributes | None) -> bool:
    """Attribute maps equal as JSON values (``None`` and ``{}`` both mean "none").

    Python's ``==`` says ``True == 1`` and ``False == 0``; JSON (and quill-delta's
    ``isEqual``) does not, so ``{"bold": true}`` and ``{"bold": 1}`` must stay
    distinct runs. ``1 == 1.0`` is fine: JSON has one number type.
    """
    if a is b:
        return True
    if not a or not b:
        return not a and not b
    if a != b:
        return False
    return all((type(value) is bool) is (type(b[key]) is bool) for key, value in a.items())


def _attrs_or_none(attributes: Attributes | None) -> Attributes | None:
    return attributes if attributes else None


class Delta:
    """An immutable-by-convention list of components in canonical form.

    Build one with the chaining builder (``Delta().retain(3).insert("x")``),
    from JSON with ``Delta.from_json`` (which validates strictly), or from
    components with ``Delta.of``. ``ops`` is the component list; treat it as
    read-only once the delta has been handed to anyone else.
    """

    __slots__ = ("ops",)

    def __init__(self, ops: Iterable[Component] | None = None) -> None:
        self.ops: list[Component] = []
        if ops is not None:
            for component in ops:
                self.push(component)

    # -- building ---------------------------------------------------------

    @classmethod
    def of(cls, *components: Component) -> Delta:
        """Normalise the given components into a canonical delta."""
        return cls(components)

    # The builder appends directly when nothing can merge (the common case of
    # a keystroke: retain, then insert or delete); otherwise ``push`` decides.

    def insert(self, text: str, attributes: Attributes | None = None) -> Delta:
        if text:
            ops = self.ops
            if not ops or type(ops[-1]) is Retain:
                ops.append(Insert(text, attributes))
            else:
                self.push(Insert(text, attributes))
        return self

    def retain(self, count: int, attributes: Attributes | None = None) -> Delta:
        if count > 0:
            ops = self.ops
            if not ops or type(ops[-1]) is not Retain:
                ops.append(Retain(count, attributes))
            else:
                self.push(Retain(count, attributes))
        return self

    def delete(self, count: int) -> Delta:
        if count > 0:
            ops = self.ops
            if not ops or type(ops[-1]) is not Delete:
                ops.append(Delete(count))
            else:
                self.push(Delete(count))
        return self

    def push(self, component: Component) -> Delta:
        """Append one component, merging it into its neighbour where canonical form asks."""
        ops = self.ops
        kind = type(component)
        if kind is Delete:
            if component.count <= 0:  # type: ignore[union-attr]
                return self
        elif kind is Insert:
            if not component.text:  # type: ignore[union-attr]
                return self
        elif component.count <= 0:  # type: ignore[union-attr]
            return self
        index = len(ops)
        if index:
            last = ops[-1]
            last_kind = type(last)
            if kind is not last_kind and (kind is not Insert or last_kind is not Delete):
                ops.append(component)  # nothing to merge with or move before
                return self
            if kind is Delete and type(last) is Delete:
                ops[-1] = Delete(last.count + component.count)  # type: ignore[union-attr]
                return self
            if kind is Insert and type(last) is Delete:
                # Inserting before or after a delete at the same index is the same
                # edit; canonical form always inserts first.
                index -= 1
                if index == 0:
                    ops.insert(0, component)
                    return self
                last = ops[index - 1]
            if kind is type(last) and kind is not Delete:
                attributes = component.attributes  # type: ignore[union-attr]
                if same_attributes(attributes, last.attributes):  # type: ignore[union-attr]
                    if kind is Insert:
                        merged: Component = Insert(last.text + component.text, attributes)  # type: ignore[union-attr]
                    else:
                        merged = Retain(last.count + component.count, attributes)  # type: ignore[union-attr]
                    ops[index - 1] = merged
                    return self
        if index == len(ops):
            ops.append(component)
        else:
            ops.insert(index, component)
        return self

    def chop(self) -> Delta:
        """Drop a trailing plain retain (it changes nothing)."""
        ops = self.ops
        if ops:
            last = ops[-1]
            if type(last) is Retain and not last.attributes:
                ops.pop()
        return self

    def concat(self, other: Delta) -> Delta:
        """A new delta: this one's components followed by ``other``'s."""
        result = Delta()
        result.ops = list(self.ops)
        if other.ops:
            result.push(other.ops[0])
            result.ops.extend(other.ops[1:])
        return result

    # -- measuring ----------------------------------------------------------

    def length(self) -> int:
        """Total length of all components."""
        return sum(len(component) for component in self.ops)

    def base_length(self) -> int:
        """Smallest document length this delta can apply to (retains + deletes)."""
        return sum(len(c) for c in self.ops if type(c) is not Insert)

    def target_length(self, base_length: int) -> int:
        """Length of a document of ``base_length`` after this delta."""
        change = 0
        for component in self.ops:
            kind = type(component)
            if kind is Insert:
                change += len(component)
            elif kind is Delete:
                change -= len(component)
        return base_length + change

    def is_document(self) -> bool:
        """True when every component is an insert (a delta that *is* a document)."""
        return all(type(c) is Insert for c in self.ops)

    def is_noop(self) -> bool:
        return not self.ops

    def text(self) -> str:
        """The plain text of the inserts (a document's text)."""
        return "".join(c.text for c in self.ops if type(c) is Insert)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delta) and self.ops == other.ops

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Delta({self.ops!r})"

    # -- JSON -----------------------------------------------------------------

    def to_json(self) -> list[dict[str, Any]]:
        """The wire form: a list of ``{"insert"|"retain"|"delete": …, "attributes"?: …}``."""
        out: list[dict[str, Any]] = []
        for component in self.ops:
            kind = type(component)
            if kind is Insert:
                item: dict[str, Any] = {"insert": component.text}  # type: ignore[union-attr]
            elif kind is Retain:
                item = {"retain": component.count}  # type: ignore[union-attr]
            else:
                out.append({"delete": component.count})  # type: ignore[union-attr]
                continue
            if component.attributes:  # type: ignore[union-attr]
                item["attributes"] = dict(component.attributes)  # type: ignore[union-attr]
            out.append(item)
        return out

    @classmethod
    def from_json(cls, data: object) -> Delta:
        """Validate and normalise a delta in wire form.

        Raises ``InvalidOperation`` naming the first problem: not a list, a
        component that is not an object, unknown or conflicting keys, a
        non-string or empty insert, a count that is not a positive integer,
        attributes on a delete, or attributes that are not a flat map of
        short names to scalar values.
        """
        if isinstance(data, Delta):
            return data
        if not isinstance(data, list):
            raise InvalidOperation("a delta must be a JSON array of components")
        delta = cls()
        push = delta.push
        for index, item in enumerate(data):
            push(_component_from_json(item, index))
        return delta


_KINDS: Final = ("insert", "retain", "delete")


def _component_from_json(item: object, index: int) -> Component:
    """One validated component; the common well-formed shapes are checked inline."""
    if type(item) is dict:
        size = len(item)
        if size == 1 or (size == 2 and "attributes" in item):
            if "insert" in item:
                text = item["insert"]
                if type(text) is str and text and (text.isascii() or not has_lone_surrogate(text)):
                    raw = item.get("attributes")
                    if raw is None:
                        return Insert(text)
                    where = f"component {index}"
                    return Insert(text, validate_attributes(raw, where, allow_null=False))
            elif "delete" in item:
                count = item["delete"]
                if size == 1 and type(count) is int and 0 < count <= MAX_COUNT:
                    return Delete(count)
            elif "retain" in item:
                count = item["retain"]
                if type(count) is int and 0 < count <= MAX_COUNT:
                    raw = item.get("attributes")
                    if raw is None:
                        return Retain(count)
                    where = f"component {index}"
                    return Retain(count, validate_attributes(raw, where, allow_null=True))
    return _checked_component_from_json(item, index)


def _checked_component_from_json(item: object, index: int) -> Component:
    """Every check in order: an invalid component gets the error naming its first problem."""
    where = f"component {index}"
    if not isinstance(item, dict):
        raise InvalidOperation(f"{where}: must be an object")
    kinds = [key for key in _KINDS if key in item]
    if len(kinds) != 1:
        raise InvalidOperation(f"{where}: must have exactly one of insert, retain, delete")
    kind = kinds[0]
    for key in item:
        if key != kind and key != "attributes":
            raise InvalidOperation(f"{where}: unknown key {str(key)[:40]!r}")
    value = item[kind]
    raw_attributes = item.get("attributes")
    if kind == "insert":
        if not isinstance(value, str):
            raise InvalidOperation(f"{where}: insert must be a string (embeds are not supported)")
        if not value:
            raise InvalidOperation(f"{where}: insert must not be empty")
        if has_lone_surrogate(value):
            raise InvalidOperation(f"{where}: insert contains a lone UTF-16 surrogate")
        attributes = validate_attributes(raw_attributes, where, allow_null=False)
        return Insert(value, attributes)
    count = _count(value, f"{where}: {kind}")
    if kind == "delete":
        if "attributes" in item:
            raise InvalidOperation(f"{where}: a delete cannot carry attributes")
        return Delete(count)
    return Retain(count, validate_attributes(raw_attributes, where, allow_null=True))


def _count(value: object, where: str) -> int:
    if type(value) is not int:
        raise InvalidOperation(f"{where} must be a positive integer")
    if value <= 0:
        raise InvalidOperation(f"{where} must be a positive integer, got {value}")
    if value > MAX_COUNT:
        raise InvalidOperation(f"{where} is too large ({value} > {MAX_COUNT})")
    return value


def validate_attributes(raw: object, where: str, *, allow_null: bool) -> Attributes | None:
    """Check an attribute map: short string names, scalar values, ``null`` only on retain."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidOperation(f"{where}: attributes must be an object")
    if len(raw) > MAX_ATTRIBUTES:
        raise InvalidOperation(f"{where}: too many attributes ({len(raw)} > {MAX_ATTRIBUTES})")
    for name, value in raw.items():
        if not isinstance(name, str) or not name or len(name) > MAX_ATTRIBUTE_NAME:
            raise InvalidOperation(
                f"{where}: attribute names must be strings of 1 to {MAX_ATTRIBUTE_NAME} characters"
            )
        if has_lone_surrogate(name):
            raise InvalidOperation(f"{where}: attribute name contains a lone UTF-16 surrogate")
        if value is None:
            if not allow_null:
                raise InvalidOperation(
                    f"{where}: attribute {name!r} is null; null removes formatting and "
                    "is only allowed on retain"
                )
        elif isinstance(value, bool | int):
            if type(value) is int and abs(value) > MAX_COUNT:
                raise InvalidOperation(f"{where}: attribute {name!r} is out of range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidOperation(f"{where}: attribute {name!r} must be a finite number")
        elif isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_VALUE:
                raise InvalidOperation(f"{where}: attribute {name!r} is too long")
            if has_lone_surrogate(value):
                raise InvalidOperation(f"{where}: attribute {name!r} contains a lone surrogate")
        else:
            raise InvalidOperation(
                f"{where}: attribute {name!r} must be a string, number, boolean or null"
            )
    return dict(raw) if raw else None


# A JS client that slices a string between the halves of a UTF-16 pair sends a
# lone surrogate. It is not a character (decision 3: no op splits one), and
# UTF-8 encoders (orjson) refuse it, so it would break every later broadcast.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds half of a UTF-16 surrogate pair (not a character)."""
    return not text.isascii() and _SURROGATE.search(text) is not None
