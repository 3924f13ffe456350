"""The interface every speech synthesiser implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class Synthesizer(Protocol):
    """Text in, float32 mono audio out at `sample_rate`. Must be thread-safe."""

    sample_rate: int
    name: str

    def synthesize(self, text: str, soon: bool = False) -> Iterator[np.ndarray]:
        """Yield audio for `text` in one or more pieces (the caller checks for cancellation between
        them). `soon`: someone is waiting for this audio (a reply's first chunk), so the first piece
        should come as early as the synthesiser can make it, even at some cost in total time."""
        ...
