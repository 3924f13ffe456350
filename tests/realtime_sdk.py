"""Drive the server with the official `openai` SDK's realtime client, as a stock client would."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from clients.python.client import load_wav_pcm24
from tests.helpers import DATA

FRAME_BYTES = 960  # 20 ms of PCM16 at 24 kHz


@dataclass
class Recorder:
    """Every event received, with its arrival time."""

    events: list[tuple[float, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[Any]:
        return [e for _, e in self.events if e.type == kind]

    def types(self) -> list[str]:
        return [e.type for _, e in self.events]

    async def wait_for(self, predicate, timeout: float = 90.0) -> Any:
        async def poll():
            while True:
                for _, event in self.events:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(poll(), timeout)


def sdk_client(port: int) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="unused-locally", websocket_base_url=f"ws://127.0.0.1:{port}/v1")


async def record(connection, recorder: Recorder) -> None:
    async for event in connection:
        recorder.events.append((time.monotonic(), event))
        recorder.changed.set()


async def stream_pcm(connection, pcm: bytes, *, trailing_silence_ms: int = 0) -> None:
    """Send audio in 20 ms frames at real-time pace, then silence."""
    pcm = pcm + bytes(48 * trailing_silence_ms)
    start = time.monotonic()
    for index in range(0, len(pcm), FRAME_BYTES):
        due = start + index / 48_000
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[index:index + FRAME_BYTES]).decode())


def clip(name: str) -> bytes:
    return load_wav_pcm24(DATA / name)
