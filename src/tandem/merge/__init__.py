"""The CRDT bridge: a pycrdt replica of every document, Yjs wire format, offline merges.

Pure like ``tandem.ot``: nothing here imports asyncio, storage, bus or network code.
"""
