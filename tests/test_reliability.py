"""Access control, limits, faults, disconnects and shutdown, against real servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import urllib.error
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import free_port, start_llama_server, start_voice_server, stop
from tests.realtime_sdk import clip

pytestmark = pytest.mark.slow

KEY = "test-key-123"
STORY = {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "Tell me a long story about a brave dragon."}]}}
STORY_SESSION = {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 400,
                                                        "temperature": 0.0,
                                                        "instructions": "You are a storyteller who tells long, "
                                                                        "detailed stories."}}


@pytest.fixture(scope="module")
def guarded_server(artifacts):
    process, port = start_voice_server(
        "--api-key", KEY, "--allowed-origins", "http://good.example", "--max-sessions", "2", "--idle-timeout", "3",
        "--max-message-bytes", "200000", "--max-send-buffer", "262144", "--max-buffer-seconds", "5",
        log_path=artifacts / "voice-server-guarded.log")
    yield port, process
    stop(process)


@pytest.fixture
async def guarded_server_idle(guarded_server):
    """The guarded server once the sessions of earlier tests have finished closing on its side."""
    port, _ = guarded_server
    for _ in range(100):
        if metrics(port).get("voice_sessions_active", 0) == 0:
            break
        await asyncio.sleep(0.1)
    return guarded_server


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime"


async def connect(port: int, **kwargs) -> websockets.ClientConnection:
    kwargs.setdefault("additional_headers", {"Authorization": f"Bearer {KEY}"})
    websocket = await websockets.connect(url(port), max_size=None, **kwargs)
    created = json.loads(await websocket.recv())
    assert created["type"] == "session.created", created
    return websocket


async def until(websocket, kind: str, timeout: float = 60.0) -> dict:
    async def read():
        while True:
            event = json.loads(await websocket.recv())
            if event["type"] == kind:
                return event
    return await asyncio.wait_for(read(), timeout)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# ---------------------------------------------------------------- access
async def test_no_key_or_a_wrong_key_is_refused_before_any_work(guarded_server_idle):
    port, _ = guarded_server_idle
    for headers in (None, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url(port), additional_headers=headers)
        assert refused.value.response.status_code == 401
    assert metrics(port)['voice_sessions_refused_total{reason="auth"}'] >= 2


async def test_key_as_bearer_header_sdk_and_browser_subprotocol(guarded_server_idle):
    port, _ = guarded_server_idle
    websocket = await connect(port)
    await websocket.close()
    websocket = await connect(port, additional_headers=None,
                              subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"])
    assert websocket.subprotocol == "realtime"
    await websocket.close()
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=KEY, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    async with client.realtime.connect(model="voice-cascade") as connection:
        assert (await connection.recv()).type == "session.created"


async def test_browser_origins_are_checked(guarded_server_idle):
    port, _ = guarded_server_idle
    with pytest.raises(InvalidStatus) as refused:
        await connect(port, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    websocket = await connect(port, origin="http://good.example")
    await websocket.close()


async def test_session_limit_refuses_clearly(guarded_server_idle):
    port, _ = guarded_server_idle
    first, second = await connect(port), await connect(port)
    third = await websockets.connect(url(port), additional_headers={"Authorization": f"Bearer {KEY}"})
    error = json.loads(await third.recv())
    assert error["type"] == "error" and error["error"]["code"] == "session_limit_reached"
    with pytest.raises(ConnectionClosed) as closed:
        await third.recv()
    assert closed.value.rcvd.code == 1013
    await first.close()
    await second.close()


# ---------------------------------------------------------------- limits
async def test_oversized_messages_and_overfull_buffers_get_errors_and_the_session_goes_on(guarded_server_idle):
    port, _ = guarded_server_idle
    websocket = await connect(port)
    await websocket.send(json.dumps({"type": "input_audio_buffer.append", "event_id": "big",
                                     "audio": base64.b64encode(bytes(180_000)).decode()}))
    error = await until(websocket, "error")
    assert error["error"]["code"] == "message_too_large"
    await websocket.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}}))
    await until(websocket, "session.updated")
    chunk = base64.b64encode(bytes(96_000)).decode()  # 2 s
    for _ in range(3):  # 6 s > the 5 s limit
        await websocket.send(json.dumps({"type": "input_audio_buffer.append", "event_id": "a", "audio": chunk}))
    error = await until(websocket, "error")
    assert error["error"]["code"] == "input_audio_buffer_full"
    await websocket.send(json.dumps({"type": "input_audio_buffer.clear"}))
    await until(websocket, "input_audio_buffer.cleared")
    await websocket.close()


async def test_an_idle_session_is_closed_with_a_reason(guarded_server_idle):
    port, _ = guarded_server_idle
    websocket = await connect(port)
    error = await until(websocket, "error", timeout=30)
    assert error["error"]["code"] == "idle_timeout"
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(websocket.recv(), 10)


async def test_a_client_that_does_not_read_is_closed_and_others_are_fine(guarded_server_idle):
    port, _ = guarded_server_idle
    before = metrics(port).get("voice_slow_clients_closed_total", 0)
    # A tiny receive queue and no reading: the server's send buffer fills up. The receive buffer is
    # bounded before connecting (after, Linux keeps the window it offered) so the kernel cannot take the reply.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    slow = await connect(port, max_queue=1, sock=sock, ping_interval=None)  # its pongs would go unread
    for event in (STORY_SESSION, STORY, {"type": "response.create"}):
        await slow.send(json.dumps(event))
    slow.transport.pause_reading()
    for n in range(480):
        await asyncio.sleep(0.25)
        if metrics(port).get("voice_slow_clients_closed_total", 0) > before:
            break
        if n % 4 == 0:  # story after story (an error while one is under way), more than the kernel's buffers hold
            await slow.send(json.dumps({"type": "response.create"}))
    assert metrics(port)["voice_slow_clients_closed_total"] > before
    slow.transport.abort()
    healthy = await connect(port)
    await healthy.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}))
    await healthy.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
    done = await until(healthy, "response.done")
    assert done["response"]["status"] == "completed"
    await healthy.close()


async def test_a_disconnect_mid_reply_stops_all_its_work(guarded_server_idle):
    port, process = guarded_server_idle

    def threads() -> int:
        status = open(f"/proc/{process.pid}/status").read()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    counts = []
    for _ in range(3):
        websocket = await connect(port)
        for event in (STORY_SESSION, STORY, {"type": "response.create"}):
            await websocket.send(json.dumps(event))
        await until(websocket, "response.output_audio.delta")
        websocket.transport.abort()  # gone mid-reply, without a close handshake
        for _ in range(100):
            await asyncio.sleep(0.1)
            values = metrics(port)
            if values["voice_jobs_running"] == 0 and values["voice_sessions_active"] == 0:
                break
        assert values["voice_jobs_running"] == 0
        assert values["voice_sessions_active"] == 0
        counts.append(threads())
    assert counts[2] <= counts[0]  # no thread left behind per session
    assert metrics(port)['voice_responses_total{status="cancelled"}'] >= 3


# ---------------------------------------------------------------- faults
async def test_llm_server_absent_gives_an_error_and_the_session_survives(artifacts):
    process, port = start_voice_server("--llm-url", f"http://127.0.0.1:{free_port()}/v1", "--llm-name", "x",
                                       log_path=artifacts / "voice-server-no-llm.log")
    try:
        websocket = await connect(port, additional_headers=None)
        for _ in range(2):
            await websocket.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}))
            await websocket.send(json.dumps({"type": "response.create"}))
            error = await until(websocket, "error")
            assert error["error"]["code"] == "llm_error" and "LLM server" in error["error"]["message"]
            done = await until(websocket, "response.done")
            assert done["response"]["status"] == "failed"
        await websocket.close()
    finally:
        stop(process)
    assert "llm_error" in (artifacts / "voice-server-no-llm.log").read_text()


async def test_llm_server_dying_mid_stream_then_coming_back(artifacts):
    llm_port = free_port()
    log = open(artifacts / "llama-server-fault.log", "wb")
    llm = start_llama_server(llm_port, log)
    voice, port = start_voice_server("--llm-url", f"http://127.0.0.1:{llm_port}/v1",
                                     log_path=artifacts / "voice-server-llm-fault.log")
    try:
        websocket = await connect(port, additional_headers=None)
        for event in (STORY_SESSION, STORY, {"type": "response.create"}):
            await websocket.send(json.dumps(event))
        await until(websocket, "response.output_audio.delta")
        llm.kill()  # the LLM server dies mid-stream
        llm.wait()
        error = await until(websocket, "error")
        assert error["error"]["code"] == "llm_error"
        done = await until(websocket, "response.done")
        assert done["response"]["status"] == "failed"
        llm = start_llama_server(llm_port, log)  # it comes back: the next turn works
        await websocket.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 30}}))
        done = await until(websocket, "response.done")
        assert done["response"]["status"] == "completed"
        await websocket.close()
    finally:
        stop(voice)
        stop(llm)


async def test_sigterm_closes_sessions_and_exits(artifacts):
    process, port = start_voice_server(log_path=artifacts / "voice-server-sigterm.log")
    websocket = await connect(port, additional_headers=None)
    await websocket.send(json.dumps({"type": "input_audio_buffer.append",
                                     "audio": base64.b64encode(clip("06_ps_goforward.wav")[:9600]).decode()}))
    process.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(websocket.recv(), 15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
    assert await asyncio.to_thread(process.wait, 15) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_health_and_metrics(guarded_server):
    port, _ = guarded_server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert json.loads(response.read())["status"] == "ok"
    values = metrics(port)
    assert values["voice_models_ready"] == 1
    assert "voice_sessions_active" in values
