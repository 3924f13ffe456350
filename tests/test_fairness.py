"""No client takes the server from the others: audio faster than real time is refused, model work is
shared fairly between sessions, and a closed session's waiting work is dropped. Through the
websocket, against a real server on the bundled models."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request

import pytest
import websockets

from tests.helpers import start_voice_server, stop
from tests.realtime_sdk import clip

pytestmark = pytest.mark.slow

ALLOWANCE_S = 3
SPEECH = ["04_v2j_would_you_please_turn_on_living_room_lamp.wav", "06_ps_goforward.wav", "09_jfk.wav",
          "18_rstt_LJ001-0004.wav"]
FRAME = 960  # 20 ms of PCM16 at 24 kHz
CHUNK = 4_800  # 100 ms


@pytest.fixture(scope="module")
def server(artifacts):
    process, port = start_voice_server("--max-audio-ahead", str(ALLOWANCE_S),
                                       log_path=artifacts / "voice-server-fairness.log")
    yield port
    stop(process)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}


async def connect(port: int) -> websockets.ClientConnection:
    websocket = await websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None)
    assert json.loads(await websocket.recv())["type"] == "session.created"
    return websocket


async def until(websocket, kind: str, timeout: float = 120.0) -> dict:
    async def read() -> dict:
        while True:
            event = json.loads(await websocket.recv())
            if event["type"] == kind:
                return event
    return await asyncio.wait_for(read(), timeout)


def appends(pcm: bytes, prefix: str) -> list[str]:
    """The recording as 100 ms `input_audio_buffer.append` messages, numbered."""
    return [json.dumps({"type": "input_audio_buffer.append", "event_id": f"{prefix}{n}",
                        "audio": base64.b64encode(pcm[at:at + CHUNK]).decode()})
            for n, at in enumerate(range(0, len(pcm), CHUNK))]


class Flood:
    """A client sending real speech at 50 times real time, reading (and counting) what comes back."""

    def __init__(self, websocket: websockets.ClientConnection) -> None:
        self.websocket = websocket
        self.messages = appends(b"".join(clip(name) for name in SPEECH), "flood")
        self.rate_errors: list[dict] = []
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read())]

    async def _send(self) -> None:
        for n in range(10**9):
            await self.websocket.send(self.messages[n % len(self.messages)])
            await asyncio.sleep(0.1 / 50)

    async def _read(self) -> None:
        async for message in self.websocket:
            event = json.loads(message)
            if event["type"] == "error" and event["error"]["code"] == "input_audio_rate_exceeded":
                self.rate_errors.append(event["error"])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_flooding_client_gets_rate_errors_and_its_session_goes_on(server):
    websocket = await connect(server)
    sent = appends(clip(SPEECH[2]), "jfk")  # 11 s at once
    for message in sent:
        await websocket.send(message)
    error = (await until(websocket, "error"))["error"]
    assert error["code"] == "input_audio_rate_exceeded"
    assert error["event_id"] in {json.loads(m)["event_id"] for m in sent[ALLOWANCE_S * 10 - 1:]}
    assert "dropped" in error["message"]
    await websocket.send(json.dumps({"type": "session.update", "event_id": "after",
                                     "session": {"instructions": "Be brief."}}))
    assert (await until(websocket, "session.updated"))["session"]["instructions"] == "Be brief."
    await websocket.close()


async def test_while_one_session_floods_another_sessions_turn_gets_a_reply(server):
    flood = Flood(await connect(server))
    websocket = await connect(server)
    done: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    audio = []

    async def listen() -> None:
        async for message in websocket:
            event = json.loads(message)
            if event["type"] == "response.output_audio.delta":
                audio.append(event)
            elif event["type"] == "response.done" and not done.done():
                done.set_result(event["response"])

    listener = asyncio.create_task(listen())
    try:
        pcm = clip(SPEECH[0])
        frames = [pcm[at:at + FRAME] for at in range(0, len(pcm), FRAME)]
        start = asyncio.get_running_loop().time()
        for n in range(60 * 50):  # the recording at real time, then silence: a microphone
            if done.done():
                break
            frame = frames[n] if n < len(frames) else bytes(FRAME)
            await websocket.send(json.dumps({"type": "input_audio_buffer.append",
                                             "audio": base64.b64encode(frame).decode()}))
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - asyncio.get_running_loop().time()))
        response = await asyncio.wait_for(done, 60)
    finally:
        listener.cancel()
        await flood.stop()
    assert response["status"] == "completed" and audio
    assert flood.rate_errors  # the flood was held back...
    assert flood.websocket.close_code is None  # ...and its session is still open
    await flood.websocket.close()
    await websocket.close()


async def test_a_closed_sessions_waiting_jobs_are_dropped(server):
    dropped_before = metrics(server).get('voice_jobs_dropped_total{reason="closed"}', 0.0)
    websocket = await connect(server)
    await websocket.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}}))
    await until(websocket, "session.updated")
    speech = clip(SPEECH[3])
    await websocket.send(appends(speech[:3 * CHUNK], "start")[0])  # (the resampler keeps a little back)
    turns = 15  # 15 push-to-talk turns at once, within the allowance: one transcribed at a time
    step = CHUNK * 3 // 2  # 150 ms each: 2.55 s in all
    for n in range(turns):
        piece = speech[3 * CHUNK + n * step:3 * CHUNK + (n + 1) * step]
        await websocket.send(json.dumps({"type": "input_audio_buffer.append",
                                         "audio": base64.b64encode(piece).decode()}))
        await websocket.send(json.dumps({"type": "input_audio_buffer.commit"}))
    for _ in range(turns):
        await until(websocket, "input_audio_buffer.committed")
    await websocket.close()  # while most of its transcriptions still wait
    values = metrics(server)
    for _ in range(300):
        values = metrics(server)
        if values["voice_sessions_active"] == 0 and values["voice_jobs_running"] == 0:
            break
        await asyncio.sleep(0.1)
    assert values["voice_sessions_active"] == 0
    assert values["voice_jobs_running"] == 0 and values["voice_jobs_waiting"] == 0
    assert values['voice_jobs_dropped_total{reason="closed"}'] > dropped_before


async def test_no_work_is_left_behind(server):
    """After the floods above, nothing waits or runs, and a new session is answered."""
    for _ in range(300):
        if metrics(server)["voice_jobs_running"] == 0:
            break
        await asyncio.sleep(0.1)
    values = metrics(server)
    assert values["voice_jobs_running"] == 0 and values["voice_jobs_waiting"] == 0
    websocket = await connect(server)
    await websocket.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}}))
    await websocket.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 20}}))
    assert (await until(websocket, "response.done"))["response"]["status"] == "completed"
    await websocket.close()


async def test_audio_faster_than_real_time_is_held_back_in_the_socket_not_refused_message_by_message(server):
    websocket = await connect(server)
    sent = appends(clip(SPEECH[2]), "burst")  # 11 s at once: 3 s of allowance, then real time
    for message in sent:
        await websocket.send(message)
    await websocket.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "none", "event_id": "last"}))
    refused = 0
    while True:
        event = json.loads(await asyncio.wait_for(websocket.recv(), 60))
        if event["type"] == "error" and event["error"]["code"] == "input_audio_rate_exceeded":
            refused += 1
        elif event["type"] == "error" and event["error"]["event_id"] == "last":
            break
    # Once refused, the session's messages are read at real-time pace: about one refusal per flooding
    # window (2 s) instead of one for each of the 80 messages beyond the allowance.
    assert 1 <= refused <= 6
    await websocket.close()
