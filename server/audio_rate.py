"""Sans-I/O bound on how far a session's input audio may run ahead of real time.

A token bucket of audio-seconds: it holds at most `ahead_s`, is refilled at real time (one second
of audio per second), and every accepted message is charged its duration. So, from the session's
start, the audio accepted is never more than the time elapsed plus `ahead_s` (plus one message
when a single message is longer than the allowance); what comes faster is refused and dropped.
"""

from __future__ import annotations

_ROUNDING = 1e-9  # seconds: sums of message durations are inexact; an exact fit must fit

class AudioAllowance:
    """How much audio a session may send now; `take` accepts a message or refuses it whole."""

    def __init__(self, ahead_s: float, now: float) -> None:
        if not ahead_s > 0:
            raise ValueError(f"the allowance must be positive, not {ahead_s}")
        self.ahead_s = ahead_s
        self._balance = ahead_s  # seconds of audio that may come now (starts full: a client may burst)
        self._at = now

    def balance(self, now: float) -> float:
        """Seconds of audio the session may send at `now` (negative after an overlong message)."""
        # Time never runs backwards here: a stale `now` refills nothing.
        self._balance = min(self.ahead_s, self._balance + max(0.0, now - self._at))
        self._at = max(self._at, now)
        return self._balance

    def take(self, seconds: float, now: float) -> bool:
        """Charge `seconds` of audio arriving at `now`, if the allowance has room for it; a message
        longer than the whole allowance is accepted only from a full allowance (and overdraws it),
        so that a client may send a long recording in one message, at real-time pace overall."""
        balance = self.balance(now)
        if seconds > balance + _ROUNDING and balance < self.ahead_s:
            return False
        self._balance = balance - seconds
        return True
