"""The websocket server: /v1/realtime (OpenAI Realtime protocol), / (web client), /healthz, /metrics."""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import http
import json
import logging
import mimetypes
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from server.access_log import client_address, log_access
from server.config import SessionConfig
from server.connection import Connection, ConnectionLimits, refuse
from server.health import BackendHealth
from server.metrics import Metrics
from voice.engine import Engine

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"
_KEY_PROTOCOL = "openai-insecure-api-key."


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "voice-cascade"
    api_key: str | None = None
    """When set, every websocket must present it (Bearer header or subprotocol)."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to connect (empty: any). Requests without an Origin are not browsers."""
    max_sessions: int = 16
    limits: ConnectionLimits = ConnectionLimits()
    shutdown_grace_s: float = 5.0


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body)


def _json(status: http.HTTPStatus, payload: dict) -> Response:
    return _response(status, json.dumps(payload).encode(), "application/json")


def _static(path: str) -> Response:
    relative = "index.html" if path in ("", "/") else path.lstrip("/")
    target = (WEB_ROOT / relative).resolve()
    if WEB_ROOT not in target.parents or not target.is_file():
        return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return _response(http.HTTPStatus.OK, target.read_bytes(), content_type)


def release_freed_memory() -> None:
    """Hand heap memory freed by a finished session back to the OS (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def presented_keys(request: Request) -> list[str]:
    """API keys a request offers: `Authorization: Bearer` and the browser subprotocol."""
    keys = []
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        keys.append(authorization[7:].strip())
    for header in request.headers.get_all("Sec-WebSocket-Protocol"):
        keys += [p.strip()[len(_KEY_PROTOCOL):] for p in header.split(",") if p.strip().startswith(_KEY_PROTOCOL)]
    return keys


class VoiceServer:
    """Owns the engine and the listening socket; one Connection per websocket client."""

    def __init__(self, engine: Engine | None, session_config: SessionConfig, options: ServerOptions) -> None:
        self.engine = engine
        self.session_config = session_config
        self.options = options
        self.metrics = Metrics()
        self.metrics.models_ready.set(1 if engine else 0)
        self.sessions = 0
        self.backend_health = BackendHealth()
        self._server: Server | None = None

    def _authorized(self, request: Request) -> bool:
        key = self.options.api_key
        if not key:
            return True
        return any(hmac.compare_digest(offered.encode(), key.encode()) for offered in presented_keys(request))

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlparse(request.path).path
        if path == "/healthz":
            if self.engine is None:
                return _json(http.HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading models"})
            down = self.backend_health.down(self.engine)  # {"llm": why} for a model server that does not answer
            return _json(http.HTTPStatus.OK, {"status": "degraded" if down else "ok", "sessions": self.sessions,
                                              **({"down": down} if down else {})})
        if path == "/metrics":
            return _response(http.HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path.rstrip("/") != REALTIME_PATH:
            return _static(path)
        origin = request.headers.get("Origin")
        if self.options.allowed_origins and origin is not None and origin not in self.options.allowed_origins:
            self.metrics.sessions_refused.labels(reason="origin").inc()
            log.warning("refused a websocket from %s: origin %s", client_address(connection), origin)
            return _json(http.HTTPStatus.FORBIDDEN, {"error": f"origin {origin} is not allowed"})
        if not self._authorized(request):
            self.metrics.sessions_refused.labels(reason="auth").inc()
            log.warning("refused a websocket from %s: no valid API key", client_address(connection))
            return _json(http.HTTPStatus.UNAUTHORIZED, {"error": "a valid API key is required"})
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _response(http.HTTPStatus.UPGRADE_REQUIRED, b"connect with a websocket\n",
                             "text/plain; charset=utf-8")
        return None

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, subprotocols: list[str]) -> str | None:
        return "realtime" if "realtime" in subprotocols else None

    async def _handle(self, websocket: ServerConnection) -> None:
        if self.engine is None:
            self.metrics.sessions_refused.labels(reason="loading").inc()
            await refuse(websocket, "models_loading", "the server is still loading its models: retry shortly")
            return
        if self.sessions >= self.options.max_sessions:
            self.metrics.sessions_refused.labels(reason="busy").inc()
            await refuse(websocket, "session_limit_reached",
                         f"the server is at its limit of {self.options.max_sessions} sessions: retry later")
            return
        self.sessions += 1
        self.metrics.sessions_active.inc()
        self.metrics.sessions_total.inc()
        try:
            config = replace(self.session_config, pipelines=self.engine.pipelines)
            await Connection(websocket, self.engine, config, self.options.model_name,
                             self.options.limits, self.metrics).run()
        except Exception:  # a session's failure never reaches the server
            log.exception("session crashed")
        finally:
            self.sessions -= 1
            self.metrics.sessions_active.dec()
            release_freed_memory()

    async def start(self) -> Server:
        limits = self.options.limits
        self._server = await serve(
            self._handle,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            process_response=log_access,
            select_subprotocol=self._select_subprotocol,
            max_size=limits.max_message_bytes * 4,  # larger frames are refused by closing; see Connection
            ping_interval=20,
            ping_timeout=60,
        )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self, load_engine: Callable[[], Engine] | None = None) -> None:
        """Listen at once (so /healthz reports loading), load the models, serve until SIGINT/SIGTERM."""
        server = await self.start()
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        log.info("listening on http://%s:%d/ (loading the models)", self.options.host, self.port)
        try:
            if self.engine is None and load_engine is not None:
                self.engine = await asyncio.to_thread(load_engine)
                self.metrics.models_ready.set(1)
            log.info("voice server ready: the page on http://%s:%d/, the websocket on ws://%s:%d%s",
                     self.options.host, self.port, self.options.host, self.port, REALTIME_PATH)
            await stop
            log.info("shutting down: closing %d sessions", self.sessions)
        finally:
            server.close()  # stop accepting; open sessions are closed with 1001 (going away)
            try:
                await asyncio.wait_for(server.wait_closed(), self.options.shutdown_grace_s)
            except TimeoutError:
                log.warning("sessions did not close within %.0f s", self.options.shutdown_grace_s)
            if self.engine is not None:
                self.engine.close()
