"""The server inside an app: `async with VoiceServer(...)` (port, engine, metrics; models loaded once;
everything stopped on exit) and conversations without a socket, on the bundled models and real
recordings."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest

from clients.python.client import RealtimeClient, load_wav_pcm24
from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.local import LocalConversation, reply_audio
from tests.helpers import DATA, reference, wer
from tests.stand_in import StandInASR, StandInEnd, StandInLLM, StandInTTS
from voice.audio import WIRE_RATE, pcm16_to_float, rms_dbfs
from voice.engine import Engine

LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
FRAME = 960  # 20 ms of PCM16 at 24 kHz
STORYTELLER = {"type": "realtime", "max_output_tokens": 400, "temperature": 0.0,
               "instructions": "You are a storyteller who tells long, detailed stories."}


def embedded(engine: Engine) -> VoiceServer:
    return VoiceServer(engine, SessionConfig(), ServerOptions(port=0))


async def push_at_real_time(talk: LocalConversation, pcm: bytes) -> None:
    start = time.monotonic()
    for index in range(0, len(pcm), FRAME):
        await asyncio.sleep(max(0.0, start + index / 48_000 - time.monotonic()))
        await talk.append_audio(pcm[index:index + FRAME])


async def until(talk: LocalConversation, seen: list[dict], kind: str, timeout: float = 120.0) -> dict:
    async def read() -> dict:
        async for event in talk.events():
            seen.append(event)
            if event["type"] == kind:
                return event
        raise AssertionError(f"the conversation ended before {kind}")
    return await asyncio.wait_for(read(), timeout)


async def drain(source: LocalConversation | AsyncIterator) -> list:
    return [event async for event in (source.events() if isinstance(source, LocalConversation) else source)]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def shared_threads() -> set[threading.Thread]:
    """The app's engine's workers, and the event loop's default executor (the test's own calls use it)."""
    return {t for t in threading.enumerate() if t.name.startswith(("model", "asyncio_"))}


async def test_a_recorded_question_gets_its_transcript_and_a_spoken_reply_without_a_socket(engine):
    async with embedded(engine) as server, server.conversation() as talk:
        seen: list[dict] = []
        assert (await until(talk, seen, "session.created"))["session"]["model"]
        pusher = asyncio.create_task(push_at_real_time(talk, load_wav_pcm24(DATA / LAMP) + bytes(48 * 2500)))
        done = await until(talk, seen, "response.done")
        await pusher
    [heard] = [e["transcript"] for e in seen if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert wer(reference(LAMP), heard) <= 0.25, heard
    assert done["response"]["status"] == "completed"
    spoken = done["response"]["output"][0]["content"][0]["transcript"]
    assert spoken
    audio = b"".join(reply_audio(e) for e in seen)
    assert len(audio) / 2 / WIRE_RATE > 0.3 and rms_dbfs(pcm16_to_float(audio)) > -35
    assert float(done["response"]["metadata"]["first_audio_sent_ms"]) > 0
    assert server.metrics.sessions_total._value.get() == 1


async def test_cancel_stops_the_reply_under_way(engine):
    async with embedded(engine) as server, server.conversation() as talk:
        seen: list[dict] = []
        await talk.send({"type": "session.update", "session": STORYTELLER})
        await until(talk, seen, "session.updated")
        await talk.send_text("Tell me a long story about a brave dragon.")
        first = await until(talk, seen, "response.output_audio.delta")
        await talk.cancel()
        done = await until(talk, seen, "response.done")
        assert done["response"]["id"] == first["response_id"] and done["response"]["status"] == "cancelled"
        after = seen.index(done)
        await until(talk, seen, "output_audio_buffer.cleared", timeout=5)
        await talk.send_text("Say yes.")  # the conversation goes on
        nxt = await until(talk, seen, "response.done")
    assert nxt["response"]["status"] == "completed"
    assert not [e for e in seen[after:] if e.get("response_id") == first["response_id"]
                and e["type"] == "response.output_audio.delta"]


async def test_the_server_starts_and_stops_cleanly_with_the_apps_engine(engine):
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate()) - shared_threads()
    async with embedded(engine) as server:
        assert server.engine is engine and server.port > 0
        health = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/healthz")
        assert '"status": "ok"' in health
        talk = server.conversation()  # left open, as is a websocket client: the server's exit ends both
        assert (await talk.events().__anext__())["type"] == "session.created"
        remote = await RealtimeClient.connect(f"ws://127.0.0.1:{server.port}/v1/realtime")
        assert (await remote.events().__anext__()).type == "session.created"
        assert "voice_sessions_active 2.0" in server.metrics.render().decode()
        await talk.send_text("Hello!")
    await asyncio.wait_for(drain(talk), 5)  # the conversation has ended: reading it ends
    await asyncio.wait_for(drain(remote.events()), 5)
    assert remote.websocket.close_code == 1001  # going away
    await remote.close()
    assert asyncio.all_tasks() <= tasks_before
    assert set(threading.enumerate()) - shared_threads() <= threads_before
    with pytest.raises(OSError):
        await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/healthz")
    assert server.sessions == 0 and engine.jobs.waiting == 0
    # The engine is the app's: still there for the next server.
    async with embedded(engine) as again, again.conversation() as talk:
        assert (await talk.events().__anext__())["type"] == "session.created"


async def test_a_server_that_loads_its_models_loads_them_once_and_closes_them(silero):
    loads: list[Engine] = []

    def load() -> Engine:
        loads.append(Engine(StandInASR(), StandInLLM(), StandInTTS(), silero,  # type: ignore[arg-type]
                            workers=2, end_of_turn=StandInEnd()))  # type: ignore[arg-type]
        return loads[-1]

    server = VoiceServer(load_engine=load, options=ServerOptions(port=0))
    async with server:
        assert server.engine is loads[0] and server.metrics.models_ready._value.get() == 1
        async with server.conversation() as talk:
            seen: list[dict] = []
            await talk.send_text("Hi")
            assert (await until(talk, seen, "response.done", timeout=30))["response"]["status"] == "completed"
        assert loads[0].executor._threads
    assert len(loads) == 1 and server.engine is None
    assert not any(t.is_alive() for t in loads[0].executor._threads)  # its worker threads have ended
