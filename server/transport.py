"""What a connection needs of its transport: messages in and out, a close, and the unread output.

`Connection` runs one session over any `Transport`: a websocket (`WebsocketTransport`) or a pair of
in-process queues (server/local.py). Transports stay thin: everything else is the connection's.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.access_log import client_address


class TransportClosed(Exception):
    """The other end has gone: nothing more can be received or sent."""


class Transport(Protocol):
    peer: str
    """Who is at the other end, for the logs."""

    @property
    def close_code(self) -> int | None:
        """How the transport was closed (a websocket close code), None while open."""

    async def recv(self) -> str | bytes:
        """The client's next message; raises TransportClosed once it has gone."""

    async def send(self, data: str) -> None:
        """Send one server event (JSON text); raises TransportClosed once the client has gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close, telling the client why (websocket close codes)."""

    def buffered_bytes(self) -> int:
        """Output sent but not yet taken by the client (a socket's write buffer)."""


@runtime_checkable
class MediaTransport(Protocol):
    """A transport that carries some server events itself (WebRTC: the reply's audio on its track)."""

    def takes(self, event: dict[str, Any]) -> bool:
        """Whether the transport carried `event` itself (then it is not sent as a message)."""


class WebsocketTransport:
    """A websocket connection as a Transport."""

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        self.peer = client_address(websocket)

    @property
    def close_code(self) -> int | None:
        return self.websocket.close_code

    async def recv(self) -> str | bytes:
        try:
            return await self.websocket.recv()
        except ConnectionClosed as closed:
            raise TransportClosed() from closed

    async def send(self, data: str) -> None:
        try:
            await self.websocket.send(data)
        except ConnectionClosed as closed:
            raise TransportClosed() from closed

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code, reason)

    def buffered_bytes(self) -> int:
        transport = self.websocket.transport
        return transport.get_write_buffer_size() if transport is not None else 0
