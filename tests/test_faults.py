"""Faults injected around real components: a model stage that raises, an LLM server that hangs,
keepalive pings while the models are busy, and /healthz while the models load."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.connection import ConnectionLimits
from tests.helpers import (
    free_port,
    pipe,
    reference,
    spawn_voice_server,
    start_llama_server,
    start_voice_server,
    stop,
    wer,
)
from tests.realtime_sdk import clip
from voice.engine import Engine, EngineConfig

pytestmark = pytest.mark.slow

TEXT_TURN = [{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "Say hello to me."}]}}]
CLIP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"


# ---------------------------------------------------------------- helpers
async def connect(port: int, **kwargs: Any) -> websockets.ClientConnection:
    websocket = await websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None, **kwargs)
    created = json.loads(await websocket.recv())
    assert created["type"] == "session.created", created
    return websocket


async def send(websocket: websockets.ClientConnection, *events: dict) -> None:
    for event in events:
        await websocket.send(json.dumps(event))


async def collect_until(websocket: websockets.ClientConnection, kind: str, timeout: float = 90.0) -> list[dict]:
    """Every event up to and including the first of type `kind`."""
    events: list[dict] = []

    async def read() -> list[dict]:
        while True:
            events.append(json.loads(await websocket.recv()))
            if events[-1]["type"] == kind:
                return events
    return await asyncio.wait_for(read(), timeout)


async def drain(websocket: websockets.ClientConnection, seconds: float) -> list[dict]:
    """Every event that arrives within `seconds`."""
    events: list[dict] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                events.append(json.loads(await websocket.recv()))
    except TimeoutError:
        return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


async def speak(websocket: websockets.ClientConnection, pcm: bytes, silence_ms: int = 2500) -> None:
    """A recording then silence, in 100 ms appends (faster than real time: the VAD runs on audio time)."""
    pcm = pcm + bytes(48 * silence_ms)
    for start in range(0, len(pcm), 4800):
        await send(websocket, {"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(pcm[start:start + 4800]).decode()})


async def native_push_to_talk(websocket: websockets.ClientConnection, pcm: bytes) -> None:
    """Switch the session to the native pipeline without turn detection, then send a recording,
    commit it and ask for the reply."""
    await send(websocket, {"type": "session.update", "session": {
        "type": "realtime", "pipeline": "native", "audio": {"input": {"turn_detection": None}}}})
    await collect_until(websocket, "session.updated")
    for start in range(0, len(pcm), 9600):
        await send(websocket, {"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(pcm[start:start + 9600]).decode()})
    await send(websocket, {"type": "input_audio_buffer.commit"}, {"type": "response.create"})


class Fault:
    """Makes a method of a real, loaded model stage raise while `active`; the model itself is untouched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: object, method: str, error: Exception) -> None:
        self.active = True
        real: Callable[..., Any] = getattr(stage, method)

        def maybe_fail(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(stage, method, maybe_fail)


@pytest.fixture(scope="module")
def engine(native_projector):
    engine = Engine.load(EngineConfig(native_projector=str(native_projector)))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
async def in_process_server(engine):
    # (These tests send their recordings faster than real time: the VAD runs on audio time.)
    server = VoiceServer(engine, SessionConfig(), ServerOptions(port=0, limits=ConnectionLimits(max_audio_ahead_s=60)))
    listening = await server.start()
    yield server
    listening.close()
    await listening.wait_closed()


# ---------------------------------------------------------------- a model stage raises
async def test_tts_failure_fails_the_turn_and_the_next_turn_works(in_process_server, monkeypatch):
    fault = Fault(monkeypatch, in_process_server.engine.tts, "synthesize", RuntimeError("voice model crashed"))
    websocket = await connect(in_process_server.port)
    await send(websocket, *TEXT_TURN, {"type": "response.create"})
    events = await collect_until(websocket, "response.done")
    [error] = of_type(events, "error")
    assert error["error"]["code"] == "tts_error" and "voice model crashed" in error["error"]["message"]
    assert events[-1]["response"]["status"] == "failed"
    assert not of_type(events, "response.output_audio.delta")

    fault.active = False
    await send(websocket, {"type": "response.create"})
    events = await collect_until(websocket, "response.done")
    assert events[-1]["response"]["status"] == "completed"
    assert of_type(events, "response.output_audio.delta") and not of_type(events, "error")
    await websocket.close()


async def test_a_reply_that_ends_at_its_first_token_is_drawn_again(in_process_server, monkeypatch):
    # A sampled reply that ends at once would leave the user with silence: the response draws it
    # again from the real model.
    llm = in_process_server.engine.llm
    real = llm.stream_chat
    calls: list[int] = []

    def ends_at_once_the_first_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return iter(()) if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(llm, "stream_chat", ends_at_once_the_first_time)
    websocket = await connect(in_process_server.port)
    await send(websocket, *TEXT_TURN, {"type": "response.create"})
    events = await collect_until(websocket, "response.done")
    assert len(calls) == 2
    assert events[-1]["response"]["status"] == "completed"
    assert of_type(events, "response.output_audio.delta") and not of_type(events, "error")
    await websocket.close()


def looping_reply(pulled: list[str], closed: list[bool]) -> Callable[..., Any]:
    """A reply that says "You're welcome." (no spaces) over and over, as SmolLM2 was seen to."""

    def loops(*args: Any, **kwargs: Any) -> Any:
        try:
            for _ in range(200):
                for token in ("You", "'re", " welcome", "."):
                    pulled.append(token)
                    yield token
        finally:
            closed.append(True)

    return loops


async def test_a_reply_caught_in_a_loop_is_ended(in_process_server, monkeypatch):
    # SmolLM2 was seen answering "You're welcome.You're welcome.You're welcome...." (no spaces) up to
    # its token limit: minutes of speech and a history too long for the prompt. The reply stops at
    # the third time the same sentence comes, and the LLM is stopped with it.
    pulled: list[str] = []
    closed: list[bool] = []
    monkeypatch.setattr(in_process_server.engine.llm, "stream_chat", looping_reply(pulled, closed))
    websocket = await connect(in_process_server.port)
    await send(websocket, *TEXT_TURN, {"type": "response.create"})
    events = await collect_until(websocket, "response.done")
    response = events[-1]["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["transcript"] == "You're welcome. You're welcome."
    assert closed and len(pulled) <= 4 * 3 + 1
    await websocket.close()


async def test_a_native_reply_caught_in_a_loop_is_ended(in_process_server, monkeypatch):
    # The native model loops too (one of its evaluation replies was "unlessassistant" twelve times):
    # its replies go through the same response runner, so the same rule ends them.
    pulled: list[str] = []
    closed: list[bool] = []
    monkeypatch.setattr(in_process_server.engine.native, "stream_reply", looping_reply(pulled, closed))
    websocket = await connect(in_process_server.port)
    await native_push_to_talk(websocket, clip(CLIP))
    events = await collect_until(websocket, "response.done")
    response = events[-1]["response"]
    assert response["status"] == "completed" and response["metadata"]["pipeline"] == "native"
    assert response["output"][0]["content"][0]["transcript"] == "You're welcome. You're welcome."
    assert of_type(events, "response.output_audio.delta")
    assert closed and len(pulled) <= 4 * 3 + 1
    await websocket.close()


async def test_speech_evaluations_run_one_at_a_time_the_newest_next(in_process_server, monkeypatch):
    # Native push-to-talk: the session asks for an evaluation of the speech so far every 250 ms. One
    # that comes while another runs waits, and only the newest of those runs next; none is left to
    # run once the reply has started (the reply evaluates the rest itself).
    native = in_process_server.engine.native
    real = native.prefill
    calls: list[int] = []  # the audio evaluations, by size
    entered, finished = [threading.Event() for _ in range(5)], [threading.Event() for _ in range(5)]
    gates = {1: threading.Event(), 3: threading.Event()}  # the evaluations that wait to be let through
    history = threading.Event()  # the prefill of the history that the session's update asks for

    def slow_prefill(messages, cancel, audio_16k=None):  # noqa: ANN001, ANN202
        if audio_16k is None:
            real(messages, cancel)
            history.set()
            return None
        calls.append(audio_16k.size)
        number = len(calls)
        entered[number].set()
        if number in gates:
            gates[number].wait(30)
        real(messages, cancel, audio_16k=audio_16k)
        finished[number].set()

    monkeypatch.setattr(native, "prefill", slow_prefill)
    websocket = await connect(in_process_server.port)
    await send(websocket, {"type": "session.update", "session": {
        "type": "realtime", "pipeline": "native", "audio": {"input": {"turn_detection": None}}}})
    await collect_until(websocket, "session.updated")
    pcm = clip(CLIP)
    half = len(pcm) // 2 // 4800 * 4800

    async def append(part: bytes) -> None:
        for start in range(0, len(part), 4800):  # 100 ms at a time
            await send(websocket, {"type": "input_audio_buffer.append",
                                   "audio": base64.b64encode(part[start:start + 4800]).decode()})
        await send(websocket, {"type": "conversation.item.retrieve", "item_id": "none"})
        await collect_until(websocket, "error")  # (every append before it has been handled)

    def reached(event: threading.Event) -> Any:
        return asyncio.to_thread(event.wait, 30)

    # The first audio starts a prefill of the history; prefills run one at a time, so the
    # evaluations of the speech begin once it has ended.
    await append(pcm[:4800])
    assert await reached(history)
    await append(pcm[4800:half])
    assert await reached(entered[1])
    assert len(calls) == 1 and calls[0] < half // 3  # the first, 250 ms in; the rest waited
    gates[1].set()
    assert await reached(entered[2]) and await reached(finished[2])
    assert len(calls) == 2 and calls[1] > half // 3 - 5_000  # then only the newest (250 ms steps)

    await append(pcm[half:])
    assert await reached(entered[3])  # the next one, held at its gate: the ones after it wait
    await send(websocket, {"type": "input_audio_buffer.commit"}, {"type": "response.create"})
    await asyncio.sleep(0.3)
    gates[3].set()
    events = await collect_until(websocket, "response.done")
    assert events[-1]["response"]["status"] == "completed"
    assert await reached(finished[3])
    await asyncio.sleep(0.3)
    assert len(calls) == 3  # nothing ran after the reply started
    await websocket.close()


async def test_asr_failure_ends_the_turn_cleanly_and_the_next_turn_works(in_process_server, monkeypatch):
    fault = Fault(monkeypatch, in_process_server.engine.asr, "hear", RuntimeError("decoder crashed"))
    websocket = await connect(in_process_server.port)
    await speak(websocket, clip(CLIP))
    events = await collect_until(websocket, "conversation.item.input_audio_transcription.failed")
    assert of_type(events, "input_audio_buffer.speech_stopped")
    assert any(e["error"]["code"] == "asr_error" and "decoder crashed" in e["error"]["message"]
               for e in of_type(events, "error"))
    events += await drain(websocket, 1.0)  # nothing more comes of it: no reply to an unheard question
    assert not of_type(events, "response.created")

    fault.active = False
    await speak(websocket, clip(CLIP))
    events = await collect_until(websocket, "response.done")
    [completed] = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert wer(reference(CLIP), completed["transcript"]) < 0.3
    assert events[-1]["response"]["status"] == "completed"
    assert of_type(events, "response.created") and of_type(events, "response.output_audio.delta")
    await websocket.close()


# ---------------------------------------------------------------- an LLM server that hangs
class StallingProxy:
    """A TCP proxy in front of a real server; while `stalled`, it accepts connections and never answers."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stalled = False
        self._held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stalled:
            self._held.append(writer)
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def close(self) -> None:
        for writer in self._held:
            writer.close()
        if self._server is not None:
            self._server.close()


async def test_hanging_llm_server_times_out_or_is_cancelled_and_the_next_turn_works(artifacts):
    llm_port = free_port()
    llm = start_llama_server(llm_port, open(artifacts / "llama-server-stall.log", "wb"))
    proxy = StallingProxy(llm_port)
    proxy_port = await proxy.start()
    voice, port = start_voice_server("--llm-url", f"http://127.0.0.1:{proxy_port}/v1", "--llm-name", "smollm2",
                                     "--llm-timeout", "3", log_path=artifacts / "voice-server-stall.log")
    try:
        websocket = await connect(port)
        proxy.stalled = True
        await send(websocket, *TEXT_TURN, {"type": "response.create"})
        events = await collect_until(websocket, "response.done", timeout=30)
        [error] = of_type(events, "error")
        assert error["error"]["code"] == "llm_error" and "timed out" in error["error"]["message"]
        assert events[-1]["response"]["status"] == "failed"

        # The user gives up on a reply that does not come: it ends at once, long before the timeout.
        await send(websocket, {"type": "response.create"})
        await collect_until(websocket, "response.created")
        await send(websocket, {"type": "response.cancel"})
        events = await collect_until(websocket, "response.done", timeout=30)
        assert events[-1]["response"]["status"] == "cancelled" and not of_type(events, "error")

        proxy.stalled = False
        await asyncio.sleep(3.5)  # the abandoned request's timeout passes without disturbing the session
        await send(websocket, {"type": "response.create"})
        events = await collect_until(websocket, "response.done", timeout=60)
        assert events[-1]["response"]["status"] == "completed", events[-1]
        assert of_type(events, "response.output_audio.delta") and not of_type(events, "error")
        await websocket.close()
    finally:
        stop(voice)
        await proxy.close()
        stop(llm)
    assert "timed out" in (artifacts / "voice-server-stall.log").read_text()


# ---------------------------------------------------------------- keepalive while models are busy
async def test_keepalive_pings_are_answered_while_every_model_is_busy(voice_server):
    story = {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 200,
                                                   "instructions": "You tell long stories."}}

    async def talker() -> dict:
        # Pings every 0.5 s that must be answered within 2 s, while three replies share two cores.
        websocket = await connect(voice_server, ping_interval=0.5, ping_timeout=2)
        await send(websocket, story, *TEXT_TURN, {"type": "response.create"})
        events = await collect_until(websocket, "response.done", timeout=180)
        await websocket.close()
        return events[-1]

    for done in await asyncio.gather(*(talker() for _ in range(3))):
        assert done["response"]["status"] == "completed"


# ---------------------------------------------------------------- health while loading
def test_healthz_fails_until_the_models_are_loaded(artifacts):
    process, port = spawn_voice_server(log_path=artifacts / "voice-server-loading.log")
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and statuses[-1:] != [200]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as refused:
                statuses.append(refused.code)
                assert json.loads(refused.read())["status"] == "loading models"
            except urllib.error.URLError:
                pass  # not listening yet
            time.sleep(0.02)
    finally:
        stop(process)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
