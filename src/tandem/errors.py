"""Every error Tandem raises, each with a stable wire ``code``.

The pure core raises these; the gateway turns one exception into exactly one
``{"type": "error", "code": ..., "message": ...}`` reply (or a close frame with
``close_code`` for the fatal ones). Codes never change once published.

Hierarchy::

    TandemError                      ERR_INTERNAL
    ├── InvalidOperation             ERR_INVALID_OP         malformed delta / component
    │   └── OperationTooLong         ERR_OP_TOO_LONG        op reaches past the document
    ├── ProtocolError                ERR_BAD_MESSAGE        malformed frame or message
    │   ├── UnknownMessageType       ERR_UNKNOWN_TYPE
    │   └── FrameTooLarge            ERR_FRAME_TOO_LARGE    (closes, 1009)
    ├── VersionError                 ERR_BAD_VERSION        base version in the future / negative
    │   └── HistoryUnavailable       ERR_HISTORY_PRUNED     base older than retained history
    │       └── HistoryCompacted     ERR_HISTORY_COMPACTED  version read below the oldest kept
    ├── DocumentError                ERR_DOCUMENT
    │   ├── NotJoined                ERR_NOT_JOINED
    │   ├── InvalidDocumentId        ERR_BAD_DOC_ID
    │   ├── DocumentTooLarge         ERR_DOC_TOO_LARGE
    │   ├── NotFound                 ERR_NOT_FOUND          no such label (or document part)
    │   ├── DocumentDeleted          ERR_DOC_DELETED        an admin deleted it (closes, 4410)
    │   └── StaleIncarnation         ERR_STALE_INCARNATION  old history (closes, 4409)
    ├── AuthError                    ERR_UNAUTHORIZED       (closes, 4401)
    │   ├── UnknownSigningKey        ERR_UNAUTHORIZED       no key has this kid (yet)
    │   ├── TokenExpired             ERR_TOKEN_EXPIRED      (closes, 4401)
    │   ├── Revoked                  ERR_REVOKED            an admin revoked it (closes, 4403)
    │   └── Forbidden                ERR_FORBIDDEN          (4403 when fatal)
    │       ├── ReadOnly             ERR_READ_ONLY
    │       └── Rejected             ERR_REJECTED           the authorize hook refused the op
    │           └── AuthorizeFailed  ERR_AUTHORIZE_FAILED   the hook failed; refused (fail closed)
    ├── RateLimited                  ERR_RATE_LIMITED
    │   └── LimitExceeded            ERR_LIMIT_EXCEEDED     connection caps (closes, 4429)
    │       └── JoinLimitExceeded    ERR_LIMIT_EXCEEDED     join cap (the connection stays)
    ├── SlowConsumer                 ERR_SLOW_CONSUMER      (closes, 4408)
    └── StorageError                 ERR_STORAGE            commit failed; nothing was acked
        └── ConflictError            ERR_CONFLICT           (doc, version) already taken
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthorizeFailed",
    "ConflictError",
    "DocumentDeleted",
    "StaleIncarnation",
    "DocumentError",
    "DocumentTooLarge",
    "FencedError",
    "Forbidden",
    "FrameTooLarge",
    "HistoryCompacted",
    "HistoryUnavailable",
    "InvalidDocumentId",
    "InvalidOperation",
    "JoinLimitExceeded",
    "LimitExceeded",
    "NotFound",
    "NotJoined",
    "OperationTooLong",
    "ProtocolError",
    "RateLimited",
    "Revoked",
    "ReadOnly",
    "Rejected",
    "SlowConsumer",
    "StorageError",
    "TandemError",
    "TokenExpired",
    "UnknownMessageType",
    "UnknownSigningKey",
    "VersionError",
]


class TandemError(Exception):
    """Base of every Tandem error. ``code`` is stable and goes on the wire."""

    code = "ERR_INTERNAL"
    #: WebSocket close code when this error ends the connection; None keeps it open.
    close_code: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, object]:
        """Fields an error reply carries besides ``code`` and ``message`` (none by default)."""
        return {}


class InvalidOperation(TandemError):
    """The delta is malformed: unknown keys, bad counts, non-string inserts, bad attributes."""

    code = "ERR_INVALID_OP"


class OperationTooLong(InvalidOperation):
    """The delta retains or deletes past the end of the document it is applied to."""

    code = "ERR_OP_TOO_LONG"


class ProtocolError(TandemError):
    """The frame or message does not follow ``docs/protocol.md``."""

    code = "ERR_BAD_MESSAGE"


class UnknownMessageType(ProtocolError):
    code = "ERR_UNKNOWN_TYPE"


class FrameTooLarge(ProtocolError):
    code = "ERR_FRAME_TOO_LARGE"
    close_code = 1009


class VersionError(TandemError):
    """The base version is not one the server has (negative or in the future)."""

    code = "ERR_BAD_VERSION"


class HistoryUnavailable(VersionError):
    """The base version is older than the history the server retains."""

    code = "ERR_HISTORY_PRUNED"


class HistoryCompacted(HistoryUnavailable):
    """A version older than the oldest one retention kept; ``oldest`` can still be read."""

    code = "ERR_HISTORY_COMPACTED"

    def __init__(self, message: str, *, oldest: int) -> None:
        super().__init__(message)
        self.oldest = oldest


class DocumentError(TandemError):
    code = "ERR_DOCUMENT"


class NotJoined(DocumentError):
    code = "ERR_NOT_JOINED"


class InvalidDocumentId(DocumentError):
    code = "ERR_BAD_DOC_ID"


class DocumentTooLarge(DocumentError):
    code = "ERR_DOC_TOO_LARGE"


class NotFound(DocumentError):
    """Something asked for by name does not exist (a label)."""

    code = "ERR_NOT_FOUND"


class DocumentDeleted(DocumentError):
    """An administrator deleted (or erased, renamed) the document this client had open."""

    code = "ERR_DOC_DELETED"
    close_code = 4410


class StaleIncarnation(DocumentError):
    """A Yjs client holds changes of another incarnation of the document (a restore).

    Its state cannot be merged: it would bring the old history back. The
    connection closes with 4409; the client starts from a fresh Y.Doc and
    re-applies its own unsent edits (docs/protocol.md, "Incarnations").
    """

    code = "ERR_STALE_INCARNATION"
    close_code = 4409


class AuthError(TandemError):
    """The token is missing, malformed, badly signed or otherwise unacceptable."""

    code = "ERR_UNAUTHORIZED"
    close_code: int | None = 4401


class UnknownSigningKey(AuthError):
    """The token names a ``kid`` that no configured key has (yet)."""

    def __init__(self, message: str, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class TokenExpired(AuthError):
    code = "ERR_TOKEN_EXPIRED"
    close_code = 4401


class Revoked(AuthError):
    """An administrator revoked this token, this user, or this user's access to the document."""

    code = "ERR_REVOKED"
    close_code = 4403


class Forbidden(AuthError):
    """The token is valid but does not grant this action on this document."""

    code = "ERR_FORBIDDEN"
    close_code = None


class ReadOnly(Forbidden):
    code = "ERR_READ_ONLY"


class Rejected(Forbidden):
    """The ``authorize`` hook refused an op: nothing of it was applied.

    ``rejection_code`` and ``reason`` are the hook's own (docs/extending.md); every
    error reply carries them as ``"rejection": {"code", "reason"}``.
    """

    code = "ERR_REJECTED"

    def __init__(self, rejection_code: str, reason: str) -> None:
        super().__init__(f"the op was rejected ({rejection_code}): {reason}")
        self.rejection_code = rejection_code
        self.reason = reason

    def details(self) -> dict[str, object]:
        return {"rejection": {"code": self.rejection_code, "reason": self.reason}}


class AuthorizeFailed(Rejected):
    """The ``authorize`` hook raised or timed out and ``authorize_failure`` is ``reject``."""

    code = "ERR_AUTHORIZE_FAILED"


class RateLimited(TandemError):
    code = "ERR_RATE_LIMITED"


class LimitExceeded(RateLimited):
    code = "ERR_LIMIT_EXCEEDED"
    close_code: int | None = 4429


class JoinLimitExceeded(LimitExceeded):
    """Too many documents joined on one connection; the join fails, the socket stays."""

    close_code = None


class SlowConsumer(TandemError):
    code = "ERR_SLOW_CONSUMER"
    close_code = 4408


class StorageError(TandemError):
    """The store failed; the op was not committed and was not acknowledged."""

    code = "ERR_STORAGE"


class ConflictError(StorageError):
    """Another writer already committed this ``(doc, version)``."""

    code = "ERR_CONFLICT"


class FencedError(StorageError):
    """The commit's lease epoch is stale: another node owns these documents now.

    Nothing was written. The node must stop sequencing ``docs`` at once and
    move their clients on (``session/ownership.py``).
    """

    code = "ERR_FENCED"

    def __init__(self, message: str, *, docs: tuple[str, ...]) -> None:
        super().__init__(message)
        self.docs = docs
