"""How long to wait between attempts to reconnect: exponential, capped, with jitter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first_s: float = 0.25
    factor: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.2
    """Each wait is randomised by up to this fraction, so clients of a restarted server spread out."""
    attempts: int | None = None
    """Give up after this many failed attempts (None: never)."""

    def waits(self) -> Iterator[float]:
        """The wait before each attempt after the first."""
        wait, attempt = self.first_s, 0
        while self.attempts is None or attempt < self.attempts:
            yield wait * (1 + random.uniform(-self.jitter, self.jitter))
            wait = min(self.max_s, wait * self.factor)
            attempt += 1
