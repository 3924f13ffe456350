"""Whether the remote model servers (`--llm-url`, `--native-url`) answer: a TCP connect to each."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def unreachable(urls: dict[str, str], timeout_s: float = 1.0) -> dict[str, str]:
    """{backend: why} for each of `urls` ({backend: base URL}) that refuses or times out a connection.
    Blocking: call it from a worker thread. A connect, not a request, so a busy server still counts as up."""
    down = {}
    for name, url in urls.items():
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
                pass
        except OSError as exc:
            down[name] = f"{url}: {exc.strerror or exc or 'timed out'}"
    return down
