"""The sound card through `sounddevice` (the `audio` extra, imported only here and only when used):
a microphone that yields PCM16 24 kHz frames, and a speaker that is a playback.Player."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from clients.python.playback import BYTES_PER_MS

RATE = 24_000


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the module is there, PortAudio is not
        raise RuntimeError("the microphone and speaker need `pip install voice-server[audio]` "
                           f"(sounddevice) and PortAudio: {exc}") from exc
    return sounddevice


class Microphone:
    """Frames of `frame_ms` from the default (or given) input device, as an async iterator."""

    def __init__(self, frame_ms: int = 20, device: int | str | None = None) -> None:
        self.frame_ms = frame_ms
        self.device = device

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sounddevice = _sounddevice()
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[bytes] = asyncio.Queue()

        def captured(data: Any, count: int, timing: Any, status: Any) -> None:  # PortAudio's thread
            loop.call_soon_threadsafe(frames.put_nowait, bytes(data))

        with sounddevice.RawInputStream(samplerate=RATE, channels=1, dtype="int16", device=self.device,
                                        blocksize=RATE * self.frame_ms // 1000, callback=captured):
            while True:
                yield await frames.get()


class Speaker:
    """The default (or given) output device as a playback.Player: PortAudio's thread takes the queued
    audio as the card plays it, so `played_ms` is what came out (give or take the card's latency)."""

    def __init__(self, device: int | str | None = None) -> None:
        sounddevice = _sounddevice()
        self._lock = threading.Lock()
        self._queue = bytearray()
        self._played = 0  # bytes handed to the card
        self._stream = sounddevice.RawOutputStream(samplerate=RATE, channels=1, dtype="int16", device=device,
                                                   callback=self._fill)
        self._stream.start()

    def _fill(self, out: Any, count: int, timing: Any, status: Any) -> None:  # PortAudio's thread
        wanted = count * 2
        with self._lock:
            chunk = bytes(self._queue[:wanted])
            del self._queue[:wanted]
            self._played += len(chunk)
        out[:len(chunk)] = chunk
        out[len(chunk):] = bytes(wanted - len(chunk))

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._queue += pcm

    def played_ms(self) -> float:
        with self._lock:
            return self._played / BYTES_PER_MS

    def queued_ms(self) -> float:
        with self._lock:
            return (self._played + len(self._queue)) / BYTES_PER_MS

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
