"""Tandem's operational-transform core: rich-text deltas, pure and fast.

Nothing in this package performs I/O or imports asyncio; everything with I/O
depends on it, never the other way round.
"""

from tandem.ot.compose import compose
from tandem.ot.cursor import transform_position, transform_selection
from tandem.ot.delta import Attributes, Component, Delete, Delta, Insert, Retain
from tandem.ot.diff import diff
from tandem.ot.document import Document, apply
from tandem.ot.invert import invert
from tandem.ot.sugar import from_simple, to_text
from tandem.ot.transform import Side, transform

__all__ = [
    "Attributes",
    "Component",
    "Delete",
    "Delta",
    "Document",
    "Insert",
    "Retain",
    "Side",
    "apply",
    "compose",
    "diff",
    "from_simple",
    "invert",
    "to_text",
    "transform",
    "transform_position",
    "transform_selection",
]
