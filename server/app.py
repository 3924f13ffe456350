"""The websocket server: /v1/realtime (OpenAI Realtime protocol), / (web client), /healthz, /metrics.

An app can run it inside itself: `async with VoiceServer(...)` listens and loads the models once,
and `server.conversation()` holds a session without a socket (server/local.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import http
import json
import logging
import math
import mimetypes
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import MultipleValuesError
from websockets.http11 import Request, Response

from server.access_log import client_address, log_access
from server.config import SessionConfig, transcription_session
from server.connection import Connection, ConnectionLimits, refuse
from server.health import BackendHealth
from server.http_calls import calls_connection
from server.http_edges import ALLOWED_METHODS, ScreenedConnection, bad_request, for_head, method_not_allowed, plain
from server.key_backoff import BackoffPolicy, KeyBackoff
from server.key_backoff import client_address as forwarded_address
from server.local import LocalChannel, LocalConversation, LocalTransport
from server.metrics import Metrics
from server.transport import Transport, WebsocketTransport
from server.webrtc_calls import webrtc_calls
from voice.engine import Engine

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"
_KEY_PROTOCOL = "openai-insecure-api-key."
MAX_PATH_CHARS = 1024  # no file the page serves has a longer path


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
    key_backoff: BackoffPolicy = BackoffPolicy()
    """When an address that keeps presenting wrong keys is refused with 429 for a while."""
    shutdown_grace_s: float = 5.0


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    return plain(status, body, content_type)


def _json(status: http.HTTPStatus, payload: dict) -> Response:
    return _response(status, json.dumps(payload).encode(), "application/json")


def _static(path: str) -> Response:
    not_found = _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    if len(path) > MAX_PATH_CHARS or "\x00" in path:
        return not_found
    relative = "index.html" if path in ("", "/") else path.lstrip("/")
    try:
        target = (WEB_ROOT / relative).resolve()
        if WEB_ROOT not in target.parents or not target.is_file():
            return not_found
    except (OSError, ValueError):  # a name the file system refuses (too long, a NUL): nothing is there
        return not_found
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return _response(http.HTTPStatus.OK, target.read_bytes(), content_type)


def _intent(websocket: ServerConnection) -> str | None:
    """The `intent` query parameter of the websocket's URL (`?intent=transcription`)."""
    request = websocket.request
    if request is None:
        return None
    try:
        values = parse_qs(urlparse(request.path).query).get("intent")
    except ValueError:
        return None
    return values[0] if values else None


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
    """Owns the engine and the listening socket; one Connection per client, websocket or in-process.

    As an async context manager it listens, loads the models (with `load_engine`, in a worker
    thread) and, on exit, closes every session and the engine it loaded (one it was given is the
    caller's)."""

    def __init__(self, engine: Engine | None = None, session_config: SessionConfig | None = None,
                 options: ServerOptions | None = None, *, load_engine: Callable[[], Engine] | None = None) -> None:
        session_config = session_config if session_config is not None else SessionConfig()
        options = options if options is not None else ServerOptions()
        self.engine = engine
        self._load_engine = load_engine
        self._owns_engine = engine is None
        self.session_config = session_config
        self.options = options
        self.metrics = Metrics()
        self.metrics.models_ready.set(1 if engine else 0)
        self.metrics.jobs_waiting.set_function(lambda: self.engine.jobs.waiting if self.engine is not None else 0)
        self.sessions = 0
        self.key_backoff = KeyBackoff(options.key_backoff)
        self.backend_health = BackendHealth()
        self._server: Server | None = None
        self._local: set[LocalChannel] = set()  # in-process conversations still open
        self._port: int | None = None
        self._calls = webrtc_calls(self)  # None without aiortc (the `webrtc` extra)

    def _authorized(self, request: Request) -> bool:
        key = self.options.api_key
        if not key:
            return True
        return any(hmac.compare_digest(offered.encode(), key.encode()) for offered in presented_keys(request))

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method not in ALLOWED_METHODS:
            return method_not_allowed()
        try:
            response = self._route(connection, request)
        except MultipleValuesError as exc:  # a header that must come once came twice
            return bad_request(f"duplicate header {exc}")
        return for_head(response) if response is not None and request.method == "HEAD" else response

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            path = urlparse(request.path).path
        except ValueError as exc:  # a path that is no URL ("//[x")
            return bad_request(str(exc))
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
        refused = self.admit(connection, request)
        if refused is not None:
            return refused
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _response(http.HTTPStatus.UPGRADE_REQUIRED, b"connect with a websocket\n",
                             "text/plain; charset=utf-8")
        return None

    def origin_allowed(self, origin: str | None) -> bool:
        return not self.options.allowed_origins or origin is None or origin in self.options.allowed_origins

    def admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """The refusal of a session's request (websocket or WebRTC call) for its origin or key, if any."""
        origin = request.headers.get("Origin")
        if not self.origin_allowed(origin):
            self.metrics.sessions_refused.labels(reason="origin").inc()
            log.warning("refused a session from %s: origin %s", client_address(connection), origin)
            return _json(http.HTTPStatus.FORBIDDEN, {"error": f"origin {origin} is not allowed"})
        if self.options.api_key:
            return self._check_key(connection, request)
        return None

    def _check_key(self, connection: ServerConnection, request: Request) -> Response | None:
        """401 for a wrong or missing key; 429 while the client's address is backing off from many."""
        peer = connection.remote_address[0] if connection.remote_address else ""
        address = forwarded_address(str(peer), request.headers.get_all("X-Forwarded-For"))
        now = time.monotonic()
        wait = self.key_backoff.retry_after(address, now)
        if wait is not None:  # the key is not even checked, so guessing on goes nowhere
            self.metrics.sessions_refused.labels(reason="backoff").inc()
            response = _json(http.HTTPStatus.TOO_MANY_REQUESTS, {"error": "too many wrong API keys: retry later"})
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        if self._authorized(request):
            self.key_backoff.succeeded(address)
            return None
        self.metrics.sessions_refused.labels(reason="auth").inc()
        block = self.key_backoff.failed(address, now)
        if block is not None:
            log.warning("%s presented too many wrong API keys: refused for %.0f s", address, block)
        else:
            log.warning("refused a session without a valid API key")
        return _json(http.HTTPStatus.UNAUTHORIZED, {"error": "a valid API key is required"})

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, subprotocols: list[str]) -> str | None:
        return "realtime" if "realtime" in subprotocols else None

    async def _handle(self, websocket: ServerConnection) -> None:
        # OpenAI's URL for a transcription session: /v1/realtime?intent=transcription
        await self._run_session(WebsocketTransport(websocket), transcription=_intent(websocket) == "transcription")

    def unavailable(self) -> tuple[str, str] | None:
        """Why no session can open now (error code, message), counted as a refusal; None if one can."""
        if self.engine is None:
            self.metrics.sessions_refused.labels(reason="loading").inc()
            return "models_loading", "the server is still loading its models: retry shortly"
        if self.sessions >= self.options.max_sessions:
            self.metrics.sessions_refused.labels(reason="busy").inc()
            return ("session_limit_reached",
                    f"the server is at its limit of {self.options.max_sessions} sessions: retry later")
        return None

    def base_config(self, transcription: bool = False) -> SessionConfig:
        """A new session's configuration (the engine must be loaded)."""
        assert self.engine is not None
        config = replace(self.session_config, pipelines=self.engine.pipelines, voices=self.engine.voices,
                         asr_languages=getattr(self.engine.asr, "languages", None))
        return transcription_session(config) if transcription else config

    async def _run_session(self, transport: Transport, transcription: bool = False,
                           config: SessionConfig | None = None) -> None:
        """One client's session over its transport, within the server's limits (`config`: one made
        from `base_config` already, as a WebRTC call's offer sets it)."""
        unavailable = self.unavailable()
        if unavailable is not None:
            await refuse(transport, *unavailable)
            return
        assert self.engine is not None
        self.sessions += 1
        self.metrics.sessions_active.inc()
        self.metrics.sessions_total.inc()
        try:
            config = config or self.base_config(transcription)
            await Connection(transport, self.engine, config, self.options.model_name,
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
            create_connection=calls_connection(self._calls.handle) if self._calls else ScreenedConnection,
            max_size=limits.max_message_bytes * 4,  # larger frames are refused by closing; see Connection
            ping_interval=20,
            ping_timeout=60,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self._server

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose for `port=0`)."""
        assert self._port is not None, "the server has not started"
        return self._port

    async def load(self) -> Engine:
        """Load the models (in a worker thread: the socket answers /healthz meanwhile), once."""
        if self.engine is None:
            if self._load_engine is None:
                raise RuntimeError("the server has no engine and nothing to load one with")
            self.engine = await asyncio.to_thread(self._load_engine)
            self.metrics.models_ready.set(1)
        return self.engine

    def conversation(self) -> LocalConversation:
        """A new session without a socket (server/local.py), as a websocket client would get one."""
        transport = LocalTransport()
        channel = LocalChannel(transport, asyncio.ensure_future(self._run_session(transport)))
        self._local.add(channel)
        channel.session.add_done_callback(lambda _: self._local.discard(channel))
        return LocalConversation(channel)

    async def __aenter__(self) -> VoiceServer:
        await self.start()
        try:
            await self.load()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.stop()

    async def stop(self, *, join_workers: bool = True) -> None:
        """Stop accepting, close every session (websockets with 1001, going away) and wait for them
        and their model work; close the engine if this server loaded it (and, with `join_workers`,
        wait for its worker threads to end)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._calls is not None:
            await self._calls.close_all()
        for channel in list(self._local):
            await channel.transport.close(1001, "the server is shutting down")
        waiting = [channel.session for channel in self._local]
        try:
            async with asyncio.timeout(self.options.shutdown_grace_s):
                if server is not None:
                    await server.wait_closed()
                if waiting:
                    await asyncio.wait(waiting)
        except TimeoutError:
            log.warning("sessions did not close within %.0f s", self.options.shutdown_grace_s)
        if self.engine is not None and self._owns_engine:
            engine, self.engine = self.engine, None
            self.metrics.models_ready.set(0)
            engine.close()
            if not join_workers:
                return
            try:  # its worker threads end here (a model call never cut short could hold one: not forever)
                await asyncio.wait_for(asyncio.to_thread(engine.executor.shutdown, wait=True),
                                       self.options.shutdown_grace_s)
            except TimeoutError:
                log.warning("model work did not end within %.0f s", self.options.shutdown_grace_s)

    async def serve_forever(self, load_engine: Callable[[], Engine] | None = None) -> None:
        """Listen at once (so /healthz reports loading), load the models, serve until SIGINT/SIGTERM."""
        await self.start()
        self._load_engine = load_engine or self._load_engine
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        log.info("listening on http://%s:%d/ (loading the models)", self.options.host, self.port)
        try:
            if self._load_engine is not None:
                await self.load()
            log.info("voice server ready: the page on http://%s:%d/, the websocket on ws://%s:%d%s",
                     self.options.host, self.port, self.options.host, self.port, REALTIME_PATH)
            await stop
            log.info("shutting down: closing %d sessions", self.sessions)
        finally:
            self._owns_engine = True  # serving until a signal: the engine goes with the server
            await self.stop(join_workers=False)  # the process ends: no need to wait for idle threads
