"""In-process conversations: a session without a socket, its events the protocol's own dicts.

`LocalTransport` is the server's end (two queues); `LocalConversation` the app's. The session and the
connection machinery are the websocket's (server/connection.py), so code that handles these events
works unchanged against a remote server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from server.transport import TransportClosed

CLOSE_NORMAL = 1000


class ConversationClosed(EOFError):
    """The conversation has ended (the server closed it, or the app did)."""


def reply_audio(event: dict[str, Any]) -> bytes:
    """The PCM16 24 kHz reply audio an event carries (`response.output_audio.delta`), else b""."""
    return base64.b64decode(event["delta"]) if event.get("type") == "response.output_audio.delta" else b""


class LocalTransport:
    """Both ends of an in-process conversation: client messages in, server events out, as JSON text."""

    peer = "in-process"

    def __init__(self) -> None:
        self._to_server: asyncio.Queue[str | None] = asyncio.Queue()
        self._to_client: asyncio.Queue[str | None] = asyncio.Queue()
        self._unread = 0
        self._close_code: int | None = None

    # The server's end (server/transport.py's Transport).
    @property
    def close_code(self) -> int | None:
        return self._close_code

    async def recv(self) -> str:
        message = await self._to_server.get()
        if message is None:
            raise TransportClosed()
        return message

    async def send(self, data: str) -> None:
        if self._close_code is not None:
            raise TransportClosed()
        self._unread += len(data)
        self._to_client.put_nowait(data)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._close_code is None:
            self._close_code = code
            self._to_server.put_nowait(None)
            self._to_client.put_nowait(None)

    def buffered_bytes(self) -> int:
        return self._unread

    # The app's end: the same three calls a websocket client makes (send, recv, close).
    async def client_send(self, data: str) -> None:
        if self._close_code is not None:
            raise ConversationClosed(f"the conversation is closed ({self._close_code})")
        self._to_server.put_nowait(data)

    async def client_recv(self) -> str:
        message = await self._to_client.get()
        if message is None:
            self._to_client.put_nowait(None)  # every later read ends too
            raise ConversationClosed(f"the conversation is closed ({self._close_code})")
        self._unread -= len(message)
        return message


class LocalChannel:
    """The app's end of a LocalTransport with a websocket client's calls (send, recv, close): what
    clients.python.RealtimeClient runs over."""

    def __init__(self, transport: LocalTransport, session: asyncio.Task[None]) -> None:
        self.transport = transport
        self.session = session

    async def send(self, data: str) -> None:
        await self.transport.client_send(data)

    async def recv(self) -> str:
        return await self.transport.client_recv()

    async def close(self) -> None:
        await self.transport.close()
        await asyncio.gather(self.session, return_exceptions=True)  # its jobs are cancelled and awaited


class LocalConversation:
    """A Realtime conversation with the in-process server: push PCM, send text, cancel, read events.

    Use it as an async context manager (or call `close()`): closing ends the session and everything
    it started."""

    def __init__(self, channel: LocalChannel) -> None:
        self.channel = channel

    async def __aenter__(self) -> LocalConversation:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def send(self, event: dict[str, Any]) -> None:
        """Send any client event of the protocol (`session.update`, `response.create`, ...)."""
        await self.channel.send(json.dumps(event))

    async def append_audio(self, pcm: bytes) -> None:
        """Push microphone audio: PCM16, mono, 24 kHz, any length (20-100 ms frames are usual)."""
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")})

    async def commit(self) -> None:
        """End the user's turn by hand (push-to-talk, `turn_detection: null`)."""
        await self.send({"type": "input_audio_buffer.commit"})

    async def send_text(self, text: str, *, respond: bool = True) -> None:
        """Add a typed user message; with `respond`, ask for the assistant's reply to it."""
        await self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        if respond:
            await self.send({"type": "response.create"})

    async def cancel(self) -> None:
        """Stop the reply under way, if any (`output_audio_buffer.clear`: no error when none runs)."""
        await self.send({"type": "output_audio_buffer.clear"})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Keep only the first `audio_end_ms` of an assistant item: what the user actually heard."""
        await self.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": int(audio_end_ms)})

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The server events, as the websocket would send them, until the conversation ends."""
        while True:
            try:
                message = await self.channel.recv()
            except ConversationClosed:
                return
            yield json.loads(message)

    async def close(self) -> None:
        await self.channel.close()
