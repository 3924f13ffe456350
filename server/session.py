"""The sans-I/O Realtime session: client events and work results in, server events and work out.

It maps the protocol onto the turn-taking unit (voice/turn_taking.py) and the session's pipeline
(voice/pipeline.py), and builds the wire events. Nothing here awaits, sleeps or touches a socket or
a model: the transport feeds it client messages and the results of the work it asked for, each with
the current monotonic time, and sends what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from server.audio_formats import FORMATS, InputDecoder
from server.audio_rate import AudioAllowance
from server.client_events import (
    AudioAppend,
    ClientEvent,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    MessageSpec,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from server.config import SessionConfig
from server.conversation import Conversation, ConversationLimits, Item, retention, text_item
from server.effects import CancelResponse, Outbox, Output, PrefillPrompt, ResponseProgress
from server.replies import Replies
from server.response_wire import SpeculativeReply
from server.session_update import apply_session_update, session_to_wire, validate_response_request
from server.tools import function_item, parse_function_item
from server.wire import Ids, ProtocolError, decode_audio
from voice.asr.base import Hints
from voice.audio import ASR_RATE
from voice.denoise import Denoiser
from voice.pipeline import PIPELINES, Pipeline
from voice.turn_taking import (
    AudioBegan,
    EndScored,
    Interruption,
    PartialTranscript,
    Paused,
    ScoreEnd,
    SpeculativeTranscript,
    SpeechResumed,
    SpeechSoFar,
    Transcribe,
    TranscriptReady,
    TurnClock,
    TurnEnded,
    TurnEvent,
    TurnOptions,
    TurnStarted,
    TurnTaker,
    TurnTranscribed,
)
from voice.vad import SileroModel

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100
DEFER_TRANSCRIPT_MS = 250  # answers-speech push-to-talk: how long a commit's transcription waits for a reply
FLOODING_S = 2.0  # a session counts as flooding this long after audio of it was refused


class RealtimeSession:
    """One client's Realtime session."""

    def __init__(self, config: SessionConfig, vad_model: SileroModel, *, model_name: str = "voice-cascade",
                 max_buffer_seconds: float = 120.0, max_turn_seconds: float = 60.0,
                 max_audio_ahead_s: float = 5.0, conversation_limits: ConversationLimits | None = None) -> None:
        self.ids = Ids()
        self.id = self.ids.new("sess")
        self.config = config
        self.model_name = model_name
        self.conversation = Conversation(limits=conversation_limits)
        self._event_id: str | None = None  # the client event being handled, for errors it leads to
        self.max_buffer_samples = int(max_buffer_seconds * ASR_RATE)
        self.max_audio_ahead_s = max_audio_ahead_s
        self._allowance: AudioAllowance | None = None  # from the session's first audio
        self._refused_at: float | None = None  # when audio beyond the allowance last came
        self.audio_wait_s = 0.0
        """After an append refused, or accepted while the session floods: how long until the allowance
        has room for another message like it (the transport reads the next one no sooner)."""
        self._flooding = False  # as the turn-taker was last configured
        self._idle_from_ms = 0  # stream time since which neither the user nor the assistant has spoken
        self._input = InputDecoder(FORMATS[config.input_format])
        self._denoiser = Denoiser(config.noise_reduction) if config.noise_reduction else None
        self.turns = TurnTaker(self._turn_options(), vad_model, lambda: self.ids.new("item"),
                               max_turn_s=min(max_turn_seconds, max_buffer_seconds))
        self.outbox = Outbox(self.ids)
        self.replies = Replies(self.outbox, self.conversation, self.id)
        self._clock = TurnClock()  # the latest user turn's
        self._response_wanted: dict[str, Any] | None = None  # response.create waiting for transcripts
        self._last_user_audio: tuple[str, np.ndarray] | None = None  # answers-speech: the latest committed speech
        self._answered_from_speech: set[str] = set()  # user items whose reply did not wait for the transcript

    @property
    def pipeline(self) -> Pipeline:
        return PIPELINES[self.config.pipeline]

    @property
    def _replies(self) -> bool:
        """Whether the session replies at all (a transcription session never does)."""
        return self.config.type == "realtime"

    @property
    def _early_asr(self) -> bool:
        """Work while the user speaks (partial and speculative passes, prefills): it wins latency
        for a live speaker only, so a session sending audio faster than real time goes without."""
        return PIPELINES[self.config.pipeline].early_asr and not self._flooding

    def _turn_options(self) -> TurnOptions:
        config, pipeline = self.config, PIPELINES[self.config.pipeline]
        return TurnOptions(settings=config.turn_detection.settings if config.turn_detection else None,
                           early_asr=self._early_asr, partials=config.transcription is not None,
                           speech_events=pipeline.answers_speech and self._replies)

    # ------------------------------------------------------------------ public API
    def start(self) -> Output:
        self._emit("session.created", session=self._session_wire())
        return self._flush()

    def receive_client(self, raw: str | bytes, now: float) -> Output:
        """Handle one websocket message from the client."""
        self._event_id = None
        self.audio_wait_s = 0.0
        try:
            event = parse_client_event(raw)
            self._event_id = event.event_id
            self._dispatch(event, now)
        except ProtocolError as error:
            self.outbox.error(error)
        self._event_id = None
        return self._flush()

    def receive_transcript(self, result: TranscriptReady, now: float) -> Output:
        self._on_turn_events(self.turns.transcribed(result, now), now)
        return self._flush()

    def receive_end_score(self, result: EndScored, now: float) -> Output:
        self.turns.scored(result)
        return self._flush()

    def receive_response(self, progress: ResponseProgress, now: float) -> Output:
        self.replies.progress(progress, now)
        return self._flush()

    def close(self) -> Output:
        """The connection ended: cancel whatever still runs, and let the conversation go."""
        self.replies.close()
        self.conversation.clear()
        self._last_user_audio = None
        return self._flush()

    @property
    def response_active(self) -> bool:
        return self.replies.active is not None

    def flooding(self, now: float) -> bool:
        """Whether the client sends audio faster than real time (some was refused lately)."""
        return self._refused_at is not None and now - self._refused_at < FLOODING_S

    # ------------------------------------------------------------------ plumbing
    def _flush(self) -> Output:
        return self.outbox.flush()

    def _emit(self, kind: str, **fields: Any) -> None:
        self.outbox.emit(kind, **fields)

    def _session_wire(self) -> dict[str, Any]:
        return session_to_wire(self.config, self.id, self.model_name)

    def _answers_now(self) -> bool:
        """Whether a turn that ends now gets a reply by itself: turn detection creates responses
        and none is running."""
        detection = self.config.turn_detection
        return self._replies and detection is not None and detection.create_response and self.replies.active is None

    def _dispatch(self, event: ClientEvent, now: float) -> None:
        handler = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_clear,
        }[event.type]
        handler(event, now)  # type: ignore[operator]

    def _on_session_update(self, event: SessionUpdate, now: float) -> None:
        changes_type = "type" in event.session.model_fields_set and event.session.type != self.config.type
        if changes_type and self.replies.active is not None:
            raise ProtocolError(f"a response is in progress: cancel it before the session becomes a "
                                f"{event.session.type} session", code="conversation_already_has_active_response",
                                param="session.type", event_id=event.event_id)
        old = self.config
        self.config = apply_session_update(self.config, event.session, event.event_id)
        if self.config.turn_detection != old.turn_detection or not self._replies:
            self.replies.drop_speculative()
        if self.config.input_format != old.input_format:
            self._input = InputDecoder(FORMATS[self.config.input_format])
        if self.config.truncation != old.truncation:
            self.conversation.retention = retention(self.config.truncation)
        if self.config.noise_reduction != old.noise_reduction:
            self._denoiser = Denoiser(self.config.noise_reduction) if self.config.noise_reduction else None
        self.turns.configure(self._turn_options())
        self._emit("session.updated", session=self._session_wire())

    # ------------------------------------------------------------------ input audio and turns
    def _on_append(self, event: AudioAppend, now: float) -> None:
        data = decode_audio(event.audio, event.event_id, self._input.format.sample_bytes)
        if self.turns.buffered_samples + self._input.asr_samples(len(data)) > self.max_buffer_samples:
            raise ProtocolError("the input audio buffer is full: commit or clear it", code="input_audio_buffer_full",
                                event_id=event.event_id)
        seconds = self._input.format.seconds(len(data))
        self._within_allowance(event, seconds, now)
        if self.flooding(now):  # the next message like this one fits once the allowance has refilled that much
            self.audio_wait_s = max(0.0, seconds - self._allowance.balance(now))  # type: ignore[union-attr]
        if self.flooding(now) != self._flooding:
            self._flooding = not self._flooding
            self.turns.configure(self._turn_options())
        samples = self._input.process(data)
        if self._denoiser is not None:
            samples = self._denoiser.process(samples)
        self._on_turn_events(self.turns.feed(samples, now, assistant_speaking=self.replies.speaking(now)), now)
        self._check_idle(now)

    def _check_idle(self, now: float) -> None:
        """server_vad's `idle_timeout_ms`: after that long of input audio with neither the user nor the
        assistant speaking, the silence is committed as a user item and answered (a prompt to go on)."""
        detection = self.config.turn_detection
        timeout = detection.idle_timeout_ms if detection is not None else None
        position = self.turns.position_ms
        if timeout is None or not self._replies or self.turns.turn is not None or self.turns.transcribing \
                or self.replies.active is not None or self.replies.speaking(now):
            self._idle_from_ms = position
            return
        if position - self._idle_from_ms < timeout:
            return
        item = Item(id=self.ids.new("item"), role="user", content_type="input_audio", text="",
                    silence_ms=position - self._idle_from_ms)
        start, self._idle_from_ms = self._idle_from_ms, position
        full = self.conversation.no_room(item)
        if full is not None:
            self.outbox.error(ProtocolError(full, code="conversation_full", event_id=self._event_id))
            return
        self._emit("input_audio_buffer.timeout_triggered", audio_start_ms=start, audio_end_ms=position,
                   item_id=item.id)
        previous = self.conversation.add(item)
        self._emit("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        self._emit("conversation.item.added", previous_item_id=previous, item=item.to_wire())
        self._emit("conversation.item.done", item=item.to_wire())
        self._start_response({}, TurnClock(), now)

    def _within_allowance(self, event: ClientEvent, seconds: float, now: float) -> None:
        """Refuse audio that runs more than `max_audio_ahead_s` ahead of real time (its model work
        would crowd out the other sessions'): the message is dropped, the session goes on."""
        if self._allowance is None:
            self._allowance = AudioAllowance(self.max_audio_ahead_s, now)
        if not self._allowance.take(seconds, now):
            self._refused_at = now
            self.audio_wait_s = seconds - self._allowance.balance(now)
            raise ProtocolError(f"input audio is coming faster than real time, more than {self.max_audio_ahead_s:g} s "
                                f"ahead: this message's {seconds * 1000:.0f} ms of audio were dropped",
                                code="input_audio_rate_exceeded", event_id=event.event_id)

    def _on_commit(self, event: ClientEvent, now: float) -> None:
        if self.turns.buffered_samples < MIN_COMMIT_MS * ASR_RATE // 1000:
            raise ProtocolError(f"the input audio buffer holds less than {MIN_COMMIT_MS} ms of audio",
                                code="input_audio_buffer_commit_empty", event_id=event.event_id)
        self.replies.drop_speculative()
        self._on_turn_events(self.turns.commit(now), now)

    def _on_clear(self, event: ClientEvent, now: float) -> None:
        self.turns.clear()
        self.replies.drop_speculative()
        self._emit("input_audio_buffer.cleared")

    def _on_turn_events(self, events: list[TurnEvent], now: float) -> None:
        for event in events:
            if isinstance(event, Transcribe):
                self.outbox.work(self._scheduled(event))
            elif isinstance(event, ScoreEnd):
                self.outbox.work(event)
            elif isinstance(event, TurnStarted):
                self._on_speech_started(event)
            elif isinstance(event, SpeechResumed):
                speculative = self.replies.speculative
                if speculative is not None and speculative.item_id == event.item_id:
                    self.replies.drop_speculative()  # the user went on: the speculation was wrong
            elif isinstance(event, AudioBegan):
                self._prefill_history()
            elif isinstance(event, SpeechSoFar):
                if self._answers_now() or self.config.turn_detection is None:
                    self._prefill(event.audio)
            elif isinstance(event, Paused):
                if self._answers_now():  # the reply needs no transcript: it answers the audio
                    self.replies.speculate(self.config, self.pipeline.name, event.item_id, event.voiced_end_ms, "",
                                           now, user_audio=event.audio)
            elif isinstance(event, SpeculativeTranscript):
                if self._answers_now() and not self.pipeline.answers_speech:
                    self.replies.speculate(self.config, self.pipeline.name, event.item_id, event.voiced_end_ms,
                                           event.text, now)
            elif isinstance(event, PartialTranscript):
                self._on_partial(event)
            elif isinstance(event, Interruption):
                self._on_interruption()
            elif isinstance(event, TurnEnded):
                self._on_turn_ended(event, now)
            elif isinstance(event, TurnTranscribed):
                self._on_transcribed(event, now)

    def _defers_transcripts(self) -> bool:
        """Push-to-talk on a pipeline that answers speech: a turn's transcription waits for the
        reply's first audio (nothing waits for that transcript there, and it would share the CPU
        with the reply)."""
        return self._replies and self.pipeline.answers_speech and self.pipeline.early_asr \
            and self.config.turn_detection is None

    def _scheduled(self, job: Transcribe) -> Transcribe:
        transcription = self.config.transcription or {}
        if transcription.get("language") or transcription.get("prompt"):
            job = replace(job, hints=Hints(transcription.get("language"), transcription.get("prompt")))
        return replace(job, defer_ms=DEFER_TRANSCRIPT_MS) if job.final and self._defers_transcripts() else job

    def _on_speech_started(self, event: TurnStarted) -> None:
        self.replies.drop_speculative()
        self._clock = TurnClock()
        self._emit("input_audio_buffer.speech_started", audio_start_ms=event.audio_start_ms, item_id=event.item_id)
        self._prefill_speech_history()

    def _on_interruption(self) -> None:
        """The user's speech over the reply is a real interruption (not a backchannel or a noise):
        the reply stops, and the client is told to stop playing it."""
        detection = self.config.turn_detection
        if detection is None or not detection.interrupt_response:
            return
        self.replies.interrupt("turn_detected")

    def _prefill_speech_history(self) -> None:
        """A pipeline that answers speech evaluates the history when the user starts speaking."""
        if self.pipeline.answers_speech and self._answers_now():
            self._prefill_history()

    def _prefill_history(self) -> None:
        """While the user speaks, the pipeline's model can evaluate the conversation so far (the
        previous turns' text), so that its reply evaluates only the new turn."""
        if self._replies and self._early_asr and self.replies.active is None:
            self.outbox.work(PrefillPrompt(self.conversation.messages(self.config.instructions), self.pipeline.name))

    def _prefill(self, audio: np.ndarray | None = None, words: str | None = None) -> None:
        if self._replies and self.replies.active is None:
            messages = self.conversation.messages(self.config.instructions, pending_user=words)
            self.outbox.work(PrefillPrompt(messages, self.pipeline.name, audio))

    def _on_partial(self, event: PartialTranscript) -> None:
        self._emit("conversation.item.input_audio_transcription.delta", item_id=event.item_id, content_index=0,
                   delta=event.delta)
        if not self.pipeline.answers_speech and self._answers_now():
            self._prefill(words=event.words.rstrip(".,;:!?"))  # the final transcript may go on after the word
        if event.first:  # again, once, should it have found the model busy at the speech start
            self._prefill_speech_history()

    def _on_turn_ended(self, event: TurnEnded, now: float) -> None:
        self._clock = event.clock
        if event.clock.speech_end_audio_ms is not None:
            self._emit("input_audio_buffer.speech_stopped", audio_end_ms=event.clock.speech_end_audio_ms,
                       item_id=event.item_id)
        item = Item(id=event.item_id, role="user", content_type="input_audio", status="in_progress")
        full = self.conversation.no_room(item)
        if full is not None:  # the turn is dropped: its transcript, when it comes, finds no item
            self.outbox.error(ProtocolError(full, code="conversation_full", event_id=self._event_id))
            self.turns.forget(item.id)
            self.replies.drop_speculative()
            return
        previous = self.conversation.add(item)
        self._emit("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        self._emit("conversation.item.added", previous_item_id=previous, item=item.to_wire())
        self._last_user_audio = (item.id, event.audio) if self.pipeline.answers_speech else None
        if self._last_user_audio is None or event.clock.speech_end_audio_ms is None:
            return  # committed by the client, who asks for the reply
        if self._answers_now():
            adopt = self.replies.take_speculative(item.id, voiced_end=event.clock.speech_end_audio_ms)
            self._start_speech_response({}, item.id, event.audio, now, adopt=adopt)
        else:
            self.replies.drop_speculative()

    def _on_transcribed(self, event: TurnTranscribed, now: float) -> None:
        item = self.conversation.get(event.item_id)
        if item is None:
            return  # deleted meanwhile
        item.status = "completed"
        if event.error:
            item.text = ""
            self.outbox.error(ProtocolError(event.error, code="asr_error", type="server_error"))
            self._emit("conversation.item.input_audio_transcription.failed", item_id=item.id, content_index=0,
                       error={"type": "server_error", "code": "transcription_failed", "message": event.error})
        else:
            item.text = event.text
            if self.config.transcription is not None:
                if event.rest:
                    self._emit("conversation.item.input_audio_transcription.delta", item_id=item.id,
                               content_index=0, delta=event.rest)
                self._emit("conversation.item.input_audio_transcription.completed", item_id=item.id,
                           content_index=0, transcript=event.text, usage={"type": "duration", "seconds": 0})
        self._emit("conversation.item.done", item=item.to_wire())
        answered = event.item_id in self._answered_from_speech  # its reply is already under way or done
        self._answered_from_speech.discard(event.item_id)
        if self.turns.transcribing:
            return
        clock = event.clock
        if answered or event.backchannel:  # (a backchannel over the reply is heard, not answered)
            self.replies.drop_speculative()
        elif self._response_wanted is not None:
            request, self._response_wanted = self._response_wanted, None
            self.replies.drop_speculative()
            self._start_response(request, clock or TurnClock(), now)
        elif self._answers_now() and item.text and clock is not None and clock.speech_end_audio_ms is not None \
                and self.turns.turn is None:
            # (If the user already speaks again, the next turn answers both.)
            self._start_response({}, clock, now, adopt=self.replies.take_speculative(item.id, transcript=item.text))
        else:
            self.replies.drop_speculative()

    # ------------------------------------------------------------------ conversation items
    def _on_item_create(self, event: ItemCreate, now: float) -> None:
        previous, spec = event.previous_item_id, event.item
        if previous is not None and previous != "root" and self.conversation.get(previous) is None:
            raise ProtocolError(f"no item {previous!r} in the conversation", code="item_not_found",
                                param="previous_item_id", event_id=event.event_id)
        if isinstance(spec, MessageSpec):
            text = " ".join(part.text for part in spec.content)
            item_id, make = spec.id, lambda: text_item(item_id, spec.role, text)
        else:
            function = parse_function_item(spec, event.event_id, self.conversation.has_call)
            item_id, make = function.item_id, lambda: function_item(item_id, function)
        item_id = item_id or self.ids.new("item")
        if self.conversation.get(item_id) is not None:
            raise ProtocolError(f"item id {item_id!r} already exists", param="item.id", event_id=event.event_id)
        item = make()
        full = self.conversation.no_room(item)
        if full is not None:
            raise ProtocolError(full, code="conversation_full", param="item", event_id=event.event_id)
        before = self.conversation.add(item, previous)
        self._emit("conversation.item.added", previous_item_id=before, item=item.to_wire())
        self._emit("conversation.item.done", previous_item_id=before, item=item.to_wire())

    def _item(self, event: ItemDelete | ItemRetrieve | ItemTruncate) -> Item:
        item_id = event.item_id
        item = self.conversation.get(item_id)
        if item is None:
            raise ProtocolError(f"no item {item_id!r} in the conversation", code="item_not_found",
                                param="item_id", event_id=event.event_id)
        return item

    def _on_item_delete(self, event: ItemDelete, now: float) -> None:
        item = self._item(event)
        if self.replies.active is not None and self.replies.active.item is item:
            self.replies.cancel("client_cancelled")
        self.conversation.delete(item.id)
        self.turns.forget(item.id)
        self._emit("conversation.item.deleted", item_id=item.id)

    def _on_item_retrieve(self, event: ItemRetrieve, now: float) -> None:
        self._emit("conversation.item.retrieved", item=self._item(event).to_wire())

    def _on_truncate(self, event: ItemTruncate, now: float) -> None:
        audio_end_ms, content_index = event.audio_end_ms, event.content_index
        item = self._item(event)
        if item.role != "assistant" or item.content_type != "output_audio" or content_index != 0:
            raise ProtocolError("only an assistant audio item can be truncated", param="item_id",
                                event_id=event.event_id)
        if audio_end_ms > item.audio_ms + 1:
            raise ProtocolError(f"audio_end_ms {audio_end_ms} is outside the item's {item.audio_ms:.0f} ms of audio",
                                param="audio_end_ms", event_id=event.event_id)
        if self.replies.active is not None and self.replies.active.item is item:
            self.replies.cancel("client_cancelled")
        item.truncate(audio_end_ms)
        self.replies.stop_playing(item)
        self._emit("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=audio_end_ms)

    # ------------------------------------------------------------------ responses
    def _on_response_create(self, event: ResponseCreate, now: float) -> None:
        if not self._replies:
            raise ProtocolError("a transcription session never replies: response.create needs a realtime session",
                                code="invalid_session_type", event_id=event.event_id)
        if self.replies.active is not None:
            raise ProtocolError("a response is already in progress: cancel it first",
                                code="conversation_already_has_active_response", event_id=event.event_id)
        request = validate_response_request(event.response, event.event_id, self.config)
        full = self.conversation.no_room()
        if full is not None:
            raise ProtocolError(full, code="conversation_full", event_id=event.event_id)
        self.replies.drop_speculative()
        last = self.conversation.items[-1] if self.conversation.items else None
        if self.pipeline.answers_speech and last is not None and self._last_user_audio is not None \
                and self._last_user_audio[0] == last.id:
            self._start_speech_response(request, last.id, self._last_user_audio[1], now)
            return
        if self.turns.transcribing:
            self._response_wanted = request
            return
        clock = self._clock if last is not None and last.role == "user" and last.content_type == "input_audio" \
            else TurnClock()
        self._start_response(request, clock, now)

    def _start_speech_response(self, request: dict[str, Any], item_id: str, audio: np.ndarray, now: float,
                               adopt: SpeculativeReply | None = None) -> None:
        """Answer the user's speech itself, without waiting for its transcript (or adopt the reply
        already started on it in the silence window)."""
        self._answered_from_speech.add(item_id)
        self._last_user_audio = None
        self._start_response(request, self._clock, now, adopt=adopt, user_audio=audio,
                             labels={"pipeline": self.pipeline.name})
        if self.replies.active is not None and item_id in self.turns.ended and self._defers_transcripts():
            self.replies.defer_transcript(item_id)

    def _start_response(self, request: dict[str, Any], clock: TurnClock, now: float,
                        adopt: SpeculativeReply | None = None, user_audio: np.ndarray | None = None,
                        labels: dict[str, str] | None = None) -> None:
        full = self.conversation.no_room()
        if full is not None:  # a reply the turn asked for by itself: there is no room for its item
            self.outbox.error(ProtocolError(full, code="conversation_full", event_id=self._event_id))
            if adopt is not None:
                self.outbox.work(CancelResponse(adopt.id))
            return
        self.replies.start(self.config, self.pipeline.name, request, clock, now, adopt, user_audio, labels)

    def _on_response_cancel(self, event: ResponseCancel, now: float) -> None:
        wanted = event.response_id
        active = self.replies.active
        if active is None or (wanted is not None and wanted != active.id):
            raise ProtocolError("there is no active response to cancel", code="response_cancel_not_active",
                                event_id=event.event_id)
        self.replies.cancel("client_cancelled")

    def _on_output_clear(self, event: ClientEvent, now: float) -> None:
        if self.replies.active is not None:
            self.replies.cancel("client_cancelled")
        self.replies.heard = None
        self._emit("output_audio_buffer.cleared", response_id=None)
