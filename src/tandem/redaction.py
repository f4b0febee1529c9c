"""Bearer tokens kept out of logs: a function for text, a filter for log handlers.

Servers log request lines (``"WebSocket /collab?token=…" [accepted]`` at INFO)
and, at DEBUG, request headers. ``TokenRedactingFilter`` on every handler (what
``redacting`` does to a ``logging.config.dictConfig`` dictionary such as
uvicorn's) replaces each token with ``[redacted]`` before a record is written.

Pure: text in, text out; must not import asyncio, the server or ``os``.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

__all__ = ["TokenRedactingFilter", "redact_tokens", "redacting"]

#: ``token=`` in a query string, where any of its characters may be percent-encoded
#: (``tok%65n=`` authenticates too: query names are decoded before they are read).
_TOKEN_NAME = "".join(f"(?:{c}|%{ord(c):02x})" for c in "token") + "(?:=|%3d)"
#: A token in a query string, an Authorization header, or a ``bearer.`` subprotocol.
_TOKEN_IN_TEXT = re.compile(
    rf"(?P<lead>(?<![\w%]){_TOKEN_NAME}|\bBearer\s+|\bbearer\.)[^\s&,;\"'\]]+",
    re.IGNORECASE,
)


def redact_tokens(text: str) -> str:
    """``text`` with every bearer token replaced by ``[redacted]`` (for log lines)."""
    return _TOKEN_IN_TEXT.sub(lambda m: m.group("lead") + "[redacted]", text)


class TokenRedactingFilter(logging.Filter):
    """A logging filter that redacts tokens from every record it sees.

    Servers log request lines (``"WebSocket /collab?token=…" [accepted]`` at INFO)
    and, at DEBUG, request headers; attach this to the log *handlers* (e.g. in
    uvicorn's ``log_config``: ``"filters": {"redact": {"()":
    "tandem.redaction.TokenRedactingFilter"}}``) so no token reaches a log file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redacting(log_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``dictConfig`` dictionary with ``TokenRedactingFilter`` on every handler."""
    config: dict[str, Any] = copy.deepcopy(log_config)
    config.setdefault("filters", {})["redact"] = {"()": f"{__name__}.TokenRedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
