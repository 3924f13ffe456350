"""The work a session asks its runtime to do, and the results the runtime feeds back.

Transcriptions and end-of-turn scores are the turn-taking unit's work (`voice.turn_taking.Transcribe`
and `ScoreEnd`, answered with `TranscriptReady` and `EndScored`); replies and prefills are the session's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.wire import Ids, ProtocolError, error_event
from voice.llm.base import ChatMessage, GenerationOptions
from voice.response_events import ResponseEvent
from voice.turn_taking import ScoreEnd, Transcribe


@dataclass(frozen=True)
class StartResponse:
    response_id: str
    pipeline: str
    """The pipeline whose responder runs it."""
    messages: list[ChatMessage]
    options: GenerationOptions
    audio: bool
    user_audio: np.ndarray | None = field(default=None, repr=False)
    """The user's speech (16 kHz), for a pipeline that answers it without a transcript."""
    voice: str | None = None
    """The id of the server's voice that speaks it (None: the default)."""


@dataclass(frozen=True)
class CancelResponse:
    response_id: str


@dataclass(frozen=True)
class DeferTranscription:
    """About a deferred final transcription (`Transcribe.defer_ms`): `release` False, the reply to
    the turn has started, so wait on until it has its first audio (the runtime caps the wait);
    `release` True, run it now."""

    item_id: str
    release: bool


@dataclass(frozen=True)
class PrefillPrompt:
    """Evaluate the prompt of a coming reply while the user is still speaking, so that the reply
    evaluates only what comes after (an optimisation: may be skipped)."""

    messages: list[ChatMessage]
    pipeline: str
    audio: np.ndarray | None = field(default=None, repr=False)
    """The user's speech so far (16 kHz), for a pipeline that answers speech."""


Effect = Transcribe | ScoreEnd | StartResponse | CancelResponse | PrefillPrompt | DeferTranscription


@dataclass(frozen=True)
class ResponseProgress:
    response_id: str
    event: ResponseEvent


@dataclass
class Output:
    events: list[dict[str, Any]] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)


class Outbox:
    """What a session has to say and to ask for, until the transport takes it (`flush`)."""

    def __init__(self, ids: Ids) -> None:
        self.ids = ids
        self._out = Output()

    def emit(self, kind: str, **fields: Any) -> None:
        self._out.events.append({"type": kind, "event_id": self.ids.new("event"), **fields})

    def error(self, error: ProtocolError) -> None:
        self._out.events.append(error_event(self.ids, error))

    def work(self, effect: Effect) -> None:
        self._out.effects.append(effect)

    def flush(self) -> Output:
        out, self._out = self._out, Output()
        return out
