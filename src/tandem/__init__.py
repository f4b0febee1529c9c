"""Tandem: real-time collaborative editing for Python.

Operational transform for rich text (``tandem.ot``), a durable single
sequencer per document, presence, JWT auth, and a CRDT bridge for Yjs clients.
"""

from tandem.errors import TandemError
from tandem.settings import Settings

__version__ = "0.1.0"

__all__ = ["Settings", "TandemError", "__version__"]
