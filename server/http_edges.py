"""Plain HTTP requests the websocket library leaves to the application: methods other than GET,
HEAD, malformed headers. Answered with a 4xx, never a traceback or a dropped connection."""

from __future__ import annotations

import http
from dataclasses import replace

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

ALLOWED_METHODS = ("GET", "HEAD")
_METHOD_MAX = 16  # longer than any HTTP method: the request line is judged once this much has come


def plain(status: http.HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8",
          extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """An HTTP response with its length, never cached."""
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *extra])
    return Response(status.value, status.phrase, headers, body)


def method_not_allowed() -> Response:
    return plain(http.HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n",
                 extra=(("Allow", ", ".join(ALLOWED_METHODS)), ("Connection", "close")))


def bad_request(reason: str) -> Response:
    return plain(http.HTTPStatus.BAD_REQUEST, f"bad request: {reason}\n".encode())


def for_head(response: Response) -> Response:
    """The response to a HEAD request: a GET's headers (its Content-Length included), no body."""
    return replace(response, body=b"")


def request_method(head: bytes) -> str | None:
    """The method of a request whose first bytes are `head`, or None while more bytes are needed."""
    method, space, _ = head.partition(b" ")
    if not space and len(head) < _METHOD_MAX:
        return None
    return method.decode("latin-1")


class ScreenedConnection(ServerConnection):
    """A websocket server connection that answers a method other than GET or HEAD with 405 itself:
    the websocket library drops a request with a body (POST, PUT) without any response."""

    _head: bytes | None = b""  # the request's first bytes until its method is known; then None
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request is read and dropped
        if self._head is None:
            super().data_received(data)
            return
        head, self._head = self._head + data, None
        method = request_method(head)
        if method is None:
            self._head = head
        elif method in ALLOWED_METHODS:
            super().data_received(head)
        else:
            self.other_method(head)

    def other_method(self, head: bytes) -> None:
        """A request that is no websocket handshake (its first bytes, `head`): 405."""
        self.answer(method_not_allowed())

    def answer(self, response: Response) -> None:
        """Send a plain HTTP response and end the request (the rest of it is read and dropped)."""
        self._refused = True
        self.transport.write(response.serialize())
        # Half-close: the client reads the answer even while it still sends its body; the opening
        # handshake's timeout closes the connection if the client never closes its side.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def eof_received(self) -> None:
        if not self._refused:
            super().eof_received()
        # Returning None lets asyncio close the transport.
