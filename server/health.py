"""What /healthz says of the remote model servers: which are down, probed off the event loop."""

from __future__ import annotations

import asyncio
import time

from voice.backends import unreachable
from voice.engine import Engine

PROBE_EVERY_S = 5.0


class BackendHealth:
    """The last known {backend: why} of the engine's model servers that are down. A /healthz request
    answers at once from it and starts a new probe when it is stale, so health checks never wait."""

    def __init__(self) -> None:
        self._down: dict[str, str] | None = None
        self._probed = 0.0
        self._probe: asyncio.Task[None] | None = None

    def down(self, engine: Engine) -> dict[str, str]:
        if not engine.remote:
            return {}
        if self._down is None:  # the start-up check's answer
            self._down, self._probed = dict(engine.remote_down), time.monotonic()
        stale = time.monotonic() - self._probed > PROBE_EVERY_S
        if stale and (self._probe is None or self._probe.done()):
            self._probe = asyncio.ensure_future(self._refresh(engine))
        return self._down

    async def _refresh(self, engine: Engine) -> None:
        self._down = await asyncio.to_thread(unreachable, engine.remote)
        self._probed = time.monotonic()
