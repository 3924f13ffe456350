"""A real VoiceServer (transport, connections, sessions, metrics) on stand-in models, on loopback in a
thread of its own: protocol tests through the websocket that load no model but the VAD."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from websockets.sync.client import ClientConnection, connect

from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.connection import ConnectionLimits
from voice.asr.base import Heard, Hints
from voice.end_of_turn import EndScore
from voice.engine import Engine
from voice.llm.base import ChatMessage, GenerationOptions
from voice.vad import SileroModel


class StandInASR:
    languages = None

    def hear(self, audio: np.ndarray, cancel: threading.Event | None = None, hints: Hints | None = None) -> Heard:
        return Heard("Hello there.")


class StandInLLM:
    name = "stand-in"

    def stream_chat(self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event):
        yield from ("Hi", " there", ".")


class StandInTTS:
    name = "stand-in"
    sample_rate = 24_000

    def synthesize(self, text: str, soon: bool = False):
        yield np.zeros(2400, dtype=np.float32)


class StandInEnd:
    def score(self, transcript: str, audio_16k: np.ndarray) -> EndScore:
        return EndScore(1.0)


class StandInServer:
    """`VoiceServer` with stand-in models; `connect()` opens a client (sync websockets) that has
    read `session.created`."""

    def __init__(self, vad: SileroModel, limits: ConnectionLimits | None = None) -> None:
        engine = Engine(StandInASR(), StandInLLM(), StandInTTS(), vad, workers=4,  # type: ignore[arg-type]
                        end_of_turn=StandInEnd())  # type: ignore[arg-type]
        self.server = VoiceServer(engine, SessionConfig(), ServerOptions(port=0, limits=limits or ConnectionLimits()))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stand-in-server", daemon=True)
        self.thread.start()
        self.call(self.server.start())
        self.url = f"ws://127.0.0.1:{self.server.port}/v1/realtime"

    def call(self, coroutine):  # noqa: ANN001, ANN201 - any coroutine, its result
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    @contextmanager
    def client(self) -> Iterator[ClientConnection]:
        with connect(self.url, max_size=None, open_timeout=10) as websocket:
            created = json.loads(websocket.recv(timeout=10))
            assert created["type"] == "session.created", created
            yield websocket

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every session has closed on the server's side."""
        async def idle() -> None:
            while self.server.sessions:
                await asyncio.sleep(0.01)
        self.call(asyncio.wait_for(idle(), timeout))

    def close(self) -> None:
        async def stop() -> None:
            assert self.server._server is not None
            self.server._server.close()
            await self.server._server.wait_closed()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        assert self.server.engine is not None
        self.server.engine.close()


@contextmanager
def stand_in_server(vad: SileroModel, limits: ConnectionLimits | None = None) -> Iterator[StandInServer]:
    server = StandInServer(vad, limits)
    try:
        yield server
    finally:
        server.close()


def send(websocket: ClientConnection, *events: dict | str | bytes) -> None:
    for event in events:
        websocket.send(event if isinstance(event, str | bytes) else json.dumps(event))


def until(websocket: ClientConnection, match, timeout: float = 10.0) -> list[dict]:  # noqa: ANN001 - a predicate
    """Every event up to and including the first that `match`es."""
    events: list[dict] = []
    while True:
        events.append(json.loads(websocket.recv(timeout=timeout)))
        if match(events[-1]):
            return events


def answer_to(websocket: ClientConnection, message: dict | str | bytes, probe: str) -> list[dict]:
    """The events that follow `message`, up to the `error` that answers a probe sent right after it
    (a retrieve of no item, named `probe`): the server handles a client's messages in order."""
    send(websocket, message, {"type": "conversation.item.retrieve", "event_id": probe, "item_id": "no_such_item"})
    return until(websocket, lambda e: e["type"] == "error" and e["error"]["event_id"] == probe)


def errors_for(events: list[dict], event_id: str) -> list[dict]:
    return [e["error"] for e in events if e["type"] == "error" and e["error"]["event_id"] == event_id]
