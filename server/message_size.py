"""The client message size limit, in bytes, and the `event_id` of a message refused for its size. No I/O."""

from __future__ import annotations

import re

from server.wire import ProtocolError

_PEEK_CHARS = 512  # an event_id is looked for only this near either end of a message: reading it costs nothing
_EVENT_ID = re.compile(r'"event_id"\s*:\s*"([^"\\]{1,256})"')
_MAX_UTF8_BYTES_PER_CHAR = 4


def message_bytes(message: str | bytes, limit: int) -> int:
    """The message's size in bytes (UTF-8 for text), exact where it matters against `limit`: a text
    longer than `limit` in characters is only said to be that long (it is over the limit either way).

    Text is encoded only when its character count leaves the answer open, so the common small
    message costs no copy."""
    if isinstance(message, bytes) or len(message) > limit or len(message) * _MAX_UTF8_BYTES_PER_CHAR <= limit:
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


def peek_event_id(message: str | bytes) -> str | None:
    """The event_id near the start or the end of a message, without parsing it; None if not there."""
    text = message if isinstance(message, str) else message[:_PEEK_CHARS].decode("utf-8", "replace")
    for part in (text[:_PEEK_CHARS], text[-_PEEK_CHARS:] if isinstance(message, str) else ""):
        if found := _EVENT_ID.search(part):
            return found.group(1)
    return None


def oversized(message: str | bytes, limit: int) -> ProtocolError | None:
    """The error for a message over `limit` bytes, naming its event_id where it can be read cheaply."""
    if message_bytes(message, limit) <= limit:
        return None
    return ProtocolError(f"the message exceeds the {limit} byte limit: it is dropped", code="message_too_large",
                         event_id=peek_event_id(message))
