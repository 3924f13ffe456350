"""Prometheus metrics, derived from the server events every session sends (one place)."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGES = ("end_of_turn_ms", "transcript_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms")
_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """The server's counters; `observe_event` is fed every outgoing server event."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_active = Gauge("voice_sessions_active", "Open websocket sessions", registry=self.registry)
        self.sessions_total = Counter("voice_sessions", "Sessions opened", registry=self.registry)
        self.sessions_refused = Counter("voice_sessions_refused", "Connections refused", ["reason"],
                                        registry=self.registry)
        self.slow_clients_closed = Counter("voice_slow_clients_closed", "Sessions closed for not reading",
                                           registry=self.registry)
        self.turns = Counter("voice_turns", "User turns committed", registry=self.registry)
        self.responses = Counter("voice_responses", "Responses by final status", ["status"], registry=self.registry)
        self.errors = Counter("voice_errors", "Error events sent, by code", ["code"], registry=self.registry)
        self.jobs_running = Gauge("voice_jobs_running", "Model jobs (transcriptions, responses) under way",
                                  registry=self.registry)
        self.jobs_waiting = Gauge("voice_jobs_waiting", "Model jobs waiting for a worker (voice/scheduler.py)",
                                  registry=self.registry)
        self.jobs_dropped = Counter("voice_jobs_dropped", "Waiting model jobs that never ran: replaced by a newer one "
                                    "of their kind, or their session closed", ["reason"], registry=self.registry)
        self.stage_seconds = Histogram("voice_stage_seconds", "Time from the end of the user's speech to each stage",
                                       ["stage"], buckets=_BUCKETS, registry=self.registry)
        self.models_ready = Gauge("voice_models_ready", "1 once the models are loaded", registry=self.registry)

    def observe_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.committed":
            self.turns.inc()
        elif kind == "error":
            self.errors.labels(code=str(event["error"].get("code"))).inc()
        elif kind == "response.done":
            response = event["response"]
            self.responses.labels(status=response["status"]).inc()
            # These keys are the server's alone (a client's metadata may not use them: client_events).
            metadata = response.get("metadata") or {}
            if metadata.get("timing_origin") == "speech_end":
                for stage in _STAGES:
                    seconds = _seconds(metadata.get(stage))
                    if seconds is not None:
                        self.stage_seconds.labels(stage=stage.removesuffix("_ms")).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _seconds(ms: object) -> float | None:
    """A stage timing the server wrote (milliseconds, a string), in seconds; None if absent."""
    try:
        value = float(ms) / 1000 if isinstance(ms, str) else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
