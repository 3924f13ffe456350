"""When a client that leaves output unread is too slow to keep: sans-I/O, fed samples of its unread bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SlowReaderWatch:
    """A client is too slow once its unread output has stayed over `limit_bytes` for `grace_s`.

    A burst queued at once (a sentence of audio) drains in milliseconds for a client that reads, so
    only bytes that stay unread over time count; a dip under the limit starts the count again.
    """

    limit_bytes: int
    grace_s: float
    _over_since: float | None = None

    def too_slow(self, unread_bytes: int, now: float) -> bool:
        """Take one sample of the bytes queued for the client but not yet taken by it."""
        if unread_bytes <= self.limit_bytes:
            self._over_since = None
            return False
        if self._over_since is None:
            self._over_since = now
        return now - self._over_since >= self.grace_s
