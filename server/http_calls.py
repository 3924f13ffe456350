"""The one HTTP request with a body the server takes: `POST /v1/realtime/calls` (WebRTC
signalling), with its CORS preflight. The websocket library reads only GET requests, so this
connection reads the request itself and hands it to the server's handler."""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from server.http_edges import ScreenedConnection, bad_request, plain

log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"
MAX_OFFER_BYTES = 256 * 1024  # a browser's offer is a few kilobytes

MAX_HEAD_BYTES = 16 * 1024
CallHandler = Callable[["CallsConnection", str, Request, bytes], Awaitable[Response]]


class CallsConnection(ScreenedConnection):
    """A server connection that also takes POST and OPTIONS at the calls path (405 elsewhere)."""

    handle_call: CallHandler | None = None  # set on a subclass by `calls_connection`
    _request: bytearray | None = None  # a call's request, while it comes in

    def data_received(self, data: bytes) -> None:
        if self._request is None:
            super().data_received(data)
            return
        self._request += data
        self._read_call()

    def other_method(self, head: bytes) -> None:
        self._request = bytearray(head)
        self._read_call()

    def _read_call(self) -> None:
        """Once the request has all come: its answer, from the handler (405 as soon as its request
        line shows it is not for the calls endpoint)."""
        assert self._request is not None
        line_end = self._request.find(b"\r\n")
        if line_end >= 0 or len(self._request) > MAX_HEAD_BYTES:
            method, _, rest = bytes(self._request[:line_end]).decode("latin-1").partition(" ")
            path = rest.rpartition(" ")[0]
            if method not in ("POST", "OPTIONS") or not _is_calls(path) or self.handle_call is None:
                self._request = None
                super().other_method(b"")
                return
        end = self._request.find(b"\r\n\r\n")
        if end < 0:
            if len(self._request) > MAX_HEAD_BYTES:
                self._stop(plain(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"headers too large\n"))
            return
        try:
            method, path, headers = _parse_head(bytes(self._request[:end]))
        except ValueError as exc:
            self._stop(bad_request(str(exc)))
            return
        try:
            length = int(headers.get("Content-Length", "0"))
        except ValueError:
            self._stop(bad_request("a bad Content-Length"))
            return
        if length > MAX_OFFER_BYTES or length < 0:
            self._stop(plain(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"the offer is too large\n"))
            return
        body = bytes(self._request[end + 4:])
        if len(body) < length:
            return
        self._request = None
        self._refused = True  # whatever else comes on this connection is dropped
        asyncio.ensure_future(self._respond(method, Request(path, headers), body[:length]))

    async def _respond(self, method: str, request: Request, body: bytes) -> None:
        assert self.handle_call is not None
        try:
            response = await self.handle_call(self, method, request, body)
        except Exception:  # a failed call never reaches the server
            log.exception("the calls request failed")
            response = plain(http.HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        response.headers["Connection"] = "close"  # one request per connection: the next would be dropped
        log.info("%s %s %d", method, request.path.split("?", 1)[0][:200], response.status_code)
        self.answer(response)

    def _stop(self, response: Response) -> None:
        self._request = None
        self.answer(response)


def _is_calls(path: str) -> bool:
    try:
        return urlparse(path).path.rstrip("/") == CALLS_PATH
    except ValueError:  # a path that is no URL
        return False


def _parse_head(head: bytes) -> tuple[str, str, Headers]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("a bad request line")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError("a bad header line")
        headers[name.strip()] = value.strip()
    return parts[0], parts[1], headers


def calls_connection(handler: CallHandler) -> type[CallsConnection]:
    """The connection class for `serve(create_connection=...)`, with calls answered by `handler`."""
    return type("ServerCallsConnection", (CallsConnection,), {"handle_call": staticmethod(handler)})
