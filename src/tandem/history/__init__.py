"""A document's past: versions, changes, authorship, restore, labels and retention.

``authorship`` is pure (who inserted each character); ``service`` reads the
store and the archive (``tandem.storage.archive``) to answer questions about
any version at a cost bounded by the checkpoint interval.
"""

from tandem.history.authorship import Authorship

__all__ = ["Authorship"]
