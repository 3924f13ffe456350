"""The websocket server: /v1/realtime (OpenAI Realtime protocol), / (web client), /healthz."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import mimetypes
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from server.config import SessionConfig
from server.connection import Connection
from voice.engine import Engine

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    max_message_bytes: int = 4 * 1024 * 1024
    model_name: str = "voice-cascade"


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body)


def _static(path: str) -> Response:
    relative = "index.html" if path in ("", "/") else path.lstrip("/")
    target = (WEB_ROOT / relative).resolve()
    if WEB_ROOT not in target.parents or not target.is_file():
        return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return _response(http.HTTPStatus.OK, target.read_bytes(), content_type)


class VoiceServer:
    """Owns the engine and the listening socket; one Connection per websocket client."""

    def __init__(self, engine: Engine, session_config: SessionConfig, options: ServerOptions) -> None:
        self.engine = engine
        self.session_config = session_config
        self.options = options
        self.sessions = 0
        self._server: Server | None = None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlparse(request.path).path
        if path == "/healthz":
            body = json.dumps({"status": "ok", "sessions": self.sessions}).encode()
            return _response(http.HTTPStatus.OK, body, "application/json")
        if path.rstrip("/") == REALTIME_PATH:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return _response(http.HTTPStatus.UPGRADE_REQUIRED, b"connect with a websocket\n",
                                 "text/plain; charset=utf-8")
            return None
        return _static(path)

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, subprotocols: list[str]) -> str | None:
        return "realtime" if "realtime" in subprotocols else None

    async def _handle(self, websocket: ServerConnection) -> None:
        self.sessions += 1
        try:
            await Connection(websocket, self.engine, self.session_config, self.options.model_name).run()
        except Exception:  # a session's failure never reaches the server
            log.exception("session crashed")
        finally:
            self.sessions -= 1

    async def start(self) -> Server:
        self._server = await serve(
            self._handle,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=self.options.max_message_bytes,
            ping_interval=20,
            ping_timeout=60,
        )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        server = await self.start()
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        log.info("listening on http://%s:%d (websocket %s)", self.options.host, self.port, REALTIME_PATH)
        print(f"voice server ready on ws://{self.options.host}:{self.port}{REALTIME_PATH}", flush=True)
        await stop
        server.close()
        await server.wait_closed()
        self.engine.close()
