"""The shared parts of this project's small OpenAI-compatible HTTP APIs (`voice audio-api`,
`voice tts-api`): OpenAI's error shape, JSON replies, the bearer key, logging."""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler
from typing import Any


class RequestError(ValueError):
    """A request the server refuses, with the OpenAI error fields."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


class JsonApiHandler(BaseHTTPRequestHandler):
    """A request handler whose server has an `api_key` (None: open)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's signature)
        # Logged as the API's own module (server.speech_api, server.audio_chat_api), as before.
        logging.getLogger(type(self).__module__).info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, {"error": {"message": str(error), "type": error.code,
                                                 "param": error.param, "code": error.code}})

    def _authorized(self) -> bool:
        key = self.server.api_key  # type: ignore[attr-defined]
        return not key or self.headers.get("Authorization", "") == f"Bearer {key}"
