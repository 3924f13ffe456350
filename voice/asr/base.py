"""The narrow interface every speech recogniser implements."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TranscriptionCancelled(Exception):  # noqa: N818 - not an error: the caller gave the pass up
    """Raised by `transcribe` when its `cancel` event was set before the pass finished."""


@dataclass(frozen=True)
class Heard:
    """A transcript and how sure the recogniser was of it: the mean log-probability of its tokens
    (0: certain; a non-lexical "mm-hmm" heard as words scores about -0.7 and below)."""

    text: str
    confidence: float = 0.0


@dataclass(frozen=True)
class Hints:
    """What a session tells the recogniser (the protocol's `audio.input.transcription`): the language
    spoken (ISO-639-1; None: the recogniser's own) and a prompt of words to expect."""

    language: str | None = None
    prompt: str | None = None


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 audio into text. Implementations must be thread-safe."""

    languages: frozenset[str] | None
    """The languages it transcribes (None: any it detects)."""

    def hear(self, audio: np.ndarray, cancel: threading.Event | None = None, hints: Hints | None = None) -> Heard:
        """The transcript ("" when nothing was said) and its confidence. Where the recogniser has
        steps, it checks `cancel` between them and raises TranscriptionCancelled once it is set."""
        ...

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        """The transcript alone."""
        ...
