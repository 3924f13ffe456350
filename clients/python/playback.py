"""Reply playback with barge-in: the player plays the reply's audio; when the user interrupts, it
stops, and the server is told how much was actually heard (`conversation.item.truncate`).

`Playback` holds no I/O: it takes server events and returns the client events to send. The player
is the device boundary (clients/python/devices.py's Speaker, or a test's buffer).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Protocol

from clients.python.events import Event, item_truncate

BYTES_PER_MS = 48  # PCM16 at 24 kHz


class Player(Protocol):
    def write(self, pcm: bytes) -> None:
        """Queue PCM16 24 kHz audio to play after what is queued already; never blocks."""

    def played_ms(self) -> float:
        """Audio played since the player was made, in ms (it only grows)."""

    def queued_ms(self) -> float:
        """Audio played since the player was made plus what is queued now, in ms."""

    def clear(self) -> None:
        """Stop at once: what is queued and not played yet is dropped."""


@dataclass
class _Playing:
    item_id: str
    response_id: str
    start_ms: float  # the player's queued_ms when the item's first audio was queued


class Playback:
    """Feeds reply audio to a player and stops it on barge-in.

    This server says an interruption with `output_audio_buffer.cleared` (speech over the reply that
    is only a backchannel does not stop it); servers that do not (OpenAI's over a websocket) need
    `stop_on_speech=True`: playback stops as soon as the user's speech starts."""

    def __init__(self, player: Player, *, stop_on_speech: bool = False) -> None:
        self.player = player
        self.stop_on_speech = stop_on_speech
        self._current: _Playing | None = None
        self._stopped: set[str] = set()  # responses whose late audio is dropped
        self.truncations: list[Event] = []
        """Every truncate sent, in order."""

    @property
    def playing(self) -> bool:
        return self._current is not None and self.player.played_ms() < self.player.queued_ms()

    def observe(self, event: Event) -> list[Event]:
        """Take one server event; return the client events it calls for (a truncate on barge-in)."""
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            self._play(event)
        elif kind == "output_audio_buffer.cleared":
            return self.stop()
        elif kind == "input_audio_buffer.speech_started" and self.stop_on_speech:
            return self.stop()
        return []

    def _play(self, event: Event) -> None:
        if event["response_id"] in self._stopped:
            return
        if self._current is None or self._current.item_id != event["item_id"]:
            self._current = _Playing(event["item_id"], event["response_id"], self.player.queued_ms())
        self.player.write(base64.b64decode(event["delta"]))

    def stop(self) -> list[Event]:
        """Stop playing now; a truncate of the item to what was played, if it was still playing."""
        current, self._current = self._current, None
        if current is None:
            return []
        played, queued = self.player.played_ms(), self.player.queued_ms()
        self.player.clear()
        self._stopped.add(current.response_id)
        if played >= queued:
            return []  # it had played out: all of it was heard
        heard_ms = math.floor(max(0.0, played - current.start_ms))
        truncate = item_truncate(current.item_id, heard_ms)
        self.truncations.append(truncate)
        return [truncate]


class BufferPlayer:
    """A player that plays into memory, given the time: `advance(ms)` plays that much of the queue.
    For tests and offline use (the pace is the caller's)."""

    def __init__(self) -> None:
        self.played = bytearray()
        self._queue = bytearray()
        self._dropped = 0  # bytes queued, then cleared unplayed

    def write(self, pcm: bytes) -> None:
        self._queue += pcm

    def advance(self, ms: float) -> bytes:
        take = int(ms * BYTES_PER_MS) // 2 * 2
        chunk = bytes(self._queue[:take])
        del self._queue[:take]
        self.played += chunk
        return chunk

    def played_ms(self) -> float:
        return len(self.played) / BYTES_PER_MS

    def queued_ms(self) -> float:
        return (len(self.played) + len(self._queue)) / BYTES_PER_MS

    def clear(self) -> None:
        self._dropped += len(self._queue)
        self._queue.clear()

    def __repr__(self) -> str:
        return f"BufferPlayer(played={self.played_ms():.0f} ms, queued={self.queued_ms():.0f} ms)"
