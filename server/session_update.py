"""Validation of `session.update` (and `response.create` overrides) into SessionConfig."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.config import SessionConfig, TurnDetection
from server.tools import parse_tool_choice, parse_tools, tools_to_wire
from server.wire import ProtocolError
from voice.turn_taking import END_POLICIES
from voice.vad import VadConfig

_WIRE_RATE = 24_000


def _fail(message: str, param: str, event_id: str | None, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(message, code=code, param=param, event_id=event_id)


def _number(value: Any, param: str, event_id: str | None, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"'{param}' must be a number from {low} to {high}", param, event_id)
    return float(value)


def _integer(value: Any, param: str, event_id: str | None, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"'{param}' must be an integer from {low} to {high}", param, event_id)
    return value


def _object(value: Any, param: str, event_id: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"'{param}' must be an object", param, event_id, code="invalid_type")
    return value


def _check_format(value: Any, param: str, event_id: str | None) -> None:
    fmt = _object(value, param, event_id)
    if fmt.get("type", "audio/pcm") != "audio/pcm" or fmt.get("rate", _WIRE_RATE) != _WIRE_RATE:
        raise _fail("only audio/pcm at 24000 Hz is supported", param, event_id, code="unsupported_audio_format")


def parse_turn_detection(value: Any, current: TurnDetection | None, event_id: str | None) -> TurnDetection | None:
    """A new turn detection object. It replaces the session's whole: the fields it leaves out take
    OpenAI's documented defaults (threshold 0.5, prefix_padding_ms 300, silence_duration_ms 500,
    eagerness auto, create_response and interrupt_response true); the VAD's other settings stay the
    server's."""
    if value is None:
        return None
    spec = _object(value, "session.audio.input.turn_detection", event_id)
    param = "session.audio.input.turn_detection"
    kind = spec.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise _fail("turn_detection.type must be server_vad or semantic_vad", f"{param}.type", event_id)
    documented = VadConfig()
    changes: dict[str, Any] = {"threshold": documented.threshold, "prefix_padding_ms": documented.prefix_padding_ms,
                               "silence_duration_ms": documented.silence_duration_ms}
    if "threshold" in spec:
        changes["threshold"] = _number(spec["threshold"], f"{param}.threshold", event_id, 0.0, 1.0)
    if "prefix_padding_ms" in spec:
        changes["prefix_padding_ms"] = _integer(spec["prefix_padding_ms"], f"{param}.prefix_padding_ms",
                                                event_id, 0, 5000)
    if "silence_duration_ms" in spec:
        changes["silence_duration_ms"] = _integer(spec["silence_duration_ms"], f"{param}.silence_duration_ms",
                                                  event_id, 0, 10_000)
    eagerness = None
    if kind == "semantic_vad":
        eagerness = spec.get("eagerness", "auto")
        if not isinstance(eagerness, str) or eagerness not in END_POLICIES:
            raise _fail("eagerness must be low, medium, high or auto", f"{param}.eagerness", event_id)
        changes["silence_duration_ms"] = END_POLICIES[eagerness].hold_ms
    flags = {}
    for name in ("create_response", "interrupt_response"):
        if name in spec:
            if not isinstance(spec[name], bool):
                raise _fail(f"'{name}' must be a boolean", f"{param}.{name}", event_id, code="invalid_type")
            flags[name] = spec[name]
    server_vad = current.vad if current is not None else documented
    return TurnDetection(
        type=kind,
        vad=replace(server_vad, **changes),
        create_response=flags.get("create_response", True),
        interrupt_response=flags.get("interrupt_response", True),
        eagerness=eagerness,
    )


def parse_modalities(value: Any, param: str, event_id: str | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(m not in ("audio", "text") for m in value):
        raise _fail("output_modalities must be [\"audio\"] or [\"text\"]", param, event_id)
    return ("audio",) if "audio" in value else ("text",)


def parse_max_tokens(value: Any, param: str, event_id: str | None) -> int | None:
    if value == "inf":
        return None
    return _integer(value, param, event_id, 1, 4096)


def validate_response_request(request: Any, event_id: str | None, config: SessionConfig | None = None
                              ) -> dict[str, Any]:
    """The `response` object of `response.create`, checked (so the client hears about a bad field at
    once); its `tools` and `tool_choice`, parsed, replace the session's for this response."""
    request = _object(request or {}, "response", event_id)
    if "tools" in request or "tool_choice" in request:
        tools = parse_tools(request["tools"], "response.tools", event_id) if "tools" in request \
            else (config.tools if config else ())
        choice = parse_tool_choice(request["tool_choice"], tools, "response.tool_choice", event_id) \
            if "tool_choice" in request else (config.tool_choice if config else "auto")
        if isinstance(choice, dict) and not any(tool.name == choice["name"] for tool in tools):
            raise _fail(f"tool_choice names {choice['name']!r}, which is not one of the tools",
                        "response.tool_choice", event_id)
        request = {**request, "tools": tools, "tool_choice": choice}
    if "output_modalities" in request:
        parse_modalities(request["output_modalities"], "response.output_modalities", event_id)
    if "max_output_tokens" in request:
        parse_max_tokens(request["max_output_tokens"], "response.max_output_tokens", event_id)
    if "instructions" in request and not isinstance(request["instructions"], str):
        raise _fail("'instructions' must be a string", "response.instructions", event_id)
    metadata = request.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise _fail("response.metadata must map strings to strings", "response.metadata", event_id)
    return request


def apply_session_update(config: SessionConfig, session: Any, event_id: str | None) -> SessionConfig:
    """Return the configuration after a `session.update`, or raise ProtocolError (nothing changes)."""
    session = _object(session, "session", event_id)
    if session.get("type", "realtime") != "realtime":
        raise _fail("only realtime sessions are served here", "session.type", event_id, code="unsupported")
    changes: dict[str, Any] = {}
    if "instructions" in session:
        if not isinstance(session["instructions"], str):
            raise _fail("'instructions' must be a string", "session.instructions", event_id, code="invalid_type")
        changes["instructions"] = session["instructions"]
    if "output_modalities" in session:
        changes["output_modalities"] = parse_modalities(session["output_modalities"], "session.output_modalities",
                                                        event_id)
    if "max_output_tokens" in session:
        changes["max_output_tokens"] = parse_max_tokens(session["max_output_tokens"], "session.max_output_tokens",
                                                        event_id)
    if "temperature" in session:
        changes["temperature"] = _number(session["temperature"], "session.temperature", event_id, 0.0, 2.0)
    if "tools" in session or "tool_choice" in session:
        tools = parse_tools(session["tools"], "session.tools", event_id) if "tools" in session else config.tools
        choice = parse_tool_choice(session["tool_choice"], tools, "session.tool_choice", event_id) \
            if "tool_choice" in session else config.tool_choice
        if isinstance(choice, dict) and not any(tool.name == choice["name"] for tool in tools):
            raise _fail(f"tool_choice names {choice['name']!r}, which is no longer one of the tools",
                        "session.tool_choice", event_id)
        changes["tools"], changes["tool_choice"] = tools, choice
    if "pipeline" in session:  # an extension of the Realtime API: the path a turn takes
        if session["pipeline"] not in config.pipelines:
            raise _fail(f"'pipeline' must be one of: {', '.join(config.pipelines)}", "session.pipeline", event_id)
        changes["pipeline"] = session["pipeline"]
    audio = _object(session.get("audio") or {}, "session.audio", event_id)
    audio_in = _object(audio.get("input") or {}, "session.audio.input", event_id)
    audio_out = _object(audio.get("output") or {}, "session.audio.output", event_id)
    if "format" in audio_in:
        _check_format(audio_in["format"], "session.audio.input.format", event_id)
    if "format" in audio_out:
        _check_format(audio_out["format"], "session.audio.output.format", event_id)
    if "transcription" in audio_in:
        value = audio_in["transcription"]
        changes["transcription"] = None if value is None else _object(value, "session.audio.input.transcription",
                                                                       event_id)
    if "turn_detection" in audio_in:
        changes["turn_detection"] = parse_turn_detection(audio_in["turn_detection"], config.turn_detection, event_id)
    if "voice" in audio_out:
        voice = audio_out["voice"]
        if isinstance(voice, dict):
            voice = voice.get("id")
        if not isinstance(voice, str) or not voice:
            raise _fail("'voice' must be a voice name", "session.audio.output.voice", event_id)
        changes["voice"] = voice
    if "speed" in audio_out:
        changes["speed"] = _number(audio_out["speed"], "session.audio.output.speed", event_id, 0.25, 1.5)
    return config.with_changes(**changes)


def session_to_wire(config: SessionConfig, session_id: str, model: str) -> dict[str, Any]:
    """The session object of `session.created` / `session.updated`."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": _WIRE_RATE},
                "transcription": config.transcription,
                "noise_reduction": None,
                "turn_detection": config.turn_detection.to_wire() if config.turn_detection else None,
            },
            "output": {"format": {"type": "audio/pcm", "rate": _WIRE_RATE}, "voice": config.voice,
                       "speed": config.speed},
        },
        "max_output_tokens": config.max_output_tokens if config.max_output_tokens is not None else "inf",
        "pipeline": config.pipeline,
        "pipelines": list(config.pipelines),
        "tools": tools_to_wire(config.tools),
        "tool_choice": config.tool_choice,
    }
