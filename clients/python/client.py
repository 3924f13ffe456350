"""An asyncio client of the OpenAI Realtime protocol: this server's, or any other's.

It runs over a websocket (`RealtimeClient.connect(url)`) or over an in-process server's
conversation (`RealtimeClient.local(server)`), with the same calls and the same events. A reader
task takes every server event: it plays reply audio (with barge-in), answers tool calls, and
reconnects with backoff when the connection drops; `events()` yields what it read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import soundfile
import websockets
from websockets.exceptions import ConnectionClosed

from clients.python.backoff import Backoff
from clients.python.events import (
    Event,
    Typed,
    audio_append,
    output_audio_clear,
    response_create,
    typed,
    user_text,
)
from clients.python.playback import Playback, Player
from clients.python.tools import ToolCallback, ToolCalls
from voice.audio import WIRE_RATE, float_to_pcm16, resample

if TYPE_CHECKING:
    from server.app import VoiceServer

log = logging.getLogger(__name__)

# A websocket's, and an in-process conversation's (server/local.py ConversationClosed), end.
CLOSED = (ConnectionClosed, EOFError, OSError)
MAX_UNREAD_EVENTS = 10_000  # events kept for `events()`; an app that only uses the callbacks never reads them


class Channel(Protocol):
    """What the client runs over: a websocket client connection, or server/local.py's LocalChannel."""

    async def send(self, data: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


Opener = Callable[[], Awaitable[Channel]]


@dataclass(frozen=True)
class ReceivedEvent:
    event: dict[str, Any]
    at: float  # time.monotonic() on arrival

    @property
    def type(self) -> str:
        return str(self.event.get("type"))

    @property
    def typed(self) -> Typed | None:
        """The typed view (clients/python/events.py), for the kinds a client usually acts on."""
        return typed(self.event)


def load_wav_pcm24(path: str | Path) -> bytes:
    """Any audio file soundfile reads, as mono 24 kHz PCM16."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return float_to_pcm16(resample(samples.mean(axis=1), rate, WIRE_RATE))


def websocket_opener(url: str, api_key: str | None = None) -> Opener:
    async def open_websocket() -> Channel:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        return await websockets.connect(url, additional_headers=headers, max_size=None,
                                        subprotocols=[websockets.Subprotocol("realtime")])
    return open_websocket


class RealtimeClient:
    """Send events, stream audio, receive timestamped events; optionally play replies (`player`),
    answer tool calls (`on_tool_call`) and reconnect (`reconnect`, given an `opener`)."""

    def __init__(self, channel: Channel, *, opener: Opener | None = None, reconnect: Backoff | None = None,
                 player: Player | None = None, stop_on_speech: bool = False,
                 on_tool_call: ToolCallback | None = None, tool_follow_up: dict[str, Any] | None = None) -> None:
        self.websocket = channel  # (the name from when it was always one)
        self._opener = opener
        self._backoff = reconnect if opener is not None else None
        self.playback = Playback(player, stop_on_speech=stop_on_speech) if player is not None else None
        self.tools = ToolCalls(on_tool_call, self.send, tool_follow_up) if on_tool_call is not None else None
        self.reconnects = 0
        """How many times the connection was opened again after it dropped."""
        self.dropped_events = 0
        """Events `events()` never yielded: the oldest go once MAX_UNREAD_EVENTS wait unread."""
        self._session: dict[str, Any] = {}  # every session.update sent, merged: sent again on reconnecting
        self._received: asyncio.Queue[ReceivedEvent | None] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._connected.set()
        self._closing = False
        self._gave_up = False
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None, **options: Any) -> RealtimeClient:
        """A client over a websocket to `url`; `reconnect=Backoff()` opens it again when it drops."""
        opener = websocket_opener(url, api_key)
        client = cls(await opener(), opener=opener, **options)
        client._start()
        return client

    @classmethod
    async def local(cls, server: VoiceServer, **options: Any) -> RealtimeClient:
        """A client of an in-process server (server/app.py), without a socket."""
        async def opener() -> Channel:
            return server.conversation().channel

        client = cls(await opener(), opener=opener, **options)
        client._start()
        return client

    def _start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        """Close the connection; stop the reader and the tool calls under way."""
        self._closing = True
        if self.tools is not None:
            self.tools.cancel()
        try:
            await self.websocket.close()
        except CLOSED:
            pass
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.tools is not None:
            await asyncio.gather(*self.tools.tasks, return_exceptions=True)

    async def __aenter__(self) -> RealtimeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ sending
    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event; while reconnecting, it waits for the new connection."""
        if event.get("type") == "session.update":
            _merge(self._session, event.get("session", {}))
        data = json.dumps(event)
        while True:
            await self._connected.wait()
            channel = self.websocket
            try:
                return await channel.send(data)
            except CLOSED:
                if self._backoff is None or self._closing or self._gave_up:
                    raise
                while self.websocket is channel and not (self._closing or self._gave_up):
                    await asyncio.sleep(0.05)  # the reader opens the new connection

    async def append_audio(self, pcm: bytes) -> None:
        """Send microphone audio (PCM16 24 kHz); dropped while reconnecting (it would be stale)."""
        if not self._connected.is_set():
            return
        try:
            await self.websocket.send(json.dumps(audio_append(pcm)))
        except CLOSED:
            if self._backoff is None:
                raise

    async def send_text(self, text: str, *, respond: bool = True) -> None:
        """A typed user message; with `respond`, ask for the reply."""
        await self.send(user_text(text))
        if respond:
            await self.send(response_create())

    async def cancel(self) -> None:
        """Stop the reply: the player at once (with the truncate it calls for), then the server."""
        if self.playback is not None:
            for event in self.playback.stop():
                await self.send(event)
        await self.send(output_audio_clear())

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

    async def stream_microphone(self, frames: AsyncIterable[bytes]) -> None:
        """Send a live source's frames as they come (clients/python/devices.py's Microphone), until it ends."""
        async for frame in frames:
            await self.append_audio(frame)

    # ------------------------------------------------------------ receiving
    async def events(self) -> AsyncIterator[ReceivedEvent]:
        """The server's events as they arrive, until the connection ends for good. Several loops
        may take turns (one after the other, not at once)."""
        self._start()
        while (received := await self._received.get()) is not None:
            yield received
        self._received.put_nowait(None)  # the next loop ends at once too

    async def _read(self) -> None:
        try:
            while True:
                try:
                    message = await self.websocket.recv()
                except CLOSED:
                    if self._closing or self._backoff is None or not await self._reopen():
                        return
                    continue
                event = json.loads(message)
                received = ReceivedEvent(event, time.monotonic())
                try:
                    await self._observe(event)
                except CLOSED:
                    pass  # (a truncate for a connection that just dropped: the next read sees it)
                if self._received.qsize() >= MAX_UNREAD_EVENTS:
                    self._received.get_nowait()
                    self.dropped_events += 1
                self._received.put_nowait(received)
        finally:
            self._received.put_nowait(None)

    async def _observe(self, event: Event) -> None:
        if self.playback is not None:
            for reply in self.playback.observe(event):
                await self.send(reply)
        if self.tools is not None:
            self.tools.observe(event)

    async def _reopen(self) -> bool:
        """Open the connection again, waiting longer after each failure; False once it gives up."""
        assert self._backoff is not None and self._opener is not None
        self._connected.clear()
        if self.playback is not None:
            self.playback.stop()  # that reply's session is gone: nothing to truncate
        for wait in self._backoff.waits():
            await asyncio.sleep(wait)
            try:
                channel = await self._opener()
            except (*CLOSED, TimeoutError) as exc:
                log.info("reconnecting: %s; next try in a while", exc)
                continue
            self.websocket = channel
            self.reconnects += 1
            if self._session:  # the new session gets the settings the old one had
                await channel.send(json.dumps({"type": "session.update", "session": self._session}))
            self._connected.set()
            log.info("reconnected (%d)", self.reconnects)
            return True
        log.warning("gave up reconnecting")
        self._gave_up = True
        self._connected.set()  # sending fails now, rather than wait for ever
        return False


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def decode_audio_delta(event: dict[str, Any]) -> bytes:
    return base64.b64decode(event["delta"])


def silence_like(duration_ms: int) -> bytes:
    return np.zeros(WIRE_RATE * duration_ms // 1000, dtype="<i2").tobytes()
