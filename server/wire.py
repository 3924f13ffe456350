"""Client events: parse and validate (clear errors); server events: build. No I/O."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

CLIENT_EVENT_TYPES = frozenset({
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
})


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


@dataclass(frozen=True)
class ClientEvent:
    """A validated client event: its type, its optional id, and its fields."""

    type: str
    event_id: str | None
    data: dict[str, Any] = field(default_factory=dict)


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """Parse one websocket message into a ClientEvent, or raise ProtocolError."""
    if isinstance(raw, bytes):
        raise ProtocolError("binary frames are not accepted: send JSON text events", code="invalid_event")
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"the event is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ProtocolError("an event must be a JSON object", code="invalid_event")
    event_id = payload.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolError("'event_id' must be a string", param="event_id")
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("the event has no 'type' string", code="missing_type", param="type", event_id=event_id)
    if kind not in CLIENT_EVENT_TYPES:
        raise ProtocolError(f"unknown event type {kind!r}", code="unknown_event_type", param="type",
                            event_id=event_id)
    return ClientEvent(kind, event_id, payload)


def require(event: ClientEvent, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    """A field of the event, type-checked (bool is not accepted as a number)."""
    value = event.data.get(name)
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        problem = "is missing" if value is None else f"must be {expected}"
        raise ProtocolError(f"'{name}' {problem} in {event.type}", code="missing_required_parameter"
                            if value is None else "invalid_type", param=name, event_id=event.event_id)
    return value


def decode_audio(event: ClientEvent) -> bytes:
    """The PCM16 bytes of an `input_audio_buffer.append` event."""
    text = require(event, "audio", str)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64", code="invalid_base64", param="audio",
                            event_id=event.event_id) from None
    if len(data) % 2:
        raise ProtocolError("'audio' must be PCM16: an even number of bytes", code="invalid_audio",
                            param="audio", event_id=event.event_id)
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


@dataclass(frozen=True)
class MessageItem:
    """A message item of `conversation.item.create`."""

    role: str
    text: str
    item_id: str | None


def parse_message_item(event: ClientEvent) -> MessageItem:
    """The message of a `conversation.item.create`, validated (text content parts only)."""
    spec = require(event, "item", dict)
    if spec.get("type", "message") != "message":
        raise ProtocolError("only message items are supported", code="unsupported", param="item.type",
                            event_id=event.event_id)
    role = spec.get("role")
    if role not in ("user", "assistant", "system"):
        raise ProtocolError("item.role must be user, assistant or system", param="item.role", event_id=event.event_id)
    content = spec.get("content")
    if not isinstance(content, list) or not content:
        raise ProtocolError("item.content must be a non-empty list", param="item.content", event_id=event.event_id)
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "text", "output_text"):
            raise ProtocolError("content parts must be input_text, text or output_text", code="unsupported",
                                param="item.content", event_id=event.event_id)
        value = part.get("text")
        if not isinstance(value, str):
            raise ProtocolError("a text content part needs a 'text' string", param="item.content",
                                event_id=event.event_id)
        texts.append(value)
    item_id = spec.get("id") if isinstance(spec.get("id"), str) else None
    return MessageItem(role, " ".join(texts), item_id)
