"""The back-off on failed API keys: the policy in memory, then through the websocket (no models needed)."""

from __future__ import annotations

import pytest
import websockets
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.key_backoff import BackoffPolicy, KeyBackoff, client_address

KEY = "right-key"


def fail(backoff: KeyBackoff, times: int, now: float, address: str = "10.0.0.1") -> float | None:
    block = None
    for _ in range(times):
        block = backoff.failed(address, now)
    return block


def test_ten_failures_in_a_minute_block_the_address_for_a_minute():
    backoff = KeyBackoff()
    assert fail(backoff, 9, now=0.0) is None
    assert backoff.retry_after("10.0.0.1", 0.0) is None
    assert backoff.failed("10.0.0.1", 1.0) == 60.0
    assert backoff.retry_after("10.0.0.1", 1.0) == 60.0
    assert backoff.retry_after("10.0.0.1", 31.0) == 30.0
    assert backoff.retry_after("10.0.0.2", 31.0) is None  # only that address
    assert backoff.retry_after("10.0.0.1", 61.0) is None


def test_failures_spread_over_more_than_a_minute_do_not_block():
    backoff = KeyBackoff()
    for second in range(0, 700, 7):  # one failure every 7 s: under 10 in any minute
        assert backoff.failed("10.0.0.1", float(second)) is None


def test_each_further_block_doubles_up_to_an_hour():
    backoff = KeyBackoff()
    now, blocks = 0.0, []
    for _ in range(8):
        blocks.append(fail(backoff, 10, now))
        now += blocks[-1]
    assert blocks == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]


def test_a_valid_key_or_a_long_quiet_spell_forgives():
    backoff = KeyBackoff()
    assert fail(backoff, 10, now=0.0) == 60.0
    assert fail(backoff, 10, now=60.0) == 120.0
    backoff.succeeded("10.0.0.1")
    assert fail(backoff, 10, now=200.0) == 60.0
    assert fail(backoff, 10, now=260.0 + 3600.0) == 60.0  # an hour after the last block ended


def test_the_addresses_remembered_are_bounded():
    backoff = KeyBackoff(BackoffPolicy(max_addresses=100))
    for n in range(10_000):
        backoff.failed(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(backoff._records) == 100


def test_behind_a_proxy_on_loopback_the_forwarded_address_counts():
    assert client_address("127.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
    assert client_address("::1", ["198.51.100.1, 203.0.113.9"]) == "203.0.113.9"  # the hop the proxy added
    assert client_address("203.0.113.7", ["10.9.9.9"]) == "203.0.113.7"  # a remote peer's header is not trusted
    assert client_address("127.0.0.1", []) == "127.0.0.1"


@pytest.fixture
async def server():
    voice = VoiceServer(None, SessionConfig(), ServerOptions(port=0, api_key=KEY))
    listening = await voice.start()
    yield voice
    listening.close()
    await listening.wait_closed()


async def status_of(port: int, key: str, forwarded_for: str | None = None) -> tuple[int, Headers | None]:
    headers = {"Authorization": f"Bearer {key}", **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    try:
        websocket = await websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", additional_headers=headers)
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.headers
    await websocket.close()
    return 101, None


async def test_repeated_wrong_keys_get_429_with_retry_after_even_with_the_right_key(server):
    assert (await status_of(server.port, KEY))[0] == 101  # models still loading: the session is refused later
    for _ in range(10):
        assert (await status_of(server.port, "wrong"))[0] == 401
    for key in ("wrong", KEY):
        status, headers = await status_of(server.port, key)
        assert status == 429
        assert headers is not None and 0 < int(headers["Retry-After"]) <= 60
    # Another client behind the same reverse proxy is not held back.
    assert (await status_of(server.port, KEY, forwarded_for="203.0.113.9"))[0] == 101
