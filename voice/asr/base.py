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


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 audio into text. Implementations must be thread-safe."""

    def hear(self, audio: np.ndarray, cancel: threading.Event | None = None) -> Heard:
        """The transcript ("" when nothing was said) and its confidence. Where the recogniser has
        steps, it checks `cancel` between them and raises TranscriptionCancelled once it is set."""
        ...

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        """The transcript alone."""
        ...
