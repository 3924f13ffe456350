"""Session settings: defaults from the command line, updated by `session.update`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from voice.vad import VadConfig

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short, plain sentences. Never use lists, markdown, code or emoji."
)
SUPPORTED_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI `server_vad` settings (`semantic_vad` maps onto a silence window by eagerness)."""

    type: str = "server_vad"
    vad: VadConfig = field(default_factory=VadConfig)
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "type": self.type,
            "threshold": self.vad.threshold,
            "prefix_padding_ms": self.vad.prefix_padding_ms,
            "silence_duration_ms": self.vad.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        if self.type == "semantic_vad":
            wire = {"type": self.type, "eagerness": self.eagerness or "auto",
                    "create_response": self.create_response, "interrupt_response": self.interrupt_response}
        return wire


@dataclass(frozen=True)
class SessionConfig:
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "alloy"
    output_modalities: tuple[str, ...] = ("audio",)
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = field(default_factory=lambda: {"model": "whisper"})
    """Whether the user's transcript is sent to the client (the cascade always transcribes)."""
    streaming_asr: bool = True
    """Partial and speculative transcription while the user speaks (off for the naive baseline)."""
    max_output_tokens: int | None = 160
    temperature: float = 0.7
    speed: float = 1.0

    def with_changes(self, **changes: Any) -> SessionConfig:
        return replace(self, **changes)
