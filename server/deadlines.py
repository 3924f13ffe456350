"""A session's two clocks, the idle timeout and the maximum length: sans-I/O, the caller passes the time."""

from __future__ import annotations

from dataclasses import dataclass, field

IDLE = "idle_timeout"
EXPIRED = "session_expired"


@dataclass
class SessionDeadlines:
    """When a session must be closed, and why; `now` is any monotonic clock in seconds."""

    idle_timeout_s: float
    max_session_s: float
    started: float
    _last_heard: float = field(init=False)

    def __post_init__(self) -> None:
        self._last_heard = self.started

    def heard(self, now: float) -> None:
        """The client sent a message."""
        self._last_heard = now

    def wait_s(self, now: float) -> float:
        """How long to wait for the client's next message before asking `due` again."""
        idle_left = self._last_heard + self.idle_timeout_s - now
        session_left = self.started + self.max_session_s - now
        return max(0.0, min(idle_left, session_left))

    def due(self, now: float, busy: bool) -> str | None:
        """The reason to close now (`session_expired`, `idle_timeout`), or None.

        `busy`: the session is answering or the client is being sent a reply, so it is not idle:
        the idle clock starts again from now, and the session is judged idle only once it has
        been quiet for a whole `idle_timeout_s`."""
        if now - self.started >= self.max_session_s:
            return EXPIRED
        if now - self._last_heard >= self.idle_timeout_s:
            if busy:
                self._last_heard = now
                return None
            return IDLE
        return None

    def message(self, reason: str) -> str:
        """The error message for a reason `due` gave."""
        if reason == EXPIRED:
            return f"the session reached its maximum length of {self.max_session_s:.0f} s"
        return f"no client event for {self.idle_timeout_s:.0f} s"
