"""The interface every speech synthesiser implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class Synthesizer(Protocol):
    """Text in, float32 mono audio out at `sample_rate`. Must be thread-safe."""

    sample_rate: int
    name: str

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield audio for `text` in one or more pieces (the caller checks for cancellation between them)."""
        ...
