"""server_vad's `idle_timeout_ms`: a silence that long is committed as a user item and answered,
with `input_audio_buffer.timeout_triggered`; sans-I/O, then through the websocket on a real server."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

from server.config import SessionConfig
from server.effects import StartResponse
from server.session import RealtimeSession
from tests.realtime_sdk import clip
from tests.test_protocol import Driver

SILENCE_S = bytes(48_000)  # one second of PCM16 at 24 kHz
IDLE = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
    "type": "server_vad", "idle_timeout_ms": 5000}}}}}


def test_a_silence_past_the_idle_timeout_is_committed_and_answered(silero):
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    driver.send(IDLE)
    assert driver.of("session.updated")[-1]["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000
    driver.stream(SILENCE_S * 4)
    assert not driver.of("input_audio_buffer.timeout_triggered")
    driver.stream(SILENCE_S * 2)
    [timeout] = driver.of("input_audio_buffer.timeout_triggered")
    assert timeout["audio_start_ms"] == 0 and 5000 <= timeout["audio_end_ms"] < 5100
    [committed] = driver.of("input_audio_buffer.committed")
    assert committed["item_id"] == timeout["item_id"]
    assert [e for e in driver.effects if isinstance(e, StartResponse)]
    messages = driver.session.conversation.messages("be brief")
    assert "said nothing for 5 seconds" in messages[-1].content


def test_speech_restarts_the_idle_clock_and_no_timeout_without_the_setting(silero):
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    driver.send(IDLE)
    driver.stream(SILENCE_S * 3 + clip("06_ps_goforward.wav")[:48_000 * 2] + SILENCE_S * 3)
    assert not driver.of("input_audio_buffer.timeout_triggered")  # (the reply it asked for is never sent here)
    plain = Driver(RealtimeSession(SessionConfig(), silero))
    plain.stream(SILENCE_S * 7)
    assert not plain.of("input_audio_buffer.timeout_triggered")


@pytest.mark.slow
async def test_the_server_answers_a_silence_through_the_websocket(voice_server):
    async with websockets.connect(f"ws://127.0.0.1:{voice_server}/v1/realtime", max_size=None) as websocket:
        await websocket.send(json.dumps(IDLE))
        events: list[dict] = []

        async def read() -> None:
            async for message in websocket:
                events.append(json.loads(message))
                if events[-1]["type"] == "response.done":
                    return

        reader = asyncio.create_task(read())
        for _ in range(70):  # 7 s in 100 ms messages, at twice real time
            await websocket.send(json.dumps({"type": "input_audio_buffer.append",
                                             "audio": base64.b64encode(bytes(4_800)).decode()}))
            await asyncio.sleep(0.05)
            if reader.done():
                break
        await asyncio.wait_for(reader, 120)
    types = [e["type"] for e in events]
    assert types.index("input_audio_buffer.timeout_triggered") < types.index("input_audio_buffer.committed") \
        < types.index("response.created")
    done = events[-1]["response"]
    assert done["status"] == "completed" and "response.output_audio.delta" in types
