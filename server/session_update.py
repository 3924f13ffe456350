"""`session.update` (and `response.create` overrides), typed by server/client_events.py, into SessionConfig."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.audio_formats import FORMATS
from server.client_events import (
    AudioFormat,
    Name,
    ResponseSpec,
    SessionSpec,
    TranscriptionSessionSpec,
    TurnDetectionSpec,
    VoiceId,
)
from server.config import SessionConfig, TurnDetection
from server.tools import ToolChoice, parse_tool_choice, parse_tools, tools_to_wire
from server.wire import ProtocolError
from voice.llm.base import Tool
from voice.tts.voices import OPENAI_VOICES
from voice.turn_taking import END_POLICIES
from voice.vad import VadConfig


def _fail(message: str, param: str, event_id: str | None, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(message, code=code, param=param, event_id=event_id)


def parse_format(fmt: AudioFormat, param: str, event_id: str | None) -> str:
    """The name of a served wire format: audio/pcm at 24 kHz, audio/pcmu or audio/pcma at 8 kHz."""
    served = FORMATS.get(fmt.type)
    if served is None or fmt.rate not in (None, served.rate):
        raise _fail("the audio formats served are audio/pcm at 24000 Hz, and audio/pcmu and audio/pcma at 8000 Hz",
                    param, event_id, code="unsupported_audio_format")
    return served.type


def parse_voice(voice: Name | VoiceId, config: SessionConfig, param: str, event_id: str | None) -> str:
    """The voice named (a name or `{id}`), if this server has it or it is one of OpenAI's names."""
    name = voice if isinstance(voice, str) else voice.id
    if config.voices.resolve(name) is None:
        raise _fail(f"unknown voice {name!r}: this server's voices are {', '.join(config.voices.ids)} "
                    f"(OpenAI's names are mapped onto them: {', '.join(OPENAI_VOICES)})", param, event_id)
    return name


def parse_turn_detection(spec: TurnDetectionSpec | None, current: TurnDetection | None) -> TurnDetection | None:
    """A new turn detection object. It replaces the session's whole: the fields it leaves out take
    OpenAI's documented defaults (threshold 0.5, prefix_padding_ms 300, silence_duration_ms 500,
    eagerness auto, create_response and interrupt_response true); the VAD's other settings stay the
    server's."""
    if spec is None:
        return None
    documented = VadConfig()
    changes: dict[str, Any] = {
        "threshold": documented.threshold if spec.threshold is None else spec.threshold,
        "prefix_padding_ms": documented.prefix_padding_ms if spec.prefix_padding_ms is None
        else spec.prefix_padding_ms,
        "silence_duration_ms": documented.silence_duration_ms if spec.silence_duration_ms is None
        else spec.silence_duration_ms,
    }
    eagerness = None
    if spec.type == "semantic_vad":
        eagerness = spec.eagerness or "auto"
        changes["silence_duration_ms"] = END_POLICIES[eagerness].hold_ms
    server_vad = current.vad if current is not None else documented
    return TurnDetection(type=spec.type, vad=replace(server_vad, **changes), create_response=spec.create_response,
                         interrupt_response=spec.interrupt_response, eagerness=eagerness,
                         idle_timeout_ms=spec.idle_timeout_ms if spec.type == "server_vad" else None)


def parse_modalities(value: list[str]) -> tuple[str, ...]:
    return ("audio",) if "audio" in value else ("text",)


def parse_max_tokens(value: int | str) -> int | None:
    return None if value == "inf" else int(value)


def _tools_and_choice(spec: SessionSpec | ResponseSpec, tools: tuple[Tool, ...], choice: ToolChoice, where: str,
                      event_id: str | None) -> tuple[tuple[Tool, ...], ToolChoice]:
    """The tools and tool choice after `spec` (its own where given, else `tools` and `choice`)."""
    if spec.tools is not None:
        tools = parse_tools(spec.tools, f"{where}.tools", event_id)
    if spec.tool_choice is not None:
        choice = parse_tool_choice(spec.tool_choice, tools, f"{where}.tool_choice", event_id)
    if isinstance(choice, dict) and not any(tool.name == choice["name"] for tool in tools):
        raise _fail(f"tool_choice names {choice['name']!r}, which is not one of the tools", f"{where}.tool_choice",
                    event_id)
    return tools, choice


def validate_response_request(spec: ResponseSpec | None, event_id: str | None, config: SessionConfig
                              ) -> dict[str, Any]:
    """The `response` of `response.create` (typed by the schema) as the overrides of this response:
    its tools and tool choice checked against each other, the client's metadata as it came."""
    if spec is None:
        return {}
    request: dict[str, Any] = {}
    if spec.audio is not None and spec.audio.output is not None:
        if spec.audio.output.format is not None:
            request["output_format"] = parse_format(spec.audio.output.format, "response.audio.output.format",
                                                    event_id)
        if spec.audio.output.voice is not None:
            request["voice"] = parse_voice(spec.audio.output.voice, config, "response.audio.output.voice", event_id)
    if spec.tools is not None or spec.tool_choice is not None:
        request["tools"], request["tool_choice"] = _tools_and_choice(spec, config.tools, config.tool_choice,
                                                                     "response", event_id)
    if spec.output_modalities is not None:
        request["output_modalities"] = parse_modalities(spec.output_modalities)
    if spec.max_output_tokens is not None:
        request["max_output_tokens"] = parse_max_tokens(spec.max_output_tokens)
    if spec.instructions is not None:
        request["instructions"] = spec.instructions
    if spec.temperature is not None:
        request["temperature"] = spec.temperature
    if spec.metadata is not None:
        request["metadata"] = dict(spec.metadata)
    return request


def apply_session_update(config: SessionConfig, session: SessionSpec | TranscriptionSessionSpec,
                         event_id: str | None) -> SessionConfig:
    """Return the configuration after a `session.update` (typed by the schema), or raise
    ProtocolError (nothing changes). A transcription session's update carries its input audio alone."""
    changes: dict[str, Any] = {}
    if "type" in session.model_fields_set:  # (an update without one leaves the session's type as it is)
        changes["type"] = session.type
    if isinstance(session, SessionSpec):
        changes.update(_realtime_changes(config, session, event_id))
    audio_in = session.audio.input if session.audio is not None else None
    if audio_in is not None:
        if audio_in.format is not None:
            changes["input_format"] = parse_format(audio_in.format, "session.audio.input.format", event_id)
        if "transcription" in audio_in.model_fields_set:
            changes["transcription"] = None if audio_in.transcription is None \
                else audio_in.transcription.model_dump(exclude_unset=True)
            language = (changes["transcription"] or {}).get("language")
            if language and config.asr_languages is not None and language not in config.asr_languages:
                raise _fail(f"this server's speech recogniser transcribes {'/'.join(sorted(config.asr_languages))} "
                            f"only, not {language!r}", "session.audio.input.transcription.language", event_id,
                            code="unsupported_language")
        if "turn_detection" in audio_in.model_fields_set:
            changes["turn_detection"] = parse_turn_detection(audio_in.turn_detection, config.turn_detection)
        if "noise_reduction" in audio_in.model_fields_set:
            changes["noise_reduction"] = audio_in.noise_reduction.type if audio_in.noise_reduction else None
    updated = config.with_changes(**changes)
    if updated.type == "transcription" and updated.transcription is None:
        raise _fail("a transcription session transcribes: session.audio.input.transcription may not be null",
                    "session.audio.input.transcription", event_id)
    return updated


def _realtime_changes(config: SessionConfig, session: SessionSpec, event_id: str | None) -> dict[str, Any]:
    """The changes of a realtime session's own fields (all but its input audio)."""
    changes: dict[str, Any] = {}
    if session.instructions is not None:
        changes["instructions"] = session.instructions
    if session.output_modalities is not None:
        changes["output_modalities"] = parse_modalities(session.output_modalities)
    if session.max_output_tokens is not None:
        changes["max_output_tokens"] = parse_max_tokens(session.max_output_tokens)
    if session.temperature is not None:
        changes["temperature"] = session.temperature
    if session.tools is not None or session.tool_choice is not None:
        changes["tools"], changes["tool_choice"] = _tools_and_choice(session, config.tools, config.tool_choice,
                                                                     "session", event_id)
    if session.pipeline is not None:  # an extension of the Realtime API: the path a turn takes
        if session.pipeline not in config.pipelines:
            raise _fail(f"'pipeline' must be one of: {', '.join(config.pipelines)}", "session.pipeline", event_id)
        changes["pipeline"] = session.pipeline
    if session.truncation is not None:
        changes["truncation"] = session.truncation if isinstance(session.truncation, str) \
            else session.truncation.model_dump()
    audio_out = session.audio.output if session.audio is not None else None
    if audio_out is not None:
        if audio_out.format is not None:
            changes["output_format"] = parse_format(audio_out.format, "session.audio.output.format", event_id)
        if audio_out.voice is not None:
            changes["voice"] = parse_voice(audio_out.voice, config, "session.audio.output.voice", event_id)
        if audio_out.speed is not None:
            changes["speed"] = audio_out.speed
    return changes


def session_to_wire(config: SessionConfig, session_id: str, model: str) -> dict[str, Any]:
    """The session object of `session.created` / `session.updated`."""
    audio_in = {
        "format": FORMATS[config.input_format].to_wire(),
        "transcription": config.transcription,
        "noise_reduction": {"type": config.noise_reduction} if config.noise_reduction else None,
        "turn_detection": config.turn_detection.to_wire() if config.turn_detection else None,
    }
    if config.type == "transcription":
        return {"type": "transcription", "object": "realtime.transcription_session", "id": session_id,
                "audio": {"input": audio_in}, "include": None}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": audio_in,
            "output": {"format": FORMATS[config.output_format].to_wire(), "voice": config.voice,
                       "speed": config.speed},
        },
        "max_output_tokens": config.max_output_tokens if config.max_output_tokens is not None else "inf",
        "pipeline": config.pipeline,
        "pipelines": list(config.pipelines),
        "voices": list(config.voices.ids),  # an extension, as `pipelines`: the server's voices, the default first
        "tools": tools_to_wire(config.tools),
        "tool_choice": config.tool_choice,
        "truncation": config.truncation,
    }
