"""Any OpenAI-compatible speech server (`POST /v1/audio/speech`), its PCM streamed as it comes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai

from voice.audio import pcm16_to_float

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
"""OpenAI's `pcm` format: 16-bit little-endian mono at 24 kHz."""


class SpeechServerError(RuntimeError):
    """The speech server failed, refused or timed out."""


def _client(base_url: str, api_key: str | None, timeout: float) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=0)


def listed_voices(base_url: str, *, api_key: str | None = None, timeout: float = 5.0) -> list[str]:
    """The voices a speech server lists at `GET /audio/voices` (this project's `voice tts-api`,
    Kokoro-FastAPI and others; OpenAI's API has no such list): [] where it lists none."""
    try:
        listing: Any = _client(base_url, api_key, timeout).get("/audio/voices", cast_to=object)
    except openai.OpenAIError as exc:
        log.info("the speech server at %s lists no voices (%s)", base_url, exc)
        return []
    voices = listing.get("voices", []) if isinstance(listing, dict) else []
    names = [v if isinstance(v, str) else v.get("id") or v.get("name") for v in voices if isinstance(v, str | dict)]
    return [name for name in names if isinstance(name, str) and name]


class SpeechApiSynthesizer:
    """One voice of a speech server at `base_url` (for example http://gpu-host:8002/v1).

    Each chunk is one request for `pcm`; its body is yielded as the bytes come, so a server that
    streams gives the first audio before it has made the rest. Stopping the iteration (the caller
    does at barge-in, between pieces) closes the connection, and the server stops there.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, base_url: str, voice: str, *, model: str = "tts-1", api_key: str | None = None,
                 timeout: float = 20.0, speed: float | None = None) -> None:
        self._client = _client(base_url, api_key, timeout)
        self._voice = voice
        self._model = model
        self._timeout = timeout
        self._speed = speed
        self.name = voice

    def synthesize(self, text: str, soon: bool = False) -> Iterator[np.ndarray]:
        extra = {} if self._speed is None else {"speed": self._speed}
        try:
            with self._client.audio.speech.with_streaming_response.create(
                    model=self._model, voice=self._voice, input=text, response_format="pcm", **extra) as response:
                odd = b""  # a sample split across two reads waits for its second byte
                for block in response.iter_bytes():
                    block, odd = odd + block, b""
                    if len(block) % 2:
                        block, odd = block[:-1], block[-1:]
                    if block:
                        yield pcm16_to_float(block)
        except openai.APITimeoutError as exc:
            raise SpeechServerError(f"speech server timed out (nothing for {self._timeout:g} s)") from exc
        except openai.OpenAIError as exc:
            raise SpeechServerError(f"speech server error: {exc}") from exc
