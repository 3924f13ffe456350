"""What a Connection needs of the channel to its client: messages in, messages out, a close.

The websocket is one such channel (WebsocketTransport); WebRTC's data channel and audio tracks are
another (server/webrtc_transport.py). The session logic above them is the same.
"""

from __future__ import annotations

from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.access_log import client_address


class TransportClosed(Exception):
    """The client's channel is gone."""


CLOSED = (ConnectionClosed, TransportClosed)
"""What a transport's recv, send and close raise once the client is gone."""


class Transport(Protocol):
    """A client's channel as a Connection uses it."""

    @property
    def peer(self) -> str:
        """The client's address, for the log."""
        ...

    @property
    def close_code(self) -> int | None:
        ...

    async def recv(self) -> str | bytes:
        ...

    async def send(self, data: str) -> None:
        ...

    async def close(self, code: int, reason: str) -> None:
        ...

    def unread_bytes(self) -> int:
        """Output sent but not yet taken by the client (held in the transport's buffers)."""
        ...

    def takes(self, event: dict[str, Any]) -> bool:
        """Whether the transport carries this server event itself (then it is not sent as a message)."""
        ...


class WebsocketTransport:
    """The websocket as a Transport: every event is a text message."""

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        self.recv = websocket.recv
        self.send = websocket.send
        self.close = websocket.close

    @property
    def peer(self) -> str:
        return client_address(self.websocket)

    @property
    def close_code(self) -> int | None:
        return self.websocket.close_code

    def unread_bytes(self) -> int:
        transport = self.websocket.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def takes(self, event: dict[str, Any]) -> bool:
        return False
