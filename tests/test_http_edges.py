"""Plain HTTP at the websocket port: odd requests get a 4xx and leave no traceback (no models needed:
the server answers HTTP while its models load)."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import pytest

from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.http_edges import request_method


@pytest.fixture
async def server():
    voice = VoiceServer(None, SessionConfig(), ServerOptions(port=0, api_key="right-key"))
    listening = await voice.start()
    yield voice
    listening.close()
    await listening.wait_closed()


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer to its end: status, headers (lower-case names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


async def test_long_paths_and_nul_bytes_are_not_found(server, no_tracebacks):
    for path in (b"/" + b"a" * 5000, b"/" + b"a/" * 2000, b"/index.html\x00.png", b"/\x00"):
        status, _, _ = await exchange(server.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404, path[:40]
    status, _, _ = await exchange(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414  # past the request line limit of the websocket library
    status, _, _ = await exchange(server.port, b"GET //[x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert 400 <= status < 500


async def test_duplicate_headers_are_a_bad_request(server, no_tracebacks):
    upgrade = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    for doubled in (b"Origin: http://a\r\nOrigin: http://b\r\n",
                    b"Authorization: Bearer right-key\r\nAuthorization: Bearer right-key\r\n",
                    b"Upgrade: websocket\r\n", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"):
        request = b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n" + upgrade + doubled + b"\r\n"
        status, _, _ = await exchange(server.port, request)
        assert 400 <= status < 500, doubled


async def test_head_answers_the_headers_without_a_body(server, no_tracebacks):
    for path in (b"/", b"/healthz", b"/metrics", b"/nowhere"):
        got, got_headers, got_body = await exchange(server.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await exchange(server.port, b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == got and body == b"" and got_body
        if path != b"/metrics":  # its counters change between the two requests
            assert headers["content-length"] == got_headers["content-length"] == str(len(got_body))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_other_methods_get_405_with_allow_with_or_without_a_body(server, method, no_tracebacks):
    url = f"http://127.0.0.1:{server.port}/"

    def send(body: bytes | None) -> urllib.error.HTTPError:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=10)
        return refused.value

    for body in (None, b"x" * 100_000):
        refused = await asyncio.to_thread(send, body)
        refused.close()  # else its socket stays open, and the server waits for it to go
        assert refused.code == 405
        assert refused.headers["Allow"] == "GET, HEAD"
    chunked = f"{method} /v1/realtime HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    status, headers, _ = await exchange(server.port, chunked.encode())
    assert status == 405 and headers["allow"] == "GET, HEAD"


async def test_the_method_is_judged_from_the_first_bytes():
    assert request_method(b"GE") is None
    assert request_method(b"GET /") == "GET"
    assert request_method(b"POST") is None
    assert request_method(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdef") is not None  # TLS to a plain port
