"""A session's replies: the response the client hears, and one started speculatively in the
silence window that the client hears of only if the turn ends where it assumed."""

from __future__ import annotations

from typing import Any

import numpy as np

from server.audio_formats import FORMATS, OutputEncoder
from server.config import SessionConfig
from server.conversation import Conversation, Item
from server.effects import CancelResponse, DeferTranscription, Outbox, ResponseProgress, StartResponse
from server.response_wire import (
    ActiveResponse,
    SpeculativeReply,
    emit_finished,
    emit_function_call,
    emit_message_opened,
    emit_output,
    function_call_item,
    response_object,
)
from server.tools import offered
from server.wire import ProtocolError
from voice.llm.base import GenerationOptions
from voice.response_events import FunctionCall, ResponseEvent, ResponseFinished, SpeechSegment, StageMark, TextDelta
from voice.turn_taking import TurnClock


class Replies:
    """Starts, adopts, follows and ends the session's responses; builds their wire events."""

    def __init__(self, outbox: Outbox, conversation: Conversation, conversation_id: str) -> None:
        self.outbox = outbox
        self.conversation = conversation
        self.conversation_id = conversation_id
        self.active: ActiveResponse | None = None
        self.speculative: SpeculativeReply | None = None
        self.heard: ActiveResponse | None = None  # the latest response with audio, while the client may play it

    def speculate(self, config: SessionConfig, pipeline: str, item_id: str, voiced_end: int, transcript: str,
                  now: float, user_audio: np.ndarray | None = None) -> None:
        """Answer the turn as it stands now, while the silence window runs: its speculative
        transcript, or its audio (`user_audio`, for a pipeline that answers speech)."""
        self.drop_speculative()
        self.speculative = SpeculativeReply(self.outbox.ids.new("resp"), item_id, voiced_end, transcript, now)
        messages = self.conversation.messages(config.instructions, pending_user=transcript or None)
        tools, required = offered(config.tools, config.tool_choice)
        options = GenerationOptions(max_tokens=config.max_output_tokens or 1024, temperature=config.temperature,
                                    tools=tools, require_tool=required)
        self.outbox.work(StartResponse(self.speculative.id, pipeline, messages, options,
                                       "audio" in config.output_modalities, user_audio,
                                       config.voices.resolve(config.voice)))

    def drop_speculative(self) -> None:
        if self.speculative is not None:
            self.outbox.work(CancelResponse(self.speculative.id))
            self.speculative = None

    def take_speculative(self, item_id: str, *, voiced_end: int | None = None,
                         transcript: str | None = None) -> SpeculativeReply | None:
        """The speculative reply, for adoption, if it answers exactly this turn (else it is dropped)."""
        speculative = self.speculative
        fits = speculative is not None and speculative.item_id == item_id \
            and (voiced_end is None or speculative.voiced_end_ms == voiced_end) \
            and (transcript is None or speculative.transcript == transcript)
        if not fits:
            self.drop_speculative()
            return None
        self.speculative = None
        return speculative

    def start(self, config: SessionConfig, pipeline: str, request: dict[str, Any], clock: TurnClock, now: float,
              adopt: SpeculativeReply | None = None, user_audio: np.ndarray | None = None,
              labels: dict[str, str] | None = None) -> None:
        """A response the client hears: a new one, or the speculative reply `adopt`ed. `request`:
        the overrides of `response.create`, validated; `labels`: the server's own metadata."""
        audio = "audio" in tuple(request.get("output_modalities") or config.output_modalities)
        max_tokens = request["max_output_tokens"] if "max_output_tokens" in request else config.max_output_tokens
        response_id = adopt.id if adopt else self.outbox.ids.new("resp")
        item = Item(id=self.outbox.ids.new("item"), role="assistant",
                    content_type="output_audio" if audio else "output_text", text="", status="in_progress")
        messages = self.conversation.messages(request.get("instructions") or config.instructions)
        tools, required = offered(request.get("tools", config.tools), request.get("tool_choice", config.tool_choice))
        response = ActiveResponse(response_id, item, audio, adopt.started if adopt else now, clock,
                                  metadata=request.get("metadata"), labels=dict(labels or {}),
                                  voice=request.get("voice", config.voice), max_output_tokens=config.max_output_tokens,
                                  encoder=OutputEncoder(FORMATS[request.get("output_format", config.output_format)]))
        self.active = response
        if audio:
            self.heard = response
        self.outbox.emit("response.created", response=self._wire(response, "in_progress", output=[]))
        if not tools:  # a reply that may be a call opens its message at its first words
            self._open_message(response)
        if adopt is not None:  # already running since the silence window: catch up on what it did
            response.labels["speculative"] = "true"
            for event in adopt.events:
                if self.active is None:
                    break
                self._on_event(response, event, now)
            return
        options = GenerationOptions(max_tokens=max_tokens or 1024, temperature=request.get("temperature",
                                                                                      config.temperature),
                                    tools=tools, require_tool=required)
        voice = config.voices.resolve(request.get("voice", config.voice))
        self.outbox.work(StartResponse(response_id, pipeline, messages, options, audio, user_audio, voice))

    def _open_message(self, response: ActiveResponse) -> None:
        if not response.opened:
            emit_message_opened(self.outbox.emit, response, self.conversation.add(response.item))

    def speaking(self, now: float) -> bool:
        """Whether the client is playing a reply now, as far as the server can tell: a response is
        under way, or the audio sent for the last one has not had the time to play out."""
        heard = self.heard
        if self.active is not None:
            return True
        if heard is None or "first_audio_sent" not in heard.marks:
            return False
        return now < heard.marks["first_audio_sent"] + heard.item.audio_ms / 1000

    def interrupt(self, reason: str) -> None:
        """The user interrupted: cancel the response under way, and tell the client to stop playing."""
        heard = self.heard
        if self.active is not None:
            self.cancel(reason)
        if heard is not None:
            self.outbox.emit("output_audio_buffer.cleared", response_id=heard.id)
        self.heard = None

    def stop_playing(self, item: Item) -> None:
        """The client stopped playing `item` (it truncated or cleared it)."""
        if self.heard is not None and self.heard.item is item:
            self.heard = None

    def defer_transcript(self, item_id: str) -> None:
        """The transcription of the turn the active response answers waits for its first audio."""
        assert self.active is not None
        self.active.deferred_transcript = item_id
        self.outbox.work(DeferTranscription(item_id, release=False))

    def progress(self, progress: ResponseProgress, now: float) -> None:
        if self.speculative is not None and self.speculative.id == progress.response_id:
            self.speculative.events.append(progress.event)
        elif self.active is not None and self.active.id == progress.response_id:
            self._on_event(self.active, progress.event, now)

    def cancel(self, reason: str) -> None:
        response = self.active
        assert response is not None
        self.outbox.work(CancelResponse(response.id))
        self._finish(response, "cancelled", reason=reason)

    def close(self) -> None:
        """The session ended: stop whatever still runs."""
        self.drop_speculative()
        if self.active is not None:
            self.cancel("client_cancelled")

    def _release_transcript(self, response: ActiveResponse) -> None:
        """The reply is heard (or over): the transcription of the turn it answers runs now."""
        if response.deferred_transcript is not None:
            self.outbox.work(DeferTranscription(response.deferred_transcript, release=True))
            response.deferred_transcript = None

    def _on_event(self, response: ActiveResponse, event: ResponseEvent, now: float) -> None:
        if isinstance(event, StageMark):
            response.marks[event.stage] = event.at
        elif isinstance(event, TextDelta | SpeechSegment):
            self._open_message(response)
            emit_output(self.outbox.emit, response, event, now)
            self._release_transcript(response)
        elif isinstance(event, FunctionCall):
            item = function_call_item(self.outbox.ids.new("item"), self.outbox.ids.new("call"), event)
            emit_function_call(self.outbox.emit, response, item, self.conversation.add(item))
        elif isinstance(event, ResponseFinished):
            if event.error:
                code = "llm_error" if event.error.startswith("llm") else "tts_error"
                self.outbox.error(ProtocolError(event.error, code=code, type="server_error"))
                self._finish(response, "failed", error={"type": "server_error", "code": code, "message": event.error})
            else:
                self._finish(response, "cancelled" if event.cancelled else "completed")

    def _finish(self, response: ActiveResponse, status: str, *, reason: str | None = None,
                error: dict[str, str] | None = None) -> None:
        self.active = None
        self._release_transcript(response)
        if not response.output:  # nothing said and nothing called: an empty message, as before
            self._open_message(response)
        if response.opened:
            emit_finished(self.outbox.emit, response, status)
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason or "client_cancelled"}
        elif error is not None:
            details = {"type": "failed", "error": error}
        self.outbox.emit("response.done", response=self._wire(response, status,
                                                              output=[item.to_wire() for item in response.output],
                                                              status_details=details))

    def _wire(self, response: ActiveResponse, status: str, *, output: list[dict[str, Any]],
              status_details: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(response, status, output=output, conversation_id=self.conversation_id,
                               status_details=status_details)
