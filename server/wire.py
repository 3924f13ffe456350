"""Protocol errors, audio payloads, ids and the `error` event. No I/O (client events: server/client_events.py)."""

from __future__ import annotations

import base64
import binascii
import itertools
from typing import Any


class ProtocolError(Exception):
    """A client event that cannot be accepted; becomes an `error` server event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.type = type


def decode_audio(text: str, event_id: str | None, sample_bytes: int = 2) -> bytes:
    """The bytes of an `input_audio_buffer.append` event's base64 `audio` (PCM16, or 8-bit G.711)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64", code="invalid_base64", param="audio",
                            event_id=event_id) from None
    if len(data) % sample_bytes:
        raise ProtocolError("'audio' must be PCM16: an even number of bytes", code="invalid_audio",
                            param="audio", event_id=event_id)
    return data


class Ids:
    """Short unique ids with OpenAI's prefixes (event_, item_, resp_, sess_)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        import secrets

        self._salt = secrets.token_hex(4)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._salt}{next(self._counter):06d}"


def error_event(ids: Ids, error: ProtocolError) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": ids.new("event"),
        "error": {"type": error.type, "code": error.code, "message": error.message, "param": error.param,
                  "event_id": error.event_id},
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
