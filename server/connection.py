"""Runs one client connection: feeds the sans-I/O session and carries out its effects.

Model work runs in the engine's worker threads, in the fair order of its job queue (voice/jobs.py);
results come back to the event loop and into the session, whose outgoing events a single writer
task sends in order. The connection runs over any transport (server/transport.py): a websocket, or
in-process queues (server/local.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from server.config import SessionConfig
from server.conversation import ConversationLimits
from server.deadlines import SessionDeadlines
from server.effects import CancelResponse, DeferTranscription, Output, PrefillPrompt, ResponseProgress, StartResponse
from server.logs import session_id
from server.message_size import oversized
from server.metrics import Metrics
from server.session import FLOODING_S, RealtimeSession
from server.slow_reader import SlowReaderWatch
from server.transport import MediaTransport, Transport, TransportClosed
from server.turn_log import TurnLog
from server.wire import Ids, ProtocolError, error_event
from voice.asr.base import TranscriptionCancelled
from voice.engine import Engine
from voice.jobs import JobDropped
from voice.response import ResponseRequest
from voice.response_events import ResponseEvent
from voice.turn_taking import EndScored, ScoreEnd, Transcribe, TranscriptReady

log = logging.getLogger(__name__)

_PREFILL_HISTORY, _PREFILL_SPEECH = "prefill", "prefill speech"  # the coalescing keys of prefills
T = TypeVar("T")

MAX_TRANSCRIPTION_DEFER_S = 10.0  # a deferred transcription runs by then even if its reply is still silent
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
SEND_BUFFER_SAMPLE_S = 0.25  # how often a client's unread output is looked at


MAX_READ_PAUSE_S = 2.0  # a flooding session's next message is read once its allowance has room, or after this


@dataclass(frozen=True)
class ConnectionLimits:
    max_message_bytes: int = 1024 * 1024
    """A larger client message gets an error event and is dropped (4x this closes the socket)."""
    idle_timeout_s: float = 300.0
    """A session with no client message for this long is closed."""
    max_session_s: float = 3600.0
    max_send_buffer_bytes: int = 16 * 1024 * 1024
    """Outgoing data a client may leave unread for `slow_client_grace_s` before it is closed as too slow."""
    slow_client_grace_s: float = 5.0
    """How long unread output may stay over `max_send_buffer_bytes` (a reading client drains a burst at once)."""
    max_buffer_seconds: float = 120.0
    """Uncommitted input audio a session may hold."""
    max_audio_ahead_s: float = 5.0
    """Input audio a session may send ahead of real time (a burst allowance refilled at real time)."""
    job_wait_s: float = 10.0
    """How long a closing session waits for its cancelled model jobs."""
    conversation: ConversationLimits = ConversationLimits()
    """How many items, and how many bytes of text, a session's conversation may hold."""


async def refuse(transport: Transport, code: str, message: str) -> None:
    """Tell a client why it cannot have a session, then close (1013: try again later)."""
    event = error_event(Ids(), ProtocolError(message, code=code, type="server_error"))
    log.info("refused a session from %s: %s", transport.peer, code)
    try:
        await transport.send(json.dumps(event))
        await transport.close(CLOSE_TRY_AGAIN_LATER, message[:120])
    except TransportClosed:
        pass


class Connection:
    """One client: its session, its running jobs, and its outgoing queue."""

    def __init__(self, transport: Transport, engine: Engine, config: SessionConfig, model_name: str,
                 limits: ConnectionLimits | None = None, metrics: Metrics | None = None) -> None:
        self.transport = transport
        self._takes = transport.takes if isinstance(transport, MediaTransport) else None  # (WebRTC: reply audio)
        self.engine = engine
        self.limits = limits or ConnectionLimits()
        self.metrics = metrics or Metrics()
        self.session = RealtimeSession(config, engine.vad, model_name=model_name,
                                       max_buffer_seconds=self.limits.max_buffer_seconds,
                                       max_audio_ahead_s=self.limits.max_audio_ahead_s,
                                       conversation_limits=self.limits.conversation)
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued_bytes = 0
        self._slow_reader = SlowReaderWatch(self.limits.max_send_buffer_bytes, self.limits.slow_client_grace_s)
        self._turn_log = TurnLog()
        self._closing = False
        self._jobs: set[asyncio.Future[Any]] = set()
        self._cancels: dict[str, threading.Event] = {}
        self._partial_cancel = threading.Event()  # of the partial transcription under way, if any
        self._audio_refused = 0  # append messages refused for coming faster than real time
        self._demoted = False  # whether the job queue serves this session last (it floods audio)
        self._demotion_check: asyncio.TimerHandle | None = None
        self._deferred: dict[str, tuple[asyncio.Event, asyncio.TimerHandle]] = {}  # deferred transcriptions
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        session_id.set(self.session.id)
        writer = asyncio.create_task(self._write())
        watch = asyncio.create_task(self._watch_unread())
        log.info("session opened from %s", self.transport.peer)
        deadlines = SessionDeadlines(self.limits.idle_timeout_s, self.limits.max_session_s, time.monotonic())
        try:
            self._apply(self.session.start())
            while not self._closing:
                reason = deadlines.due(time.monotonic(), busy=bool(self._jobs) or self.session.response_active)
                if reason is not None:
                    await self._close_with_error(reason, deadlines.message(reason))
                    break
                try:
                    message = await asyncio.wait_for(self.transport.recv(), deadlines.wait_s(time.monotonic()))
                except TimeoutError:
                    continue
                deadlines.heard(time.monotonic())
                if (too_large := oversized(message, self.limits.max_message_bytes)) is not None:
                    self._apply(Output(events=[error_event(self.session.ids, too_large)]))
                    continue
                self._apply(self.session.receive_client(message, time.monotonic()))
                self._check_demotion()
                if self.session.audio_wait_s > 0:
                    # Back-pressure: audio faster than real time waits in the client's socket, unread,
                    # rather than costing the server a refusal per message.
                    await asyncio.sleep(min(self.session.audio_wait_s + 0.005, MAX_READ_PAUSE_S))
        except TransportClosed:
            pass
        finally:
            self._apply(self.session.close())
            # Its waiting model work goes at once (it would only delay the other sessions').
            self._count_dropped(self.engine.jobs.drop(self.session.id), "closed")
            if self._demotion_check is not None:
                self._demotion_check.cancel()
            self.engine.jobs.demote(self.session.id, False)
            for cancel in self._cancels.values():
                cancel.set()
            self._partial_cancel.set()
            self._closing = True
            for released, timer in self._deferred.values():
                timer.cancel()
                released.set()  # the job ends without transcribing
            self._outgoing.put_nowait(None)
            watch.cancel()
            await asyncio.gather(writer, watch, return_exceptions=True)
            if self._jobs:
                await asyncio.wait(self._jobs, timeout=self.limits.job_wait_s)
            log.info("session closed (%s)", self.transport.close_code)

    def _check_demotion(self) -> None:
        """A session sending audio faster than real time has its model work served last, until it
        stops (checked again when its flooding would end, in case no message comes by then)."""
        if self._closing:
            return
        flooding = self.session.flooding(time.monotonic())
        if flooding != self._demoted:
            self._demoted = flooding
            self.engine.jobs.demote(self.session.id, flooding)
        if flooding and self._demotion_check is None:
            def recheck() -> None:
                self._demotion_check = None
                self._check_demotion()

            self._demotion_check = self._loop.call_later(FLOODING_S, recheck)

    async def _close_with_error(self, code: str, message: str) -> None:
        log.info("closing: %s", message)
        self._apply(Output(events=[error_event(self.session.ids, ProtocolError(message, code=code,
                                                                               type="server_error"))]))
        self._outgoing.put_nowait(None)
        self._closing = True
        await asyncio.sleep(0)  # let the writer send the error first
        await self.transport.close(1000, message[:120])

    async def _write(self) -> None:
        while (data := await self._outgoing.get()) is not None:
            self._queued_bytes -= len(data)
            try:
                await self.transport.send(data)
            except TransportClosed:
                return

    def _apply(self, output: Output) -> None:
        for event in output.events:
            self.metrics.observe_event(event)
            self._turn_log.observe(event)
            if event["type"] == "error" and event["error"]["code"] == "input_audio_rate_exceeded":
                # A flood would flood the log too: the 1st, 2nd, 4th, 8th... refusal only.
                self._audio_refused += 1
                if self._audio_refused & (self._audio_refused - 1) == 0:
                    log.info("audio faster than real time: %d messages refused so far", self._audio_refused)
            elif event["type"] == "error":
                log.info("error event %s: %s", event["error"]["code"], event["error"]["message"])
            if self._takes is None or not self._takes(event):
                self._enqueue(json.dumps(event))
        for effect in output.effects:
            if isinstance(effect, Transcribe) and effect.defer_ms is not None:
                # Registered now, not when the job first runs: the deferral's next word may come first.
                released = asyncio.Event()
                self._deferred[effect.item_id] = released, self._loop.call_later(effect.defer_ms / 1000, released.set)
                self._track(self._transcribe_when_released(effect, released))
            elif isinstance(effect, Transcribe):
                if effect.final or effect.speculative or effect.check:
                    self._partial_cancel.set()  # the pass someone waits for goes first
                self._track(self._transcribe(effect))
            elif isinstance(effect, DeferTranscription):
                self._defer(effect)
            elif isinstance(effect, ScoreEnd):
                self._track(self._score_end(effect))
            elif isinstance(effect, StartResponse):
                self._start_response(effect)
            elif isinstance(effect, PrefillPrompt):
                self._track(self._prefill(effect))
            elif isinstance(effect, CancelResponse):
                cancel = self._cancels.get(effect.response_id)
                if cancel is not None:
                    cancel.set()

    def _enqueue(self, data: str) -> None:
        if self._closing:
            return
        self._queued_bytes += len(data)  # JSON text is ASCII: characters are bytes
        self._outgoing.put_nowait(data)

    def _unread_bytes(self) -> int:
        """Output queued for the client and not yet taken by it: ours, and the transport's buffer."""
        return self._queued_bytes + self.transport.buffered_bytes()

    async def _watch_unread(self) -> None:
        """Close a client that leaves its output unread (1008), rather than hold unbounded audio for it."""
        while not self._closing:
            await asyncio.sleep(SEND_BUFFER_SAMPLE_S)
            unread = self._unread_bytes()
            if self._slow_reader.too_slow(unread, time.monotonic()) and not self._closing:
                log.warning("client too slow: %d bytes unread for %.0f s; closing", unread,
                            self.limits.slow_client_grace_s)
                self.metrics.slow_clients_closed.inc()
                self._closing = True
                for cancel in self._cancels.values():
                    cancel.set()
                while not self._outgoing.empty():  # what it has not read is dropped at once
                    self._outgoing.get_nowait()
                self._queued_bytes = 0
                self._outgoing.put_nowait(None)
                await self.transport.close(CLOSE_POLICY_VIOLATION, "client too slow")
                return

    def _track(self, job: Any) -> None:
        future = asyncio.ensure_future(job)
        self._jobs.add(future)
        self.metrics.jobs_running.inc()

        def done(finished: asyncio.Future[Any]) -> None:
            self._jobs.discard(finished)
            self.metrics.jobs_running.dec()

        future.add_done_callback(done)

    def _count_dropped(self, jobs: int, reason: str) -> None:
        if jobs:
            self.metrics.jobs_dropped.labels(reason=reason).inc(jobs)

    async def _run_job(self, kind: str, function: Callable[..., T], *args: Any, key: str | None = None) -> T:
        """Run a model job through the engine's fair queue, as this session's."""
        try:
            return await self.engine.jobs.run(self.session.id, kind, function, *args, key=key)
        except JobDropped as dropped:
            if dropped.reason == "replaced":
                self._count_dropped(1, "replaced")
            raise

    async def _transcribe_when_released(self, effect: Transcribe, released: asyncio.Event) -> None:
        """Run a deferred transcription once released, or once its deferral runs out."""
        try:
            await released.wait()
        finally:
            self._deferred.pop(effect.item_id, None)
        if not self._closing:
            self._partial_cancel.set()
            await self._transcribe(effect)

    def _defer(self, effect: DeferTranscription) -> None:
        deferred = self._deferred.get(effect.item_id)
        if deferred is None:
            return  # it has run already (its deferral ran out)
        released, timer = deferred
        timer.cancel()
        if effect.release:
            released.set()
        else:
            self._deferred[effect.item_id] = released, self._loop.call_later(MAX_TRANSCRIPTION_DEFER_S, released.set)

    async def _transcribe(self, effect: Transcribe) -> None:
        def result(text: str = "", error: str | None = None, confidence: float | None = None) -> TranscriptReady:
            return TranscriptReady(effect.item_id, text, effect.final, error=error, speculative=effect.speculative,
                                   voiced_end_ms=effect.voiced_end_ms, early=effect.early, check=effect.check,
                                   confidence=confidence)

        partial = not effect.final and not effect.speculative and not effect.check
        if (partial or effect.early) and self.engine.busy:
            # Partial transcripts only feed the display, and an early speculative pass may be for a
            # pause between words: they run only while no other model work does.
            self._apply(self.session.receive_transcript(result(error="skipped: models busy"), time.monotonic()))
            return
        cancel = None
        if partial:
            cancel = self._partial_cancel = threading.Event()
            if self._closing:
                cancel.set()
        # A waiting pass is replaced by a newer one of its kind (the turn-taker ignores stale ones);
        # a turn's final pass never is.
        key = None if effect.final else "check" if effect.check else \
            f"speculative {effect.item_id}" if effect.speculative else "partial"
        try:
            heard = await self._run_job("transcribe", self.engine.transcribe, effect.audio, cancel, effect.hints,
                                        key=key)
            answer = result(heard.text, confidence=heard.confidence)
            log.debug("transcribed (%s) %r, confidence %.2f", "final" if effect.final else "speculative"
                      if effect.speculative else "check" if effect.check else "partial", heard.text, heard.confidence)
        except TranscriptionCancelled:
            answer = result(error="skipped: a turn's pass came first")
        except JobDropped as dropped:
            if self._closing:
                return  # nothing waits for it any more
            answer = result(error=f"skipped: {dropped}")
        except Exception as exc:  # noqa: BLE001 - a failed transcription ends the turn, not the session
            log.exception("transcription failed")
            answer = result(error=f"asr: {exc}")
        self._apply(self.session.receive_transcript(answer, time.monotonic()))

    async def _score_end(self, effect: ScoreEnd) -> None:
        try:
            score = await self._run_job("score", self.engine.score_end, effect.transcript, effect.audio, key="score")
            result = EndScored(effect.item_id, effect.voiced_end_ms, score.finished, score.voice,
                               recheck=effect.recheck)
        except JobDropped as dropped:  # a newer pause's score replaced it: this one is stale
            if self._closing:
                return
            result = EndScored(effect.item_id, effect.voiced_end_ms, error=str(dropped), recheck=effect.recheck)
        except Exception as exc:  # noqa: BLE001 - the words alone decide then (the unit's fallback)
            log.warning("end-of-turn scoring failed: %s", exc)
            result = EndScored(effect.item_id, effect.voiced_end_ms, error=str(exc), recheck=effect.recheck)
        self._apply(self.session.receive_end_score(result, time.monotonic()))

    async def _prefill(self, effect: PrefillPrompt) -> None:
        # One at a time; a waiting one is replaced by the newest of its sort (its prompt holds the older
        # one's): an evaluation of the speech so far never by a prefill of the history, nor the reverse.
        try:
            await self._run_job("prefill", self.engine.prefill, effect.pipeline, effect.messages, effect.audio,
                                key=_PREFILL_HISTORY if effect.audio is None else _PREFILL_SPEECH)
        except JobDropped:
            pass
        except Exception:  # noqa: BLE001 - only an optimisation: the reply evaluates the prompt itself
            log.warning("prompt prefill failed", exc_info=True)

    def _start_response(self, effect: StartResponse) -> None:
        # A waiting prefill is dropped: the reply evaluates that prompt itself.
        for key in (_PREFILL_HISTORY, _PREFILL_SPEECH):
            self._count_dropped(self.engine.jobs.drop(self.session.id, key), "replaced")
        cancel = threading.Event()
        if self._closing:
            cancel.set()
        self._cancels[effect.response_id] = cancel
        request = ResponseRequest(effect.messages, effect.options, effect.audio, effect.user_audio, effect.voice)
        responder = self.engine.responders[effect.pipeline]  # sessions choose among the engine's pipelines

        def emit(event: ResponseEvent) -> None:  # called from worker threads
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._on_progress, ResponseProgress(effect.response_id, event))

        def respond() -> None:  # in a worker thread
            with self.engine.job():
                responder.respond(request, cancel, emit)

        async def job() -> None:
            try:
                await self._run_job("reply", respond)
            except JobDropped:  # (only when the session closes: the reply never started, nothing waits for it)
                pass
            finally:
                self._cancels.pop(effect.response_id, None)

        self._track(job())

    def _on_progress(self, progress: ResponseProgress) -> None:
        self._apply(self.session.receive_response(progress, time.monotonic()))
