"""How a turn is answered: the cascade, the native audio-token path, or the naive baseline.

A session chooses its pipeline once (and again on `session.update`) and asks it the few questions
its turn-taking and replies depend on (`Pipeline`); the engine builds each pipeline's `Responder`,
which runs its replies and prefills in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voice.llm.base import ChatMessage, ChatModel, GenerationOptions
from voice.native.base import AudioChatModel
from voice.response import Emit, ResponseRequest, run_response, run_response_naive
from voice.tts.base import Synthesizer


@dataclass(frozen=True)
class Pipeline:
    """What a session needs to know of a pipeline (sans-I/O)."""

    name: str
    answers_speech: bool
    """A reply answers the user's speech itself, not its transcript (which comes beside it, for the
    history): the reply starts on the audio, at the first silent frame."""
    early_asr: bool
    """Work while the user speaks: partial and speculative transcripts, prompt prefills."""
    baseline: bool = False
    """The benchmark baseline, the way simple cascades work: a fixed 500 ms silence with plain VAD
    decisions, Whisper on 30 s windows, the whole reply before any synthesis, the whole synthesis
    before any audio is sent. A server runs it alone."""


CASCADE = Pipeline("cascade", answers_speech=False, early_asr=True)
NATIVE = Pipeline("native", answers_speech=True, early_asr=True)
NAIVE = Pipeline("naive", answers_speech=False, early_asr=False, baseline=True)
PIPELINES = {pipeline.name: pipeline for pipeline in (CASCADE, NATIVE, NAIVE)}


class Responder(Protocol):
    """Runs a pipeline's replies (blocking: call it in a worker thread). Shared by all sessions."""

    def respond(self, request: ResponseRequest, cancel: threading.Event, emit: Emit) -> None:
        ...

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event, audio: np.ndarray | None = None) -> None:
        """Evaluate a coming reply's prompt ahead of time where the model can (an optimisation):
        the conversation so far and the user's words, or (`audio`, 16 kHz) the user's speech so far."""
        ...


class CascadeResponder:
    """The transcript -> LLM -> TTS, streamed clause by clause."""

    def __init__(self, llm: ChatModel, tts: Synthesizer, voices: Mapping[str, Synthesizer] | None = None) -> None:
        self.llm = llm
        self.tts = tts
        self.voices = voices or {}

    def respond(self, request: ResponseRequest, cancel: threading.Event, emit: Emit) -> None:
        run_response(self.llm, _voice(self, request), request, cancel, emit)

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event, audio: np.ndarray | None = None) -> None:
        prefill = getattr(self.llm, "prefill", None)
        if prefill is not None:
            prefill(messages, cancel)


class NativeResponder:
    """The user's speech -> the audio chat model -> TTS; a reply to no speech (a typed message)
    goes to the cascade's LLM."""

    def __init__(self, native: AudioChatModel, llm: ChatModel, tts: Synthesizer,
                 voices: Mapping[str, Synthesizer] | None = None) -> None:
        self.native = native
        self.llm = llm
        self.tts = tts
        self.voices = voices or {}

    def respond(self, request: ResponseRequest, cancel: threading.Event, emit: Emit) -> None:
        source = self.llm if request.user_audio is None else _SpeechTurn(self.native, request.user_audio)
        run_response(source, _voice(self, request), request, cancel, emit)

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event, audio: np.ndarray | None = None) -> None:
        prefill = getattr(self.native, "prefill", None)
        if prefill is not None:
            prefill(messages, cancel, audio_16k=audio)


class NaiveResponder:
    """The benchmark baseline's replies: the whole reply, then the whole synthesis."""

    def __init__(self, llm: ChatModel, tts: Synthesizer, voices: Mapping[str, Synthesizer] | None = None) -> None:
        self.llm = llm
        self.tts = tts
        self.voices = voices or {}

    def respond(self, request: ResponseRequest, cancel: threading.Event, emit: Emit) -> None:
        run_response_naive(self.llm, _voice(self, request), request, cancel, emit)

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event, audio: np.ndarray | None = None) -> None:
        return None


def _voice(responder: CascadeResponder | NativeResponder | NaiveResponder, request: ResponseRequest) -> Synthesizer:
    """The voice the request asks for (the session resolved its name), else the default."""
    return responder.voices.get(request.voice or "", responder.tts)


class _SpeechTurn:
    """One native turn behind the ChatModel interface, so that the cascade's response runner
    (clauses -> TTS, cancellation, timings) serves both paths: the speech is the next message."""

    def __init__(self, native: AudioChatModel, audio_16k: np.ndarray) -> None:
        self.native = native
        self.audio = audio_16k
        self.name = native.name

    def stream_chat(self, messages: list[ChatMessage], options: GenerationOptions,
                    cancel: threading.Event) -> Iterator[str]:
        return self.native.stream_reply(self.audio, messages, options, cancel)
