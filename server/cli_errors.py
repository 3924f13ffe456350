"""The `voice` command's ordinary mistakes, each as one line a person can act on (exit code 2)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from voice.models import ModelNotFoundError


class UsageError(Exception):
    """A mistake in how the command was called or where it points: shown as one line, no traceback."""


def check_talk(args: argparse.Namespace) -> None:
    """Refuse what `voice talk` can tell is wrong before it connects."""
    if urlparse(args.url).scheme not in ("ws", "wss"):
        raise UsageError(f"--url {args.url}: not a websocket URL; use ws://HOST:PORT/v1/realtime (or wss://)")
    if not Path(args.file).is_file():
        raise UsageError(f"{args.file}: no such file")
    if args.tools and not Path(args.tools).is_file():
        raise UsageError(f"--tools {args.tools}: no such file")


def _listen_error(exc: OSError, args: argparse.Namespace) -> str | None:
    where = f"cannot listen on {args.host}:{args.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use (stop what holds it, or pass another --port)"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; pass --port 8000)"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else os.strerror(exc.errno)
        return f"{where}: {reason} (--host must be an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)"
    return None


def _talk_error(exc: BaseException, args: argparse.Namespace) -> str | None:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    url = args.url
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 401:
            return f"{url}: the server requires an API key: pass --api-key KEY or set VOICE_API_KEY"
        if status == 403:
            return f"{url}: the server refused this client (HTTP 403: origin not allowed)"
        return f"{url}: the server answered HTTP {status}, not a websocket (is this a voice server's /v1/realtime?)"
    if isinstance(exc, InvalidURI):
        return f"--url {url}: not a websocket URL; use ws://HOST:PORT/v1/realtime"
    if isinstance(exc, ConnectionClosed):
        reason = exc.rcvd.reason if exc.rcvd and exc.rcvd.reason else "no reason given"
        return f"{url}: the server closed the connection ({reason})"
    if isinstance(exc, InvalidHandshake):
        return f"{url}: not a websocket server ({exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"{url}: no server is listening there (start one with bin/serve, or pass --url)"
    if isinstance(exc, socket.gaierror):
        return f"{url}: unknown host ({exc.strerror})"
    if isinstance(exc, (TimeoutError, OSError)):
        return f"{url}: cannot connect ({exc.strerror or exc or type(exc).__name__})"
    return None


def explain(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for an ordinary mistake, or None for a real failure (whose traceback should show)."""
    if isinstance(exc, (UsageError, ModelNotFoundError)):
        return str(exc)
    if args.command == "talk":
        import soundfile

        if isinstance(exc, soundfile.LibsndfileError):
            return f"{args.file}: not an audio file soundfile can read ({exc.error_string})"
        return _talk_error(exc, args)
    if args.command in ("serve", "audio-api", "tts-api") and isinstance(exc, OSError):
        return _listen_error(exc, args)
    return None
