"""Typed helpers for OpenAI Realtime events: builders for what a client sends, views of what it gets."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]


# ---------------------------------------------------------------- client events
def session_update(**session: Any) -> Event:
    """`session.update` with these session fields (`instructions=`, `tools=`, `audio=`...)."""
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def audio_append(pcm: bytes) -> Event:
    """`input_audio_buffer.append` of PCM16, mono, 24 kHz."""
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def audio_commit() -> Event:
    return {"type": "input_audio_buffer.commit"}


def user_text(text: str) -> Event:
    """`conversation.item.create` of a typed user message."""
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}


def response_create(**response: Any) -> Event:
    """`response.create`, with per-response overrides when given (`tool_choice=`, `instructions=`...)."""
    return {"type": "response.create", **({"response": response} if response else {})}


def response_cancel(response_id: str | None = None) -> Event:
    return {"type": "response.cancel", **({"response_id": response_id} if response_id else {})}


def output_audio_clear() -> Event:
    """`output_audio_buffer.clear`: stop the reply under way, if any."""
    return {"type": "output_audio_buffer.clear"}


def item_truncate(item_id: str, audio_end_ms: int, content_index: int = 0) -> Event:
    """`conversation.item.truncate`: the assistant item was heard up to `audio_end_ms` (an integer)."""
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": content_index,
            "audio_end_ms": int(audio_end_ms)}


def function_call_output(call_id: str, output: Any) -> Event:
    """`conversation.item.create` of a tool's result (a string; anything else goes as JSON)."""
    text = output if isinstance(output, str) else json.dumps(output)
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": text}}


# ---------------------------------------------------------------- server events
@dataclass(frozen=True)
class AudioDelta:
    response_id: str
    item_id: str
    pcm: bytes


@dataclass(frozen=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class Transcript:
    """The user's words (`conversation.item.input_audio_transcription.completed`) or the
    assistant's (`response.output_audio_transcript.done`)."""

    role: str
    item_id: str
    text: str


@dataclass(frozen=True)
class FunctionCall:
    """`response.function_call_arguments.done`: the assistant calls a tool."""

    call_id: str
    name: str
    arguments: str
    item_id: str
    response_id: str

    def parsed_arguments(self) -> Any:
        return json.loads(self.arguments) if self.arguments else {}


@dataclass(frozen=True)
class ResponseDone:
    id: str
    status: str
    output: list[dict[str, Any]]
    metadata: dict[str, str]


@dataclass(frozen=True)
class ServerError:
    code: str | None
    message: str
    param: str | None
    event_id: str | None


Typed = AudioDelta | SpeechStarted | Transcript | FunctionCall | ResponseDone | ServerError


def typed(event: Event) -> Typed | None:
    """The typed view of a server event, for the kinds a client usually acts on; None for others."""
    kind = event.get("type")
    if kind == "response.output_audio.delta":
        return AudioDelta(event["response_id"], event["item_id"], base64.b64decode(event["delta"]))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(event["item_id"], int(event.get("audio_start_ms", 0)))
    if kind == "conversation.item.input_audio_transcription.completed":
        return Transcript("user", event["item_id"], event["transcript"])
    if kind == "response.output_audio_transcript.done":
        return Transcript("assistant", event["item_id"], event["transcript"])
    if kind == "response.function_call_arguments.done":
        return FunctionCall(event["call_id"], event.get("name", ""), event.get("arguments", ""),
                            event.get("item_id", ""), event.get("response_id", ""))
    if kind == "response.done":
        response = event["response"]
        return ResponseDone(response["id"], response["status"], response.get("output") or [],
                            response.get("metadata") or {})
    if kind == "error":
        error = event.get("error") or {}
        return ServerError(error.get("code"), error.get("message", ""), error.get("param"), error.get("event_id"))
    return None
