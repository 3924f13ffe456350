"""An asyncio client of the Realtime protocol that streams audio at real-time pace."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import websockets

from voice.audio import WIRE_RATE, float_to_pcm16, resample


@dataclass(frozen=True)
class ReceivedEvent:
    event: dict[str, Any]
    at: float  # time.monotonic() on arrival

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


def load_wav_pcm24(path: str | Path) -> bytes:
    """Any audio file soundfile reads, as mono 24 kHz PCM16."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return float_to_pcm16(resample(samples.mean(axis=1), rate, WIRE_RATE))


class RealtimeClient:
    """A thin websocket client: send events, stream audio, receive timestamped events."""

    def __init__(self, websocket: websockets.ClientConnection) -> None:
        self.websocket = websocket

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None) -> RealtimeClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        websocket = await websockets.connect(url, additional_headers=headers, max_size=None,
                                             subprotocols=[websockets.Subprotocol("realtime")])
        return cls(websocket)

    async def close(self) -> None:
        await self.websocket.close()

    async def send(self, event: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(event))

    async def append_audio(self, pcm: bytes) -> None:
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")})

    async def stream_audio(self, pcm: bytes, *, frame_ms: int = 20, speed: float = 1.0,
                           trailing_silence_ms: int = 0) -> float:
        """Send PCM16 24 kHz audio in `frame_ms` frames at real-time pace (scaled by `speed`),
        then `trailing_silence_ms` of silence. Returns the monotonic time the last speech frame left."""
        frame_bytes = WIRE_RATE * 2 * frame_ms // 1000
        silence = bytes(WIRE_RATE * 2 * trailing_silence_ms // 1000)
        start = time.monotonic()
        last_speech_sent = start
        frames = [pcm[i:i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]
        speech_frames = len(frames)
        frames += [silence[i:i + frame_bytes] for i in range(0, len(silence), frame_bytes)]
        for index, frame in enumerate(frames):
            due = start + index * frame_ms / 1000 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.append_audio(frame)
            if index == speech_frames - 1:
                last_speech_sent = time.monotonic()
        return last_speech_sent

    async def events(self) -> AsyncIterator[ReceivedEvent]:
        async for message in self.websocket:
            yield ReceivedEvent(json.loads(message), time.monotonic())


def decode_audio_delta(event: dict[str, Any]) -> bytes:
    return base64.b64decode(event["delta"])


def silence_like(duration_ms: int) -> bytes:
    return np.zeros(WIRE_RATE * duration_ms // 1000, dtype="<i2").tobytes()
