"""The sans-I/O Realtime session: client events and pipeline results in, server events and effects out.

Nothing here awaits, sleeps or touches a socket or a model. The transport feeds it client
messages and the results of the effects it asked for (transcriptions, response jobs), each with
the current monotonic time, and sends what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.config import SessionConfig
from server.conversation import Conversation, Item, text_item
from server.events import ClientEvent, Ids, ProtocolError, b64, decode_audio, error_event, parse_client_event, require
from server.session_update import apply_session_update, parse_max_tokens, parse_modalities, session_to_wire
from voice.asr.streaming import StablePrefix
from voice.audio import ASR_RATE, WIRE_RATE, StreamResampler, pcm16_to_float
from voice.events import ResponseEvent, ResponseFinished, SpeechSegment, StageMark, TextDelta
from voice.llm.base import ChatMessage, GenerationOptions
from voice.native.streaming import EVALUATE_EVERY_MS
from voice.text import reads_as_finished
from voice.vad import SileroModel, SpeechStarted, SpeechStopped, VadSegmenter

log = logging.getLogger(__name__)

_AUDIO_DELTA_BYTES = WIRE_RATE * 2 // 5  # 200 ms of PCM16 per output_audio.delta
_IDLE_KEEP_MS = 2000  # audio kept before a speech start, for the prefix padding
_PARTIAL_MIN_PROBABILITY = 0.8  # a partial pass starts only on a frame Silero is sure is speech
_TAIL_MS = 120  # audio after the last voiced frame given to the transcription of a turn
_SPECULATE_AFTER_MS = 64  # silence after which the turn is transcribed speculatively (2 VAD frames)
# After the first silent frame, that pass is asked for already, to be run only if the models are
# idle: a pause between words also gives one silent frame, and a pass for it is wasted work. The
# native pipeline starts its reply on the audio then too.
_EARLY_SPECULATE_AFTER_MS = 32
_MIN_COMMIT_MS = 100
_EVALUATE_MAX_S = 30  # native: speech evaluated while the user speaks, at most (the encoder's window)
_HOLD_TRANSCRIPT_MS = 250  # native push-to-talk: how long a commit's transcription waits for a reply


# Effects: what the session asks its runtime to do.
@dataclass(frozen=True)
class Transcribe:
    """Transcribe a turn: a partial (while speaking), speculative (in the silence window, in case
    the turn ends there) or final pass."""

    item_id: str
    audio: np.ndarray = field(repr=False)
    final: bool
    speculative: bool = False
    voiced_end_ms: int | None = None
    early: bool = False
    """A speculative pass asked for after one silent frame: run it only if no other model work is
    under way, else decline it (an error result); the session then asks again after two."""
    hold_ms: int | None = None
    """Native push-to-talk: wait this long before running it, for the reply to start (nothing
    waits for this transcript there, and the reply would share the CPU with it); the session then
    says how long to wait on with `TranscriptionHold`."""


@dataclass(frozen=True)
class StartResponse:
    response_id: str
    messages: list[ChatMessage]
    options: GenerationOptions
    audio: bool
    user_audio: np.ndarray | None = None
    """Native pipeline: the user's speech (16 kHz), answered without a transcript."""


@dataclass(frozen=True)
class CancelResponse:
    response_id: str


@dataclass(frozen=True)
class TranscriptionHold:
    """About a held final transcription (`Transcribe.hold_ms`): `release` False, the reply to the
    turn has started, so wait on until it has its first audio (the runtime caps the wait);
    `release` True, run it now."""

    item_id: str
    release: bool


@dataclass(frozen=True)
class PrefillPrompt:
    """Evaluate the prompt of a reply to the words heard so far, while the user is still speaking,
    so that the reply evaluates only the words that come after (an optimisation: may be skipped)."""

    messages: list[ChatMessage]
    pipeline: str = "cascade"
    """The model whose prompt it is: `cascade` (the LLM) or `native` (the audio model: the
    conversation before the user's audio)."""
    audio: np.ndarray | None = field(default=None, repr=False)
    """Native: the user's speech so far (16 kHz, from the start of the turn's audio)."""


Effect = Transcribe | StartResponse | CancelResponse | PrefillPrompt | TranscriptionHold


# Results the runtime feeds back.
@dataclass(frozen=True)
class TranscriptReady:
    item_id: str
    text: str
    final: bool
    error: str | None = None
    speculative: bool = False
    voiced_end_ms: int | None = None
    early: bool = False  # the answer to an early speculative pass (Transcribe.early)


@dataclass(frozen=True)
class ResponseProgress:
    response_id: str
    event: ResponseEvent


@dataclass
class Output:
    events: list[dict[str, Any]] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)


@dataclass
class TurnClock:
    """Monotonic times of one user turn's stages, for the response's timing metadata."""

    speech_end: float | None = None  # when the last voiced audio arrived
    speech_end_audio_ms: int | None = None
    end_of_turn: float | None = None  # when the VAD closed the turn (or the client committed)
    transcript: float | None = None


@dataclass
class HeldResponse:
    """A response started speculatively in the silence window: it runs, but the client hears of
    it only if the turn ends exactly where the speculation assumed (then it is adopted)."""

    id: str
    item_id: str  # the user's turn it answers
    voiced_end_ms: int
    transcript: str
    started: float  # when its work began (it becomes the response's start when adopted)
    events: list[ResponseEvent] = field(default_factory=list)


@dataclass
class ActiveResponse:
    id: str
    item: Item
    audio: bool
    started: float
    turn: TurnClock
    marks: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    held_transcript: str | None = None  # the user item whose transcription waits for this reply's audio


class RealtimeSession:
    """One client's Realtime session."""

    def __init__(self, config: SessionConfig, vad_model: SileroModel, *, model_name: str = "voice-cascade",
                 max_buffer_seconds: float = 120.0, max_turn_seconds: float = 60.0) -> None:
        self.ids = Ids()
        self.id = self.ids.new("sess")
        self.config = config
        self.model_name = model_name
        self.conversation = Conversation()
        self.max_buffer_samples = int(max_buffer_seconds * ASR_RATE)
        self.max_turn_samples = int(min(max_turn_seconds, max_buffer_seconds) * ASR_RATE)
        self._vad_model = vad_model
        self._resampler = StreamResampler(WIRE_RATE, ASR_RATE)
        self._buffer = np.zeros(0, dtype=np.float32)  # 16 kHz audio not yet committed
        self._buffer_start = 0  # stream sample index of _buffer[0]
        self._stream_samples = 0
        self._vad: VadSegmenter | None = None
        self._reset_vad()
        self._speech_item: str | None = None
        self._speech_start = 0  # stream sample index
        self._partials: dict[str, StablePrefix] = {}  # item id -> committed partial words
        self._partial_in_flight = False
        self._speculations: dict[str, tuple[int, str | None]] = {}  # item -> (voiced end ms, text once back)
        self._early_declined: tuple[str, int] | None = None  # (item, voiced end) the runtime declined
        # item -> (voiced end, turn audio): the speculative pass under way becomes the final one
        self._awaiting_speculation: dict[str, tuple[int, np.ndarray]] = {}
        self._partial_samples = 0
        self._evaluated_samples = 0  # native: speech of this turn given to the model while speaking
        self._pending_transcripts: dict[str, TurnClock] = {}
        self._turn = TurnClock()
        self._last_voiced_ms: int | None = None
        self._last_voiced_at: float | None = None  # when the audio of the last voiced frame arrived
        self._response: ActiveResponse | None = None
        self._held: HeldResponse | None = None
        self._response_wanted: dict[str, Any] | None = None  # response.create waiting for transcripts
        self._last_user_audio: tuple[str, np.ndarray] | None = None  # native: the latest committed speech
        self._answered_natively: set[str] = set()  # user items whose reply did not wait for the transcript
        self._out = Output()

    # ------------------------------------------------------------------ public API
    def start(self) -> Output:
        self._emit("session.created", session=self._session_wire())
        return self._flush()

    def receive_client(self, raw: str | bytes, now: float) -> Output:
        """Handle one websocket message from the client."""
        try:
            event = parse_client_event(raw)
            self._dispatch(event, now)
        except ProtocolError as error:
            self._out.events.append(error_event(self.ids, error))
        return self._flush()

    def receive_transcript(self, result: TranscriptReady, now: float) -> Output:
        if result.speculative:
            self._on_speculative_transcript(result, now)
        elif result.final:
            self._on_final_transcript(result, now)
        else:
            self._on_partial_transcript(result)
        return self._flush()

    def receive_response(self, progress: ResponseProgress, now: float) -> Output:
        response = self._response
        if self._held is not None and self._held.id == progress.response_id:
            self._held.events.append(progress.event)
        elif response is not None and response.id == progress.response_id:
            self._on_response_event(response, progress.event, now)
        return self._flush()

    def close(self) -> Output:
        """The connection ended: cancel whatever still runs."""
        self._drop_held()
        if self._response is not None:
            self._cancel_response("client_cancelled")
        return self._flush()

    @property
    def response_active(self) -> bool:
        return self._response is not None

    # ------------------------------------------------------------------ plumbing
    def _flush(self) -> Output:
        out, self._out = self._out, Output()
        return out

    def _emit(self, kind: str, **fields: Any) -> None:
        self._out.events.append({"type": kind, "event_id": self.ids.new("event"), **fields})

    def _session_wire(self) -> dict[str, Any]:
        return session_to_wire(self.config, self.id, self.model_name)

    def _answers_now(self) -> bool:
        """Whether a turn that ends now gets a reply by itself: turn detection creates responses
        and none is running."""
        detection = self.config.turn_detection
        return detection is not None and detection.create_response and self._response is None

    def _reset_vad(self) -> None:
        detection = self.config.turn_detection
        self._vad = VadSegmenter(detection.vad, self._vad_model) if detection else None

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
        handler(event, now)

    # ------------------------------------------------------------------ session
    def _on_session_update(self, event: ClientEvent, now: float) -> None:
        session = require(event, "session", dict)
        old_detection = self.config.turn_detection
        self.config = apply_session_update(self.config, session, event.event_id)
        if self.config.turn_detection != old_detection:
            self._drop_held()
            self._reset_vad()
            if self._speech_item is not None:
                self._partials.pop(self._speech_item, None)
                self._speech_item = None  # an open turn ends without a commit
        self._emit("session.updated", session=self._session_wire())

    # ------------------------------------------------------------------ input audio
    def _on_append(self, event: ClientEvent, now: float) -> None:
        pcm = decode_audio(event)
        if self._buffer.size + len(pcm) // 3 > self.max_buffer_samples:
            raise ProtocolError("the input audio buffer is full: commit or clear it", code="input_audio_buffer_full",
                                event_id=event.event_id)
        samples = self._resampler.process(pcm16_to_float(pcm))
        turn_begins = self._buffer.size == 0 and samples.size > 0
        self._buffer = np.concatenate([self._buffer, samples])
        self._stream_samples += samples.size
        if self._vad is None:  # push-to-talk: the client commits the turn
            if turn_begins:
                self._evaluated_samples = 0
                self._prefill_history()
            self._maybe_evaluate_speech(self._buffer_start)
            return
        for vad_event in self._vad.process(samples):
            if isinstance(vad_event, SpeechStarted):
                self._on_speech_started(vad_event, now)
            else:
                self._on_speech_stopped(vad_event, now)
        voiced_ms = self._vad.last_voiced_end_ms
        if voiced_ms != self._last_voiced_ms:
            self._last_voiced_ms = voiced_ms
            self._last_voiced_at = now
            if self._held is not None and self._held.item_id == self._speech_item:
                self._drop_held()  # the user went on: the speculation was wrong
        if self._speech_item is None:
            keep_from = self._stream_samples - _IDLE_KEEP_MS * ASR_RATE // 1000
            self._drop_before(keep_from)
        elif self._stream_samples - self._speech_start >= self.max_turn_samples:
            # Endless "speech" (music, a stuck microphone): close the turn rather than buffer forever.
            stopped = self._vad.end_turn()
            if stopped is not None:
                self._on_speech_stopped(stopped, now)
        else:
            self._maybe_speculate(now)
            self._maybe_partial()
            if self._speaking() and self._answers_now():
                self._maybe_evaluate_speech(self._speech_start)

    def _drop_before(self, sample: int) -> None:
        cut = sample - self._buffer_start
        if cut > 0:
            self._buffer = self._buffer[cut:]
            self._buffer_start += cut

    def _audio_between(self, start: int, end: int) -> np.ndarray:
        lo = max(0, start - self._buffer_start)
        hi = max(lo, min(self._buffer.size, end - self._buffer_start))
        return self._buffer[lo:hi].copy()

    def _on_speech_started(self, event: SpeechStarted, now: float) -> None:
        self._drop_held()
        self._speech_item = self.ids.new("item")
        self._speech_start = max(self._buffer_start, event.audio_start_ms * ASR_RATE // 1000)
        self._partials[self._speech_item] = StablePrefix()
        self._partial_samples = 0
        self._evaluated_samples = 0
        self._turn = TurnClock()
        self._emit("input_audio_buffer.speech_started", audio_start_ms=event.audio_start_ms,
                   item_id=self._speech_item)
        detection = self.config.turn_detection
        if self._response is not None and detection is not None and detection.interrupt_response:
            self._cancel_response("turn_detected")
        self._prefill_native()

    def _prefill_native(self) -> None:
        """With turn detection, the native model's history is evaluated at the speech start."""
        if self.config.pipeline == "native" and self._answers_now():
            self._prefill_history()

    def _prefill_history(self) -> None:
        """While the user speaks, the session's model can evaluate the conversation so far (the
        previous turns' text), so that its reply evaluates only the new turn."""
        if self.config.streaming_asr and self._response is None:
            messages = self.conversation.messages(self.config.instructions)
            self._out.effects.append(PrefillPrompt(messages, self.config.pipeline))

    def _maybe_partial(self) -> None:
        """Ask for a partial transcript every half second of new speech, one at a time."""
        if not self.config.streaming_asr or self.config.transcription is None or self._partial_in_flight \
                or self._speech_item is None:
            return
        speech = self._stream_samples - self._speech_start
        if speech - self._partial_samples < ASR_RATE // 2:
            return
        if not self._speaking():
            return  # keep the ASR free for the speculative pass that may be coming
        self._partial_in_flight = True
        self._partial_samples = speech
        audio = self._audio_between(self._speech_start, self._stream_samples)
        self._out.effects.append(Transcribe(self._speech_item, audio, final=False))

    def _speaking(self) -> bool:
        """Whether the user is surely still speaking: not paused, on a frame Silero is sure of (a
        pause, or speech that may be ending, leaves the models to the turn's speculative work)."""
        if self._vad is None:
            return True
        voiced_end = self._vad.last_voiced_end_ms
        if voiced_end is not None and self._vad.position_ms > voiced_end:
            return False
        return self._vad.last_probability >= _PARTIAL_MIN_PROBABILITY

    def _maybe_evaluate_speech(self, turn_start: int) -> None:
        """Native: give the model the speech so far every EVALUATE_EVERY_MS, so that it evaluates
        the audio while the user speaks and the reply evaluates only the last of it."""
        if self.config.pipeline != "native" or not self.config.streaming_asr or self._response is not None:
            return
        speech = self._stream_samples - turn_start
        if speech - self._evaluated_samples < EVALUATE_EVERY_MS * ASR_RATE // 1000 \
                or speech > _EVALUATE_MAX_S * ASR_RATE:
            return  # (a longer turn, or an open microphone never committed: the reply encodes it)
        self._evaluated_samples = speech
        messages = self.conversation.messages(self.config.instructions)
        audio = self._audio_between(turn_start, self._stream_samples)
        self._out.effects.append(PrefillPrompt(messages, "native", audio=audio))

    def _turn_audio(self, voiced_end_ms: int) -> np.ndarray:
        return self._audio_between(self._speech_start, (voiced_end_ms + _TAIL_MS) * ASR_RATE // 1000)

    def _maybe_speculate(self, now: float) -> None:
        """Once the user has been silent briefly, transcribe the turn as if it had ended, so that
        the transcript is ready (or nearly) when the silence window does close the turn."""
        assert self._vad is not None and self._speech_item is not None
        if not self.config.streaming_asr:
            return
        item, voiced_end = self._speech_item, self._vad.last_voiced_end_ms
        silence = None if voiced_end is None else self._vad.position_ms - voiced_end
        if silence is None or silence < _EARLY_SPECULATE_AFTER_MS:
            return
        current = self._speculations.get(item)
        early = silence < _SPECULATE_AFTER_MS
        transcribe = (current is None or current[0] != voiced_end) \
            and not (early and self._early_declined == (item, voiced_end))
        held = self._held
        answer = self.config.pipeline == "native" and self._answers_now() \
            and (held is None or held.item_id != item or held.voiced_end_ms != voiced_end)
        if not (transcribe or answer):
            return
        audio = self._turn_audio(voiced_end)
        if transcribe:
            self._speculations[item] = (voiced_end, None)
            self._out.effects.append(Transcribe(item, audio, final=False, speculative=True, voiced_end_ms=voiced_end,
                                                early=early))
        if answer:
            # It needs no transcript: answer the audio from the first silent frame. (The ASR pass
            # above goes first, so that the runtime does not decline it for this reply's work.)
            self._start_held(item, voiced_end, "", now, user_audio=audio)

    def _on_speech_stopped(self, event: SpeechStopped, now: float) -> None:
        item_id = self._speech_item
        if item_id is None:
            return
        self._speech_item = None
        self._emit("input_audio_buffer.speech_stopped", audio_end_ms=event.audio_end_ms, item_id=item_id)
        self._turn.speech_end = self._last_voiced_at
        self._turn.end_of_turn = now
        self._turn.speech_end_audio_ms = event.audio_end_ms
        audio = self._turn_audio(event.audio_end_ms)
        self._drop_before((event.audio_end_ms + _TAIL_MS) * ASR_RATE // 1000)
        speculation = self._speculations.pop(item_id, None)
        if self.config.pipeline == "native":
            # The ASR runs beside the reply (transcript and history); a speculative pass over
            # exactly this turn already did that work.
            heard = speculation is not None and speculation[0] == event.audio_end_ms
            self._commit(item_id, audio, transcribe=not heard)
            answer = self._answers_now()
            held = self._held
            fits = held is not None and held.item_id == item_id and held.voiced_end_ms == event.audio_end_ms
            if answer and fits:
                self._held = None  # adopted below
            else:
                self._drop_held()
            if answer:
                self._start_native_response({}, item_id, audio, now, adopt=held if fits else None)
            if heard:
                self._deliver_speculation(item_id, speculation, audio, now)
            return
        if speculation is None or speculation[0] != event.audio_end_ms:
            self._commit(item_id, audio)
            return
        self._commit(item_id, audio, transcribe=False)  # the speculative pass heard exactly this turn
        self._deliver_speculation(item_id, speculation, audio, now)

    def _deliver_speculation(self, item_id: str, speculation: tuple[int, str | None], audio: np.ndarray,
                             now: float) -> None:
        """The speculative transcript becomes the final one, now or when its pass finishes."""
        if speculation[1] is not None:
            self._on_final_transcript(TranscriptReady(item_id, speculation[1], final=True), now)
        else:
            self._awaiting_speculation[item_id] = (speculation[0], audio)

    def _on_speculative_transcript(self, result: TranscriptReady, now: float) -> None:
        if result.early and result.error:  # declined: ask again once the silence is two frames long
            self._early_declined = (result.item_id, result.voiced_end_ms)
        awaited = self._awaiting_speculation.get(result.item_id)
        if awaited is not None and awaited[0] == result.voiced_end_ms:
            del self._awaiting_speculation[result.item_id]
            if result.error:  # fall back to a regular final pass
                self._out.effects.append(Transcribe(result.item_id, awaited[1], final=True))
                return
            self._on_final_transcript(TranscriptReady(result.item_id, result.text, final=True), now)
            return
        speculation = self._speculations.get(result.item_id)
        if speculation is not None and speculation[0] == result.voiced_end_ms:
            if result.error:
                del self._speculations[result.item_id]
                return
            self._speculations[result.item_id] = (speculation[0], result.text)
            detection = self.config.turn_detection
            finished_ms = detection.finished_silence_ms if detection else None
            still_silent = (self._vad is not None and result.item_id == self._speech_item
                            and self._vad.last_voiced_end_ms == result.voiced_end_ms)
            if still_silent and finished_ms is not None and reads_as_finished(result.text):
                self._vad.end_after_silence(finished_ms)
            if still_silent and result.text and self._answers_now() and self.config.pipeline != "native":
                self._start_held(result.item_id, result.voiced_end_ms, result.text, now)

    def _start_held(self, item_id: str, voiced_end: int, transcript: str, now: float,
                    user_audio: np.ndarray | None = None) -> None:
        """Answer the turn as it stands now, while the silence window runs: its speculative
        transcript (cascade) or its audio (native, `user_audio`)."""
        self._drop_held()
        response_id = self.ids.new("resp")
        self._held = HeldResponse(response_id, item_id, voiced_end, transcript, now)
        config = self.config
        messages = self.conversation.messages(config.instructions, pending_user=transcript or None)
        options = GenerationOptions(max_tokens=config.max_output_tokens or 1024, temperature=config.temperature)
        self._out.effects.append(StartResponse(response_id, messages, options, "audio" in config.output_modalities,
                                               user_audio))

    def _drop_held(self) -> None:
        if self._held is not None:
            self._out.effects.append(CancelResponse(self._held.id))
            self._held = None

    def _on_commit(self, event: ClientEvent, now: float) -> None:
        if self._buffer.size < _MIN_COMMIT_MS * ASR_RATE // 1000:
            raise ProtocolError(f"the input audio buffer holds less than {_MIN_COMMIT_MS} ms of audio",
                                code="input_audio_buffer_commit_empty", event_id=event.event_id)
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        self._drop_held()
        self._turn = TurnClock(speech_end=now, end_of_turn=now)
        audio = self._buffer
        self._drop_before(self._stream_samples)
        self._reset_vad()
        self._commit(item_id, audio)

    def _commit(self, item_id: str, audio: np.ndarray, transcribe: bool = True) -> None:
        item = Item(id=item_id, role="user", content_type="input_audio", status="in_progress")
        previous = self.conversation.add(item)
        self._emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        self._emit("conversation.item.added", previous_item_id=previous, item=item.to_wire())
        self._pending_transcripts[item_id] = self._turn
        self._speculations.pop(item_id, None)
        self._last_user_audio = (item_id, audio) if self.config.pipeline == "native" else None
        if transcribe:
            self._out.effects.append(Transcribe(item_id, audio, final=True,
                                                hold_ms=_HOLD_TRANSCRIPT_MS if self._holds_transcripts() else None))

    def _holds_transcripts(self) -> bool:
        """Native push-to-talk: a turn's transcription waits for the reply's first audio (nothing
        waits for that transcript there, and it would share the CPU with the reply)."""
        return self.config.pipeline == "native" and self._vad is None and self.config.streaming_asr

    def _on_clear(self, event: ClientEvent, now: float) -> None:
        self._drop_before(self._stream_samples)
        self._drop_held()
        if self._speech_item is not None:
            self._partials.pop(self._speech_item, None)
        self._speech_item = None
        self._reset_vad()
        self._emit("input_audio_buffer.cleared")

    # ------------------------------------------------------------------ transcripts
    def _on_partial_transcript(self, result: TranscriptReady) -> None:
        self._partial_in_flight = False
        if result.item_id != self._speech_item or result.error or self.config.transcription is None:
            return
        partial = self._partials[result.item_id]
        first_words = not partial.committed
        delta = partial.update(result.text)
        if delta:
            self._emit("conversation.item.input_audio_transcription.delta", item_id=result.item_id,
                       content_index=0, delta=delta)
            if self.config.pipeline == "cascade" and self._answers_now():
                words = partial.text.rstrip(".,;:!?")  # the final transcript may go on after the word
                messages = self.conversation.messages(self.config.instructions, pending_user=words)
                self._out.effects.append(PrefillPrompt(messages))
            if first_words:  # again, once, should it have found the model busy at the speech start
                self._prefill_native()

    def _on_final_transcript(self, result: TranscriptReady, now: float) -> None:
        turn = self._pending_transcripts.pop(result.item_id, None)
        partial = self._partials.pop(result.item_id, None)
        item = self.conversation.get(result.item_id)
        if item is None:
            return  # deleted meanwhile
        item.status = "completed"
        if result.error:
            item.text = ""
            self._out.events.append(error_event(self.ids, ProtocolError(result.error, code="asr_error",
                                                                        type="server_error")))
            self._emit("conversation.item.input_audio_transcription.failed", item_id=item.id, content_index=0,
                       error={"type": "server_error", "code": "transcription_failed", "message": result.error})
        else:
            item.text = result.text
            if self.config.transcription is not None:
                rest = partial.remainder(result.text) if partial and partial.committed else result.text
                if rest:
                    self._emit("conversation.item.input_audio_transcription.delta", item_id=item.id,
                               content_index=0, delta=rest)
                self._emit("conversation.item.input_audio_transcription.completed", item_id=item.id,
                           content_index=0, transcript=result.text,
                           usage={"type": "duration", "seconds": 0})
        self._emit("conversation.item.done", item=item.to_wire())
        if turn is not None:
            turn.transcript = now
        answered = result.item_id in self._answered_natively  # its reply is already under way or done
        self._answered_natively.discard(result.item_id)
        if self._pending_transcripts:
            return
        held, self._held = self._held, None
        if answered:
            pass
        elif self._response_wanted is not None:
            request, self._response_wanted = self._response_wanted, None
            self._start_response(request, turn or TurnClock(), now)
        elif self._answers_now() and item.text and turn is not None and turn.speech_end_audio_ms is not None \
                and self._speech_item is None:
            # (If the user already speaks again, the next turn answers both.)
            if held is not None and held.item_id == item.id and held.transcript == item.text:
                self._start_response({}, turn, now, adopt=held)
                return
            self._start_response({}, turn, now)
        if held is not None:
            self._held = held
            self._drop_held()

    # ------------------------------------------------------------------ conversation items
    def _on_item_create(self, event: ClientEvent, now: float) -> None:
        item_spec = require(event, "item", dict)
        previous = event.data.get("previous_item_id")
        if previous is not None and previous != "root" and self.conversation.get(previous) is None:
            raise ProtocolError(f"no item {previous!r} in the conversation", code="item_not_found",
                                param="previous_item_id", event_id=event.event_id)
        if item_spec.get("type", "message") != "message":
            raise ProtocolError("only message items are supported", code="unsupported", param="item.type",
                                event_id=event.event_id)
        role = item_spec.get("role")
        if role not in ("user", "assistant", "system"):
            raise ProtocolError("item.role must be user, assistant or system", param="item.role",
                                event_id=event.event_id)
        content = item_spec.get("content")
        if not isinstance(content, list) or not content:
            raise ProtocolError("item.content must be a non-empty list", param="item.content",
                                event_id=event.event_id)
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
        item_id = item_spec.get("id") if isinstance(item_spec.get("id"), str) else self.ids.new("item")
        if self.conversation.get(item_id) is not None:
            raise ProtocolError(f"item id {item_id!r} already exists", param="item.id", event_id=event.event_id)
        item = text_item(item_id, role, " ".join(texts))
        before = self.conversation.add(item, previous)
        self._emit("conversation.item.added", previous_item_id=before, item=item.to_wire())
        self._emit("conversation.item.done", previous_item_id=before, item=item.to_wire())

    def _on_item_delete(self, event: ClientEvent, now: float) -> None:
        item_id = require(event, "item_id", str)
        if self._response is not None and self._response.item.id == item_id:
            self._cancel_response("client_cancelled")
        if not self.conversation.delete(item_id):
            raise ProtocolError(f"no item {item_id!r} in the conversation", code="item_not_found",
                                param="item_id", event_id=event.event_id)
        self._pending_transcripts.pop(item_id, None)
        self._emit("conversation.item.deleted", item_id=item_id)

    def _on_item_retrieve(self, event: ClientEvent, now: float) -> None:
        item_id = require(event, "item_id", str)
        item = self.conversation.get(item_id)
        if item is None:
            raise ProtocolError(f"no item {item_id!r} in the conversation", code="item_not_found",
                                param="item_id", event_id=event.event_id)
        self._emit("conversation.item.retrieved", item=item.to_wire())

    def _on_truncate(self, event: ClientEvent, now: float) -> None:
        item_id = require(event, "item_id", str)
        audio_end_ms = require(event, "audio_end_ms", int)
        content_index = require(event, "content_index", int, optional=True) or 0
        item = self.conversation.get(item_id)
        if item is None:
            raise ProtocolError(f"no item {item_id!r} in the conversation", code="item_not_found",
                                param="item_id", event_id=event.event_id)
        if item.role != "assistant" or item.content_type != "output_audio" or content_index != 0:
            raise ProtocolError("only an assistant audio item can be truncated", param="item_id",
                                event_id=event.event_id)
        if audio_end_ms < 0 or audio_end_ms > item.audio_ms + 1:
            raise ProtocolError(f"audio_end_ms {audio_end_ms} is outside the item's {item.audio_ms:.0f} ms of audio",
                                param="audio_end_ms", event_id=event.event_id)
        if self._response is not None and self._response.item is item:
            self._cancel_response("client_cancelled")
        item.truncate(audio_end_ms)
        self._emit("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=audio_end_ms)

    # ------------------------------------------------------------------ responses
    def _on_response_create(self, event: ClientEvent, now: float) -> None:
        if self._response is not None:
            raise ProtocolError("a response is already in progress: cancel it first",
                                code="conversation_already_has_active_response", event_id=event.event_id)
        request = require(event, "response", dict, optional=True) or {}
        # Validate now so the client hears about a bad field at once.
        if "output_modalities" in request:
            parse_modalities(request["output_modalities"], "response.output_modalities", event.event_id)
        if "max_output_tokens" in request:
            parse_max_tokens(request["max_output_tokens"], "response.max_output_tokens", event.event_id)
        if "instructions" in request and not isinstance(request["instructions"], str):
            raise ProtocolError("'instructions' must be a string", param="response.instructions",
                                event_id=event.event_id)
        metadata = request.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict)
                                     or not all(isinstance(v, str) for v in metadata.values())):
            raise ProtocolError("response.metadata must map strings to strings", param="response.metadata",
                                event_id=event.event_id)
        self._drop_held()
        last = self.conversation.items[-1] if self.conversation.items else None
        if self.config.pipeline == "native" and last is not None and self._last_user_audio is not None \
                and self._last_user_audio[0] == last.id:
            self._start_native_response(request, last.id, self._last_user_audio[1], now)
            return
        if self._pending_transcripts:
            self._response_wanted = request
            return
        turn = self._turn if last is not None and last.role == "user" and last.content_type == "input_audio" \
            else TurnClock()
        self._start_response(request, turn, now)

    def _start_native_response(self, request: dict[str, Any], item_id: str, audio: np.ndarray, now: float,
                               adopt: HeldResponse | None = None) -> None:
        """Answer the user's speech itself, without waiting for its transcript (or adopt the reply
        already started on it in the silence window)."""
        self._answered_natively.add(item_id)
        self._last_user_audio = None
        request = {**request, "metadata": {**(request.get("metadata") or {}), "pipeline": "native"}}
        self._start_response(request, self._turn, now, adopt=adopt, user_audio=audio)
        if self._holds_transcripts() and item_id in self._pending_transcripts and self._response is not None:
            self._response.held_transcript = item_id
            self._out.effects.append(TranscriptionHold(item_id, release=False))

    def _release_transcript(self, response: ActiveResponse) -> None:
        """The reply is heard (or over): the transcription of the turn it answers runs now."""
        if response.held_transcript is not None:
            self._out.effects.append(TranscriptionHold(response.held_transcript, release=True))
            response.held_transcript = None

    def _start_response(self, request: dict[str, Any], turn: TurnClock, now: float,
                        adopt: HeldResponse | None = None, user_audio: np.ndarray | None = None) -> None:
        config = self.config
        modalities = tuple(request.get("output_modalities") or config.output_modalities)
        audio = "audio" in modalities
        max_tokens = config.max_output_tokens
        if "max_output_tokens" in request:
            max_tokens = parse_max_tokens(request["max_output_tokens"], "response.max_output_tokens", None)
        instructions = request.get("instructions") or config.instructions
        response_id = adopt.id if adopt else self.ids.new("resp")
        item = Item(id=self.ids.new("item"), role="assistant", content_type="output_audio" if audio else "output_text",
                    text="", status="in_progress")
        messages = self.conversation.messages(instructions)
        previous = self.conversation.add(item)
        started = adopt.started if adopt else now
        self._response = ActiveResponse(response_id, item, audio, started, turn, metadata=request.get("metadata"))
        self._emit("response.created", response=self._response_wire(self._response, "in_progress", output=[]))
        self._emit("response.output_item.added", response_id=response_id, output_index=0, item=item.to_wire())
        self._emit("conversation.item.added", previous_item_id=previous, item=item.to_wire())
        self._emit("response.content_part.added", response_id=response_id, item_id=item.id, output_index=0,
                   content_index=0, part=self._part(item))
        if adopt is not None:  # already running since the silence window: catch up on what it did
            self._response.metadata = {**(self._response.metadata or {}), "speculative": "true"}
            for event in adopt.events:
                if self._response is None:
                    break
                self._on_response_event(self._response, event, now)
            return
        options = GenerationOptions(max_tokens=max_tokens or 1024, temperature=config.temperature)
        self._out.effects.append(StartResponse(response_id, messages, options, audio, user_audio))

    def _on_response_cancel(self, event: ClientEvent, now: float) -> None:
        wanted = event.data.get("response_id")
        if self._response is None or (wanted is not None and wanted != self._response.id):
            raise ProtocolError("there is no active response to cancel", code="response_cancel_not_active",
                                event_id=event.event_id)
        self._cancel_response("client_cancelled")

    def _on_output_clear(self, event: ClientEvent, now: float) -> None:
        if self._response is not None:
            self._cancel_response("client_cancelled")
        self._emit("output_audio_buffer.cleared", response_id=None)

    def _cancel_response(self, reason: str) -> None:
        response = self._response
        assert response is not None
        self._out.effects.append(CancelResponse(response.id))
        self._finish_response(response, "cancelled", reason=reason)

    def _on_response_event(self, response: ActiveResponse, event: ResponseEvent, now: float) -> None:
        item = response.item
        common = {"response_id": response.id, "item_id": item.id, "output_index": 0, "content_index": 0}
        if isinstance(event, StageMark):
            response.marks[event.stage] = event.at
        elif isinstance(event, TextDelta):
            item.text = (item.text or "") + event.text
            self._emit("response.output_text.delta", delta=event.text, **common)
            self._release_transcript(response)
        elif isinstance(event, SpeechSegment):
            duration_ms = len(event.audio) / 2 / WIRE_RATE * 1000
            if event.text:
                spoken = f" {event.text}" if item.text else event.text
                item.text = (item.text or "") + spoken
                item.segments.append((event.text, duration_ms))
                self._emit("response.output_audio_transcript.delta", delta=spoken, **common)
            elif item.segments:
                text, ms = item.segments[-1]
                item.segments[-1] = (text, ms + duration_ms)
            item.audio_ms += duration_ms
            response.marks.setdefault("first_audio_sent", now)
            self._release_transcript(response)
            for start in range(0, len(event.audio), _AUDIO_DELTA_BYTES):
                self._emit("response.output_audio.delta", delta=b64(event.audio[start:start + _AUDIO_DELTA_BYTES]),
                           **common)
        elif isinstance(event, ResponseFinished):
            if event.error:
                code = "llm_error" if event.error.startswith("llm") else "tts_error"
                self._out.events.append(error_event(self.ids, ProtocolError(event.error, code=code,
                                                                            type="server_error")))
                self._finish_response(response, "failed", error={"type": "server_error", "code": code,
                                                                 "message": event.error})
            else:
                self._finish_response(response, "cancelled" if event.cancelled else "completed")

    def _finish_response(self, response: ActiveResponse, status: str, *, reason: str | None = None,
                         error: dict[str, str] | None = None) -> None:
        self._response = None
        self._release_transcript(response)
        item = response.item
        item.status = "completed" if status == "completed" else "incomplete"
        item.text = (item.text or "").strip()
        common = {"response_id": response.id, "item_id": item.id, "output_index": 0, "content_index": 0}
        if response.audio:
            self._emit("response.output_audio.done", **common)
            self._emit("response.output_audio_transcript.done", transcript=item.text, **common)
        else:
            self._emit("response.output_text.done", text=item.text, **common)
        self._emit("response.content_part.done", part=self._part(item), **common)
        self._emit("response.output_item.done", response_id=response.id, output_index=0, item=item.to_wire())
        self._emit("conversation.item.done", item=item.to_wire())
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason or "client_cancelled"}
        elif error is not None:
            details = {"type": "failed", "error": error}
        self._emit("response.done", response=self._response_wire(response, status, output=[item.to_wire()],
                                                                 status_details=details))

    def _part(self, item: Item) -> dict[str, Any]:
        if item.content_type == "output_audio":
            return {"type": "audio", "transcript": item.text or ""}
        return {"type": "text", "text": item.text or ""}

    def _response_wire(self, response: ActiveResponse, status: str, *, output: list[dict[str, Any]],
                       status_details: dict[str, Any] | None = None) -> dict[str, Any]:
        metadata = dict(response.metadata or {})
        if status != "in_progress":
            metadata.update(self._timings(response))
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": output,
            "conversation_id": self.id,
            "output_modalities": ["audio"] if response.audio else ["text"],
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": WIRE_RATE}, "voice": self.config.voice}},
            "max_output_tokens": self.config.max_output_tokens or "inf",
            "metadata": metadata or None,
            "usage": None,
        }

    @staticmethod
    def _timings(response: ActiveResponse) -> dict[str, str]:
        """Stage timings in ms from the end of the user's speech (or from the response start)."""
        turn = response.turn
        origin = turn.speech_end if turn.speech_end is not None else response.started
        stamps = {
            "end_of_turn_ms": turn.end_of_turn,
            "transcript_ms": turn.transcript,
            "response_start_ms": response.started,
            "llm_first_token_ms": response.marks.get("llm_first_token"),
            "tts_first_audio_ms": response.marks.get("tts_first_audio"),
            "first_audio_sent_ms": response.marks.get("first_audio_sent"),
        }
        timings = {name: f"{(at - origin) * 1000:.1f}" for name, at in stamps.items() if at is not None}
        timings["timing_origin"] = "speech_end" if turn.speech_end is not None else "response_start"
        if turn.speech_end_audio_ms is not None:
            timings["speech_end_audio_ms"] = str(turn.speech_end_audio_ms)
        return timings
