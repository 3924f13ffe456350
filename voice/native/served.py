"""A native model behind an OpenAI-compatible server that takes audio in chat completions.

vLLM serving Ultravox, Qwen2-Audio, Qwen2.5-Omni or Voxtral, llama.cpp's `llama-server` (libmtmd;
it serves this project's native model with `training.mmproj`'s export), and `voice audio-api`
(the embedded native model over HTTP) accept the user's speech as an `input_audio` content part
(base64 WAV) and stream the reply like any chat completion.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile

from voice.audio import ASR_RATE
from voice.llm.base import ChatMessage, GenerationOptions
from voice.llm.openai_http import OpenAICompatibleChat
from voice.native.base import transcribe


def wav_base64(audio_16k: np.ndarray) -> str:
    """16 kHz float audio as a base64 PCM16 WAV file."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio_16k, -1.0, 1.0), ASR_RATE, subtype="PCM_16", format="WAV")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_message(audio_16k: np.ndarray, instruction: str | None = None) -> dict[str, Any]:
    """The user's turn as a chat message: optional text, then the audio."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": instruction}] if instruction else []
    parts.append({"type": "input_audio", "input_audio": {"data": wav_base64(audio_16k), "format": "wav"}})
    return {"role": "user", "content": parts}


class ServedAudioChat:
    """Streams replies to speech from `base_url` (for example http://gpu-host:8000/v1)."""

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = 20.0) -> None:
        self._chat = OpenAICompatibleChat(base_url, model=model, api_key=api_key, timeout=timeout)
        self.name = f"native:{model or base_url}"

    def stream_reply(self, audio_16k: np.ndarray, messages: list[ChatMessage], options: GenerationOptions,
                     cancel: threading.Event, instruction: str | None = None) -> Iterator[str]:
        wire = [m.as_dict() for m in messages] + [audio_message(audio_16k, instruction)]
        return self._chat.stream_messages(wire, options, cancel)

    def transcribe(self, audio_16k: np.ndarray, cancel: threading.Event | None = None, max_tokens: int = 96) -> str:
        return transcribe(self, audio_16k, cancel, max_tokens)

    def close(self) -> None:
        pass
