"""Logging set-up: plain or JSON lines, each record tagged with the session it belongs to."""

from __future__ import annotations

import contextvars
import json
import logging
import time

session_id: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")

# Libraries whose INFO is per-request noise ("connection closed") and whose DEBUG is every raw frame:
# the server's own access and turn lines say what happened, so these log only their warnings.
_NOISY = ("websockets", "httpx", "httpcore", "openai", "urllib3", "asyncio", "faster_whisper")


class _SessionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session"):
            record.session = session_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "session": getattr(record, "session", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_SessionFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(session)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
