"""One response as the client sees it: its state, its wire objects and its stage timings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.audio_formats import PCM, OutputEncoder
from server.conversation import Item
from server.wire import b64
from voice.audio import WIRE_RATE
from voice.response_events import FunctionCall, SpeechSegment, TextDelta
from voice.turn_taking import TurnClock

Emit = Callable[..., None]
"""Sends a server event: `emit(type, **fields)`."""

AUDIO_DELTA_S = 0.2  # of audio per output_audio.delta
TIMING_KEYS = ("end_of_turn_ms", "transcript_ms", "response_start_ms", "llm_first_token_ms", "tts_first_audio_ms",
               "first_audio_sent_ms")
SERVER_METADATA_KEYS = frozenset({*TIMING_KEYS, "speech_end_audio_ms", "timing_origin", "speculative", "pipeline"})
"""The keys the server writes into `response.metadata`; a client's metadata may not use them."""


@dataclass
class ActiveResponse:
    id: str
    item: Item
    audio: bool
    started: float
    clock: TurnClock
    marks: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    """The client's metadata, echoed as it came and never read."""
    labels: dict[str, str] = field(default_factory=dict)
    """The server's own metadata (`pipeline`, `speculative`), kept apart from the client's."""
    voice: str = "alloy"
    max_output_tokens: int | None = None
    deferred_transcript: str | None = None
    """The user item whose final transcription waits for this reply's first audio."""
    output: list[Item] = field(default_factory=list)
    """The output items opened so far, in order: the message (`item`) once it has words, calls."""
    encoder: OutputEncoder = field(default_factory=lambda: OutputEncoder(PCM))
    """The speech in the session's output format (its resampler spans the whole response)."""

    @property
    def opened(self) -> bool:
        """Whether the message item is out (a reply that may call a tool opens it at its first words)."""
        return any(out is self.item for out in self.output)


@dataclass
class SpeculativeReply:
    """A reply started in the silence window: it runs, but the client hears of it only if the turn
    ends exactly where the speculation assumed (then it is adopted)."""

    id: str
    item_id: str  # the user's turn it answers
    voiced_end_ms: int
    transcript: str
    started: float  # when its work began (it becomes the response's start when adopted)
    events: list[Any] = field(default_factory=list)  # what it emitted so far


def emit_message_opened(emit: Emit, response: ActiveResponse, previous: str | None) -> None:
    """The events that open the response's message item (it is then in the conversation, after `previous`)."""
    item = response.item
    index = len(response.output)
    response.output.append(item)
    emit("response.output_item.added", response_id=response.id, output_index=index, item=item.to_wire())
    emit("conversation.item.added", previous_item_id=previous, item=item.to_wire())
    emit("response.content_part.added", response_id=response.id, item_id=item.id, output_index=index,
         content_index=0, part=content_part(item))


def emit_function_call(emit: Emit, response: ActiveResponse, item: Item, previous: str | None) -> None:
    """A `function_call` output item, whole: added, its arguments (one delta), done."""
    index = len(response.output)
    response.output.append(item)
    common = {"response_id": response.id, "item_id": item.id, "output_index": index, "call_id": item.call_id}
    emit("response.output_item.added", response_id=response.id, output_index=index,
         item={**item.to_wire(), "status": "in_progress", "arguments": ""})
    emit("conversation.item.added", previous_item_id=previous, item={**item.to_wire(), "status": "in_progress"})
    emit("response.function_call_arguments.delta", delta=item.arguments, **common)
    emit("response.function_call_arguments.done", name=item.name, arguments=item.arguments, **common)
    emit("response.output_item.done", response_id=response.id, output_index=index, item=item.to_wire())
    emit("conversation.item.done", item=item.to_wire())


def function_call_item(item_id: str, call_id: str, call: FunctionCall) -> Item:
    return Item(id=item_id, role="assistant", content_type="", type="function_call", call_id=call_id,
                name=call.name, arguments=call.arguments)


def emit_output(emit: Emit, response: ActiveResponse, output: TextDelta | SpeechSegment, now: float) -> None:
    """Reply text or speech: into the assistant's item, and out as deltas."""
    item = response.item
    common = {"response_id": response.id, "item_id": item.id, "output_index": response.output.index(item),
              "content_index": 0}
    if isinstance(output, TextDelta):
        item.text = (item.text or "") + output.text
        emit("response.output_text.delta", delta=output.text, **common)
        return
    duration_ms = len(output.audio) / 2 / WIRE_RATE * 1000
    if output.text:
        spoken = f" {output.text}" if item.text else output.text
        item.text = (item.text or "") + spoken
        item.segments.append((output.text, duration_ms))
        emit("response.output_audio_transcript.delta", delta=spoken, **common)
    elif item.segments:
        text, ms = item.segments[-1]
        item.segments[-1] = (text, ms + duration_ms)
    item.audio_ms += duration_ms
    response.marks.setdefault("first_audio_sent", now)
    _emit_audio(emit, response.encoder, response.encoder.encode(output.audio), common)


def _emit_audio(emit: Emit, encoder: OutputEncoder, audio: bytes, common: dict[str, Any]) -> None:
    step = int(encoder.format.rate * AUDIO_DELTA_S) * encoder.format.sample_bytes
    for start in range(0, len(audio), step):
        emit("response.output_audio.delta", delta=b64(audio[start:start + step]), **common)


def emit_finished(emit: Emit, response: ActiveResponse, status: str) -> None:
    """The events that close a response's item and content (`response.done` follows)."""
    item = response.item
    item.status = "completed" if status == "completed" else "incomplete"
    item.text = (item.text or "").strip()
    index = response.output.index(item)
    common = {"response_id": response.id, "item_id": item.id, "output_index": index, "content_index": 0}
    if response.audio:
        if status == "completed":  # (a cancelled reply's audio stops where it was cut)
            _emit_audio(emit, response.encoder, response.encoder.flush(), common)
        emit("response.output_audio.done", **common)
        emit("response.output_audio_transcript.done", transcript=item.text, **common)
    else:
        emit("response.output_text.done", text=item.text, **common)
    emit("response.content_part.done", part=content_part(item), **common)
    emit("response.output_item.done", response_id=response.id, output_index=index, item=item.to_wire())
    emit("conversation.item.done", item=item.to_wire())


def content_part(item: Item) -> dict[str, Any]:
    if item.content_type == "output_audio":
        return {"type": "audio", "transcript": item.text or ""}
    return {"type": "text", "text": item.text or ""}


def response_object(response: ActiveResponse, status: str, *, output: list[dict[str, Any]], conversation_id: str,
                    status_details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `response` object of `response.created` and `response.done`."""
    metadata = {**(response.metadata or {}), **response.labels}  # (no key in common: see SERVER_METADATA_KEYS)
    if status != "in_progress":
        metadata.update(timings(response))
    return {
        "id": response.id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": ["audio"] if response.audio else ["text"],
        "audio": {"output": {"format": response.encoder.format.to_wire(), "voice": response.voice}},
        "max_output_tokens": response.max_output_tokens or "inf",
        "metadata": metadata or None,
        "usage": None,
    }


def timings(response: ActiveResponse) -> dict[str, str]:
    """Stage timings in ms from the end of the user's speech (or from the response start)."""
    clock = response.clock
    origin = clock.speech_end if clock.speech_end is not None else response.started
    stamps = {
        "end_of_turn_ms": clock.end_of_turn,
        "transcript_ms": clock.transcript,
        "response_start_ms": response.started,
        "llm_first_token_ms": response.marks.get("llm_first_token"),
        "tts_first_audio_ms": response.marks.get("tts_first_audio"),
        "first_audio_sent_ms": response.marks.get("first_audio_sent"),
    }
    result = {name: f"{(at - origin) * 1000:.1f}" for name, at in stamps.items() if at is not None}
    result["timing_origin"] = "speech_end" if clock.speech_end is not None else "response_start"
    if clock.speech_end_audio_ms is not None:
        result["speech_end_audio_ms"] = str(clock.speech_end_audio_ms)
    return result
