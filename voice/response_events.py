"""Typed events a response job emits while it runs (the server maps them to wire events)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageMark:
    """A pipeline stage reached a milestone (`llm_first_token`, `tts_first_audio`) at monotonic time `at`."""

    stage: str
    at: float


@dataclass(frozen=True)
class TextDelta:
    """Reply text for a text-only response."""

    text: str


@dataclass(frozen=True)
class SpeechSegment:
    """A piece of spoken reply: 24 kHz PCM16 audio, and the text it speaks (on its first piece only)."""

    text: str
    audio: bytes


@dataclass(frozen=True)
class FunctionCall:
    """The reply calls a function: its name and its arguments (a JSON string)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ResponseFinished:
    """The job ended: completed, cancelled (`cancelled=True`) or failed (`error`)."""

    cancelled: bool = False
    error: str | None = None


ResponseEvent = StageMark | TextDelta | SpeechSegment | FunctionCall | ResponseFinished
