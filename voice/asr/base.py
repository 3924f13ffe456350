"""The narrow interface every speech recogniser implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 audio into text. Implementations must be thread-safe."""

    def transcribe(self, audio: np.ndarray) -> str:
        """Return the transcript ("" when nothing was said)."""
        ...
