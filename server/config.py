"""Session settings: defaults from the command line, updated by `session.update`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from voice.llm.base import Tool
from voice.tts.voices import VoiceBook
from voice.turn_taking import END_POLICIES, TurnSettings
from voice.vad import VadConfig

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short, plain sentences. Never use lists, markdown, code or emoji."
)
SUPPORTED_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI turn detection. `server_vad` ends a turn after `silence_duration_ms`; `semantic_vad`
    ends it after a silence that depends on what the words and the voice say at the pause (by
    eagerness: voice.turn_taking.END_POLICIES)."""

    type: str = "server_vad"
    vad: VadConfig = field(default_factory=VadConfig)
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str | None = None
    idle_timeout_ms: int | None = None
    """server_vad: after this long without speech (the assistant silent), the server answers the silence."""

    @classmethod
    def semantic(cls, eagerness: str = "auto", **vad: object) -> TurnDetection:
        hold_ms = END_POLICIES[eagerness].hold_ms
        return cls(type="semantic_vad", eagerness=eagerness,
                   vad=VadConfig(**{**vad, "silence_duration_ms": hold_ms}))  # type: ignore[arg-type]

    @property
    def settings(self) -> TurnSettings:
        """What the turn-taking unit needs: the VAD, and for semantic_vad its end-of-turn policy."""
        policy = END_POLICIES[self.eagerness or "auto"] if self.type == "semantic_vad" else None
        return TurnSettings(vad=self.vad, end_policy=policy)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "type": self.type,
            "threshold": self.vad.threshold,
            "prefix_padding_ms": self.vad.prefix_padding_ms,
            "silence_duration_ms": self.vad.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
            "idle_timeout_ms": self.idle_timeout_ms,
        }
        if self.type == "semantic_vad":
            wire = {"type": self.type, "eagerness": self.eagerness or "auto",
                    "create_response": self.create_response, "interrupt_response": self.interrupt_response}
        return wire


@dataclass(frozen=True)
class SessionConfig:
    type: str = "realtime"
    """`realtime` (a conversation) or `transcription` (transcripts of the input audio, never a reply)."""
    input_format: str = "audio/pcm"
    noise_reduction: str | None = None
    truncation: str | dict[str, Any] = "auto"
    """How the history is cut when it outgrows the prompt: `auto` (to half), `disabled` (never), or
    `{"type": "retention_ratio", "retention_ratio": R}` (to R of it)."""
    """`near_field` or `far_field`: the input audio's noise is suppressed (voice/denoise.py); None: as it comes."""
    """The input audio's wire format (server/audio_formats.py): `audio/pcm`, `audio/pcmu` or `audio/pcma`."""
    output_format: str = "audio/pcm"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "alloy"
    """As the client named it: one of `voices`, or one of OpenAI's names, mapped onto them."""
    voices: VoiceBook = field(default_factory=VoiceBook)
    """The voices this server offers (`voices.resolve(voice)` speaks)."""
    output_modalities: tuple[str, ...] = ("audio",)
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection.semantic)
    transcription: dict[str, Any] | None = field(default_factory=lambda: {"model": "whisper"})
    """Whether the user's transcript is sent to the client (the cascade always transcribes)."""
    pipeline: str = "cascade"
    """How a turn is answered (voice/pipeline.py): `cascade` (ASR -> LLM on the transcript), `native`
    (the speech's embeddings straight into the LLM) or `naive` (the benchmark baseline)."""
    asr_languages: frozenset[str] | None = None
    """The languages the server's speech recogniser transcribes (None: any)."""
    pipelines: tuple[str, ...] = ("cascade",)
    """The pipelines this server offers (`native` only with a native model loaded)."""
    max_output_tokens: int | None = 160
    temperature: float = 0.7
    speed: float = 1.0
    tools: tuple[Tool, ...] = ()
    """Functions the model may call (server/tools.py)."""
    tool_choice: str | dict[str, str] = "auto"
    """`auto`, `none`, `required`, or `{"type": "function", "name": NAME}`."""

    def with_changes(self, **changes: Any) -> SessionConfig:
        return replace(self, **changes)


def transcription_session(config: SessionConfig) -> SessionConfig:
    """The configuration of a session opened as a transcription session: server_vad turn detection
    (OpenAI's default for them) and transcripts on."""
    return config.with_changes(type="transcription", turn_detection=TurnDetection(),
                               transcription=config.transcription or {"model": "whisper"})
