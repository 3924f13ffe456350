"""Runs one reply: LLM tokens -> speakable chunks -> TTS audio, streamed and cancellable.

The LLM runs in its own thread and feeds chunks to the synthesiser as soon as a clause or a
sentence is complete, so the first audio leaves long before the reply is finished.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from voice.audio import WIRE_RATE, StreamResampler, float_to_pcm16, resample
from voice.llm.base import ChatMessage, ChatModel, GenerationOptions, ToolCall
from voice.response_events import FunctionCall, ResponseEvent, ResponseFinished, SpeechSegment, StageMark, TextDelta
from voice.text import RepetitionGuard, SpeechChunker, clean_for_speech
from voice.tts.base import Synthesizer

log = logging.getLogger(__name__)

Emit = Callable[[ResponseEvent], None]
_DONE = object()
_CANCEL_POLL_S = 0.02
_PRODUCER_JOIN_S = 1.0
_FIRST_AUDIO_HOLD_S = 1.0
_EMPTY_REPLY_RETRIES = 2


@dataclass(frozen=True)
class ResponseRequest:
    messages: list[ChatMessage]
    options: GenerationOptions
    audio: bool = True
    """Speak the reply (else text only)."""
    user_audio: np.ndarray | None = field(default=None, repr=False)
    """The user's speech (16 kHz), for a pipeline that answers it without a transcript."""
    voice: str | None = None
    """The id of the server's voice that speaks it (None: the default)."""


def run_response(llm: ChatModel, tts: Synthesizer, request: ResponseRequest, cancel: threading.Event,
                 emit: Emit, clock: Callable[[], float] = time.monotonic) -> None:
    """Run one response to its end, emitting events; returns promptly once `cancel` is set, even
    while the LLM has not answered yet (its thread then ends on its own at its next token or timeout)."""
    chunks: queue.Queue[object] = queue.Queue()
    first_spoken = threading.Event()

    def wait_for_first_audio() -> None:
        # On a small CPU, generating on while the first chunk is synthesised slows both: the
        # first audio matters most, so the LLM waits for it (briefly; the rest is not late).
        deadline = time.monotonic() + _FIRST_AUDIO_HOLD_S
        while not first_spoken.wait(0.01) and not cancel.is_set() and time.monotonic() < deadline:
            pass

    first_token = threading.Event()

    def draw() -> bool:
        """One reply from the LLM, its chunks queued for the synthesiser; False when it had nothing
        to say (then it is drawn again), True when it is over (said, cancelled, or looping)."""
        chunker, guard = SpeechChunker(), RepetitionGuard()
        said = False
        stream = llm.stream_chat(request.messages, request.options, cancel)
        for delta in stream:
            if cancel.is_set():
                return True
            if not first_token.is_set():
                emit(StageMark("llm_first_token", clock()))
                first_token.set()
            if isinstance(delta, ToolCall):
                said = True
                if request.audio:  # the words before it are spoken first
                    for chunk in chunker.flush():
                        chunks.put(chunk)
                chunks.put(FunctionCall(delta.name, delta.arguments))
                continue
            complete = chunker.feed(delta)
            looping = next((k for k, chunk in enumerate(complete) if guard.looping(chunk)), None)
            if request.audio:
                for chunk in complete[:looping]:
                    said = True
                    chunks.put(chunk)
                    if not first_spoken.is_set():
                        wait_for_first_audio()
            else:
                said = said or any(c.isalnum() for c in delta)
                emit(TextDelta(delta))
            if looping is not None:
                log.info("the LLM's reply repeats itself: ended at %r", complete[looping][:60])
                close = getattr(stream, "close", None)  # a generator: closing it stops the LLM
                if close is not None:
                    close()
                return True
        if request.audio and not cancel.is_set():
            for chunk in chunker.flush():
                said = True
                chunks.put(chunk)
        return said or cancel.is_set()

    def generate() -> None:
        try:
            for attempt in range(1 + _EMPTY_REPLY_RETRIES):
                if draw():
                    return
                # A sampled reply can end at its first token: the user would hear nothing, so it
                # is drawn again.
                log.info("the LLM's reply had nothing to say (attempt %d); drawing it again", attempt + 1)
        except Exception as exc:  # noqa: BLE001 - any backend failure ends the response with an error
            chunks.put(exc)
        finally:
            chunks.put(_DONE)

    producer = threading.Thread(target=generate, name="llm-stream", daemon=True)
    producer.start()
    error: str | None = None
    first_audio = True
    while not cancel.is_set():
        try:
            item = chunks.get(timeout=_CANCEL_POLL_S)
        except queue.Empty:
            continue
        if item is _DONE:
            break
        if isinstance(item, Exception):
            error = _describe(item)
            break
        if isinstance(item, FunctionCall):
            emit(item)
            continue
        text = str(item)
        # One resampler a chunk: its pieces may meet mid-word, where resampling each alone would click.
        resampler = StreamResampler(tts.sample_rate, WIRE_RATE)
        try:
            with _synthesis(tts, text, first_audio) as pieces:
                # Checked before each piece is asked for: a barge-in lets the piece under way end, and no other start.
                while not cancel.is_set() and (piece := next(pieces, None)) is not None:
                    if cancel.is_set():  # came while it was made: not sent
                        break
                    resampled = resampler.process(piece)
                    if not resampled.size:  # all of it still in the resampler's filter: it comes with the next
                        continue
                    audio = float_to_pcm16(resampled)
                    if first_audio:
                        emit(StageMark("tts_first_audio", clock()))
                        first_audio = False
                    emit(SpeechSegment(text=text, audio=audio))
                    text = ""
            tail = resampler.process(np.zeros(0, np.float32), last=True)
            if tail.size and not cancel.is_set():
                emit(SpeechSegment(text=text, audio=float_to_pcm16(tail)))
            first_spoken.set()
        except Exception as exc:  # noqa: BLE001
            error = f"tts: {exc}"
            log.warning("response failed: %s", error)
            cancel.set()  # stop the LLM too
            break
    first_spoken.set()
    # llama.cpp stops between tokens, so this is short; a remote LLM that hangs is left to its timeout.
    producer.join(timeout=_PRODUCER_JOIN_S)
    emit(ResponseFinished(cancelled=cancel.is_set() and error is None, error=error))


@contextlib.contextmanager
def _synthesis(tts: Synthesizer, text: str, soon: bool) -> Iterator[Iterator[np.ndarray]]:
    """`tts`'s pieces of `text`, closed as soon as the caller leaves (a cancelled chunk's stream
    from a speech server ends there, not whenever the generator is collected)."""
    pieces = iter(tts.synthesize(text, soon=soon))
    try:
        yield pieces
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def _describe(item: object) -> str | None:
    if isinstance(item, Exception):
        log.warning("response failed: %s", item)
        return f"llm: {item}"
    return None


def run_response_naive(llm: ChatModel, tts: Synthesizer, request: ResponseRequest, cancel: threading.Event,
                       emit: Emit, clock: Callable[[], float] = time.monotonic) -> None:
    """The way simple cascades work, as a benchmark baseline: the whole LLM reply, then the
    whole synthesis, then all the audio at once."""
    parts: list[str] = []
    try:
        calls: list[FunctionCall] = []
        for delta in llm.stream_chat(request.messages, request.options, cancel):
            if not parts and not calls:
                emit(StageMark("llm_first_token", clock()))
            if isinstance(delta, ToolCall):
                calls.append(FunctionCall(delta.name, delta.arguments))
            else:
                parts.append(delta)
        text = clean_for_speech("".join(parts)).strip()
        if request.audio and text and not cancel.is_set():
            audio = np.concatenate([resample(piece, tts.sample_rate, WIRE_RATE) for piece in tts.synthesize(text)])
            emit(StageMark("tts_first_audio", clock()))
            emit(SpeechSegment(text=text, audio=float_to_pcm16(audio)))
        elif not request.audio and text:
            emit(TextDelta(text))
        for call in calls:
            emit(call)
    except Exception as exc:  # noqa: BLE001
        emit(ResponseFinished(error=_describe(exc)))
        return
    emit(ResponseFinished(cancelled=cancel.is_set()))
