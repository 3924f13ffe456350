"""Every promise of the README's "Security and limits", through the websocket, at its default value
where a test can wait for it (else the default flows in, tests/test_transport_units.py, and the
mechanism is shown here with a small value). The LLM and the voice are stand-ins (tests/standins.py)
so replies are as long as a limit needs; the VAD is real."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from clients.python.client import load_wav_pcm24
from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig, TurnDetection
from server.connection import ConnectionLimits
from server.session import RealtimeSession
from tests.helpers import DATA
from tests.standins import NoiseSynth, ScriptedChat, standin_engine
from voice.vad import VadConfig

MIB = 1024 * 1024
DEFAULTS = ConnectionLimits()
TEXT_TURN = {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "Tell me a story."}]}}


@asynccontextmanager
async def serving(engine, limits: ConnectionLimits = DEFAULTS) -> AsyncIterator[VoiceServer]:
    server = VoiceServer(engine, SessionConfig(), ServerOptions(port=0, limits=limits))
    listening = await server.start()
    try:
        yield server
    finally:
        listening.close()
        await listening.wait_closed()
        engine.close()


async def connect(server: VoiceServer, **kwargs) -> websockets.ClientConnection:
    websocket = await websockets.connect(f"ws://127.0.0.1:{server.port}/v1/realtime", max_size=None, **kwargs)
    assert json.loads(await websocket.recv())["type"] == "session.created"
    return websocket


async def until(websocket, kind: str, timeout: float = 60.0, seen: list | None = None) -> dict:
    async def read() -> dict:
        while True:
            event = json.loads(await websocket.recv())
            if seen is not None:
                seen.append(event)
            if event["type"] == kind:
                return event
    return await asyncio.wait_for(read(), timeout)


async def closed_code(websocket, timeout: float = 60.0) -> int | None:
    """Read to the end; the close code the server sent (None: no close frame came)."""
    async def drain() -> None:
        while True:
            await websocket.recv()
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def slow_clients_closed(server: VoiceServer) -> float:
    return server.metrics.registry.get_sample_value("voice_slow_clients_closed_total") or 0.0


# ---------------------------------------------------------------- unread output
@pytest.fixture
async def long_replies(silero):
    """Default limits; each reply is 8 sentences of 6 s of audio (about 2.5 MB on the wire)."""
    async with serving(standin_engine(silero, ScriptedChat(sentences=8), NoiseSynth(0.2))) as server:
        yield server


@pytest.fixture
async def small_send_buffer(silero):
    limits = ConnectionLimits(max_send_buffer_bytes=64 * 1024)
    async with serving(standin_engine(silero, ScriptedChat(sentences=8), NoiseSynth(0.2)), limits) as server:
        yield server


async def test_a_reading_client_is_never_closed_even_at_a_64_kib_send_buffer(small_send_buffer):
    # Each reply comes in bursts far over 64 KiB, queued at once; a client that reads drains them.
    websocket = await connect(small_send_buffer)
    await websocket.send(json.dumps(TEXT_TURN))
    received = 0
    for _ in range(3):
        await websocket.send(json.dumps({"type": "response.create"}))
        events: list[dict] = []
        done = await until(websocket, "response.done", seen=events)
        assert done["response"]["status"] == "completed"
        received += sum(len(e.get("delta", "")) for e in events if e["type"] == "response.output_audio.delta")
    assert received > 100 * 64 * 1024
    assert slow_clients_closed(small_send_buffer) == 0
    await websocket.close()
    assert websocket.close_code == 1000


async def test_a_client_that_does_not_read_is_closed_with_1008_at_the_default_16_mib(silero):
    # 40 sentences of 17 s of audio: about 45 MB, far more than the kernel's buffers and 16 MiB hold.
    async with serving(standin_engine(silero, ScriptedChat(sentences=40), NoiseSynth(0.5))) as server:
        # A receive buffer bounded before connecting (after, Linux keeps the window it offered), so the
        # kernel cannot take tens of MB for the client; large enough to read the rest quickly at the end.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        slow = await connect(server, max_queue=1, sock=sock, ping_interval=None)  # its pongs would go unread
        await slow.send(json.dumps(TEXT_TURN))
        await slow.send(json.dumps({"type": "response.create"}))
        slow.transport.pause_reading()
        for _ in range(600):
            if slow_clients_closed(server):
                break
            await asyncio.sleep(0.1)
        assert slow_clients_closed(server) == 1
        slow.transport.resume_reading()  # it reads again: what the server had sent, then its close
        assert await closed_code(slow) == 1008
        # The server is fine: the next client gets its reply.
        healthy = await connect(server)
        await healthy.send(json.dumps(TEXT_TURN))
        await healthy.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        assert (await until(healthy, "response.done"))["response"]["status"] == "completed"
        await healthy.close()


# ---------------------------------------------------------------- message size
async def test_oversized_messages_at_the_default_1_mib_name_their_event_and_4x_closes(long_replies):
    websocket = await connect(long_replies)
    # 3 MB of UTF-8 in 1 M characters: over the limit in bytes, not in characters.
    wide = json.dumps({"type": "session.update", "event_id": "wide", "session": {"instructions": "語" * 1_000_000}},
                      ensure_ascii=False)
    assert len(wide) < MIB < len(wide.encode())
    await websocket.send(wide)
    error = await until(websocket, "error")
    assert error["error"]["code"] == "message_too_large" and error["error"]["event_id"] == "wide"
    # Four oversized messages (the event_id at either end): four errors, and the session goes on.
    audio = base64.b64encode(bytes(MIB)).decode()  # 1.33 MiB of base64
    for n in range(4):
        event = {"type": "input_audio_buffer.append", "audio": audio}
        first, last = {"event_id": f"big{n}", **event}, {**event, "event_id": f"big{n}"}
        await websocket.send(json.dumps(first if n % 2 else last))
        error = await until(websocket, "error")
        assert error["error"]["code"] == "message_too_large" and error["error"]["event_id"] == f"big{n}"
    await websocket.send(json.dumps({"type": "session.update", "event_id": "small", "session": {
        "instructions": "語" * 1000}}, ensure_ascii=False))
    updated = await until(websocket, "session.updated")
    assert updated["session"]["instructions"] == "語" * 1000
    # A message over 4 times the limit is not read at all: the socket is closed (1009, too big).
    await websocket.send("x" * (4 * DEFAULTS.max_message_bytes + 1))
    assert await closed_code(websocket) == 1009


# ---------------------------------------------------------------- idle and expiry
@pytest.fixture
async def held_reply(silero):
    """A server with a 1 s idle timeout whose replies last until the test releases them."""
    hold = threading.Event()
    engine = standin_engine(silero, ScriptedChat(sentences=3, hold=hold))
    async with serving(engine, ConnectionLimits(idle_timeout_s=1.0)) as server:
        yield server, hold
    hold.set()


async def test_a_session_listening_to_a_reply_is_not_idle_and_the_idle_close_is_1000(held_reply):
    server, hold = held_reply
    websocket = await connect(server)
    await websocket.send(json.dumps(TEXT_TURN))
    await websocket.send(json.dumps({"type": "response.create"}))
    events: list[dict] = []
    await until(websocket, "response.output_audio.delta", seen=events)
    await asyncio.sleep(3.0)  # three idle timeouts with no client event, while the reply goes on
    hold.set()
    done = await until(websocket, "response.done", seen=events)
    assert done["response"]["status"] == "completed"
    assert not [e for e in events if e["type"] == "error"]
    error = await until(websocket, "error")  # then, quiet for the idle timeout: closed
    assert error["error"]["code"] == "idle_timeout" and error["error"]["event_id"] is None
    assert await closed_code(websocket) == 1000


async def test_a_session_expires_at_its_maximum_length_however_busy_with_1000(silero):
    # The default (3600 s) flows into the same deadline: tests/test_transport_units.py.
    async def keep_talking(websocket: websockets.ClientConnection) -> None:
        while True:
            await websocket.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await asyncio.sleep(0.2)

    async with serving(standin_engine(silero, ScriptedChat()), ConnectionLimits(max_session_s=2.0)) as server:
        websocket = await connect(server)
        talker = asyncio.create_task(keep_talking(websocket))
        try:
            error = await until(websocket, "error", timeout=30)
        finally:
            talker.cancel()
        assert error["error"]["code"] == "session_expired"
        assert await closed_code(websocket) == 1000


# ---------------------------------------------------------------- input audio (sans-I/O, real VAD)
def pcm(name: str) -> bytes:
    return load_wav_pcm24(DATA / name)


def append(audio: bytes, event_id: str | None = None) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode(),
                       **({"event_id": event_id} if event_id else {})})


def test_the_input_buffer_is_full_at_the_default_120_s_and_the_error_names_the_event(silero):
    # As Connection builds its session, from the default limits; audio sent at real-time pace.
    session = RealtimeSession(SessionConfig(turn_detection=None), silero,
                              max_buffer_seconds=DEFAULTS.max_buffer_seconds)
    now, second = 0.0, bytes(48_000)
    for n in range(120):
        now += 1.0
        out = session.receive_client(append(second, f"a{n}"), now)
        assert not [e for e in out.events if e["type"] == "error"], n
    out = session.receive_client(append(second, "one-too-many"), now + 1.0)
    [error] = [e for e in out.events if e["type"] == "error"]
    assert error["error"]["code"] == "input_audio_buffer_full" and error["error"]["event_id"] == "one-too-many"


def test_a_server_vad_turn_is_closed_after_the_default_60_s_of_speech(silero):
    # Speech with no pause as long as the 10 s silence window: only the cap on a turn's length ends it.
    detection = TurnDetection(vad=VadConfig(silence_duration_ms=10_000))
    session = RealtimeSession(SessionConfig(turn_detection=detection), silero,
                              max_buffer_seconds=DEFAULTS.max_buffer_seconds)
    speech = b"".join(pcm(name) for name in ("09_jfk.wav", "17_sb_LJ050-0131.wav", "18_rstt_LJ001-0004.wav"))
    stream = speech * (1 + 75 * 48_000 // len(speech))
    now, events = 0.0, []
    for start in range(0, 75 * 48_000, 4800):  # 100 ms messages, at real-time pace
        now += 0.1
        events += session.receive_client(append(stream[start:start + 4800]), now).events
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert started and stopped
    length_ms = stopped[0]["audio_end_ms"] - started[0]["audio_start_ms"]
    assert 59_000 <= length_ms <= 61_000  # audio time: the 60 s cap, not a pause
