"""Runs one websocket connection: feeds the sans-I/O session and carries out its effects.

Model work runs in the engine's worker threads; results come back to the event loop and into
the session, whose outgoing events a single writer task sends in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.config import SessionConfig
from server.session import (
    CancelResponse,
    Output,
    RealtimeSession,
    ResponseProgress,
    StartResponse,
    Transcribe,
    TranscriptReady,
)
from voice.engine import Engine
from voice.events import ResponseEvent
from voice.turn import ResponseRequest, run_response

log = logging.getLogger(__name__)


class Connection:
    """One client: its session, its running jobs, and its outgoing queue."""

    def __init__(self, websocket: ServerConnection, engine: Engine, config: SessionConfig, model_name: str) -> None:
        self.websocket = websocket
        self.engine = engine
        self.session = RealtimeSession(config, engine.vad, model_name=model_name)
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._jobs: set[asyncio.Future[Any]] = set()
        self._cancels: dict[str, threading.Event] = {}
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        log.info("session %s opened", self.session.id)
        try:
            self._apply(self.session.start())
            async for message in self.websocket:
                self._apply(self.session.receive_client(message, time.monotonic()))
        except ConnectionClosed:
            pass
        finally:
            self._apply(self.session.close())
            for cancel in self._cancels.values():
                cancel.set()
            self._outgoing.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
            if self._jobs:
                await asyncio.wait(self._jobs, timeout=10)
            log.info("session %s closed", self.session.id)

    async def _write(self) -> None:
        while (event := await self._outgoing.get()) is not None:
            try:
                await self.websocket.send(json.dumps(event))
            except ConnectionClosed:
                return

    def _apply(self, output: Output) -> None:
        for event in output.events:
            if event["type"] == "error":
                log.info("session %s: error event %s", self.session.id, event["error"]["message"])
            self._outgoing.put_nowait(event)
        for effect in output.effects:
            if isinstance(effect, Transcribe):
                self._track(self._transcribe(effect))
            elif isinstance(effect, StartResponse):
                self._start_response(effect)
            elif isinstance(effect, CancelResponse):
                cancel = self._cancels.get(effect.response_id)
                if cancel is not None:
                    cancel.set()

    def _track(self, job: Any) -> None:
        future = asyncio.ensure_future(job)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)

    async def _transcribe(self, effect: Transcribe) -> None:
        try:
            text = await self._loop.run_in_executor(self.engine.executor, self.engine.asr.transcribe, effect.audio)
            result = TranscriptReady(effect.item_id, text, effect.final)
        except Exception as exc:  # noqa: BLE001 - a failed transcription ends the turn, not the session
            log.exception("session %s: transcription failed", self.session.id)
            result = TranscriptReady(effect.item_id, "", effect.final, error=f"asr: {exc}")
        self._apply(self.session.receive_transcript(result, time.monotonic()))

    def _start_response(self, effect: StartResponse) -> None:
        cancel = threading.Event()
        self._cancels[effect.response_id] = cancel
        request = ResponseRequest(effect.messages, effect.options, effect.audio)

        def emit(event: ResponseEvent) -> None:  # called from worker threads
            self._loop.call_soon_threadsafe(self._on_progress, ResponseProgress(effect.response_id, event))

        async def job() -> None:
            try:
                await self._loop.run_in_executor(self.engine.executor, run_response, self.engine.llm,
                                                 self.engine.tts, request, cancel, emit)
            finally:
                self._cancels.pop(effect.response_id, None)

        self._track(job())

    def _on_progress(self, progress: ResponseProgress) -> None:
        self._apply(self.session.receive_response(progress, time.monotonic()))
