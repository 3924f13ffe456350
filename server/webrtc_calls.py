"""The server's side of `POST /v1/realtime/calls`: admit the call as a websocket is admitted (origin,
API key, session limit), answer its offer, and run its session over the peer until it ends."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from websockets.http11 import Request, Response

from server.access_log import client_address
from server.client_events import parse_client_event
from server.config import SessionConfig
from server.http_calls import CALLS_PATH, CallsConnection
from server.http_edges import plain
from server.session_update import apply_session_update
from server.wire import ProtocolError

if TYPE_CHECKING:
    from server.app import VoiceServer
    from server.webrtc_transport import WebRtcTransport

log = logging.getLogger(__name__)

PREFLIGHT_MAX_AGE_S = 600


def webrtc_calls(server: VoiceServer) -> Calls | None:
    """The calls endpoint of `server`, or None where aiortc (the `webrtc` extra) is not installed."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return None
    return Calls(server)


def _error(status: http.HTTPStatus, message: str, code: str, kind: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return plain(status, json.dumps(body).encode(), "application/json")


def session_config(base: SessionConfig, session: dict[str, Any] | None) -> SessionConfig:
    """The configuration a call starts with: the server's, updated by the offer's `session` as a
    `session.update` would be (raises ProtocolError)."""
    if not session:
        return base
    event = parse_client_event(json.dumps({"type": "session.update", "session": session}))
    return apply_session_update(base, event.session, None)  # type: ignore[attr-defined]


class Calls:
    """WebRTC calls: each a session of the server's, over its peer connection."""

    def __init__(self, server: VoiceServer) -> None:
        self.server = server
        self._running: dict[WebRtcTransport, asyncio.Task[None]] = {}

    def _cors(self, request: Request) -> list[tuple[str, str]]:
        """CORS headers for a browser page of another origin (when that origin is allowed)."""
        origin = request.headers.get("Origin")
        if origin is None or not self.server.origin_allowed(origin):
            return []
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                ("Access-Control-Expose-Headers", "Location")]

    async def handle(self, connection: CallsConnection, method: str, request: Request, body: bytes) -> Response:
        response = await self._answer(connection, method, request, body)
        for name, value in self._cors(request):
            response.headers[name] = value
        return response

    async def _answer(self, connection: CallsConnection, method: str, request: Request, body: bytes) -> Response:
        if method == "OPTIONS":
            response = plain(http.HTTPStatus.NO_CONTENT, b"")
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", "Authorization, Content-Type")
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
            return response
        refused = self.server.admit(connection, request)
        if refused is not None:
            return refused
        from server.webrtc import OfferError, answer_offer, parse_offer  # aiortc: only once a call comes

        if (unavailable := self.server.unavailable()) is not None:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, unavailable[1], unavailable[0], "server_error")
        try:
            offer = parse_offer(request.headers.get("Content-Type", ""), body)
            config = session_config(self.server.base_config(), offer.session)
            answer, transport = await answer_offer(offer.sdp, client_address(connection))
        except OfferError as exc:
            return _error(http.HTTPStatus.BAD_REQUEST, str(exc), "invalid_offer")
        except ProtocolError as exc:
            return _error(http.HTTPStatus.BAD_REQUEST, str(exc), exc.code or "invalid_session")
        self._running[transport] = asyncio.create_task(self._run(transport, config))
        call_id = f"rtc_{secrets.token_hex(12)}"
        log.info("WebRTC call %s from %s", call_id, transport.peer)
        response = plain(http.HTTPStatus.CREATED, answer.encode(), "application/sdp")
        response.headers["Location"] = f"{CALLS_PATH}/{call_id}"
        return response

    async def _run(self, transport: WebRtcTransport, config: SessionConfig) -> None:
        try:
            # (Within the limits again: a call admitted at the limit's edge hears why on its data channel.)
            await self.server._run_session(transport, config=config)
        finally:
            await transport.close()  # the peer, its tracks and its tasks
            self._running.pop(transport, None)

    async def close_all(self) -> None:
        """Shutting down: every call ends (1001, going away)."""
        await asyncio.gather(*(transport.close(1001, "going away") for transport in list(self._running)),
                             return_exceptions=True)
        await asyncio.gather(*self._running.values(), return_exceptions=True)
