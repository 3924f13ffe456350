"""Access lines for the HTTP side of the server: method, path, status, client."""

from __future__ import annotations

import logging

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

log = logging.getLogger("server.access")

QUIET_PATHS = frozenset({"/healthz", "/metrics"})
"""Polled by monitors every few seconds: logged at DEBUG only."""


def client_address(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


def log_access(connection: ServerConnection, request: Request, response: Response) -> None:
    """websockets' process_response hook: one line per HTTP response (a websocket's 101 at DEBUG, since
    the session's own lines follow). The path is logged without its query, which may carry ?key=."""
    # A path that is no URL (already answered 400) is logged cut at its query all the same.
    path = request.path.split("?", 1)[0][:200]
    quiet = path in QUIET_PATHS or response.status_code == 101
    log.log(logging.DEBUG if quiet else logging.INFO, "GET %s %d %s", path, response.status_code,
            client_address(connection))
