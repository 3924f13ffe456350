"""The narrow interface every speech recogniser implements."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np


class TranscriptionCancelled(Exception):  # noqa: N818 - not an error: the caller gave the pass up
    """Raised by `transcribe` when its `cancel` event was set before the pass finished."""


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 audio into text. Implementations must be thread-safe."""

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        """Return the transcript ("" when nothing was said). Where the recogniser has steps, it
        checks `cancel` between them and raises TranscriptionCancelled once it is set."""
        ...
