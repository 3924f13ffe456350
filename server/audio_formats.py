"""The wire's audio formats (`audio/pcm` at 24 kHz, G.711 `audio/pcmu` and `audio/pcma` at 8 kHz)
and the streams that convert them to and from the pipeline's audio. No I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voice.audio import ASR_RATE, WIRE_RATE, StreamResampler, float_to_pcm16
from voice.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode


def _pcm16_decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def _pcm16_encode(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


@dataclass(frozen=True)
class AudioFormat:
    """One wire format: its name, sample rate and codec (int16 samples to and from bytes)."""

    type: str
    rate: int
    sample_bytes: int
    decode: Callable[[bytes], np.ndarray]
    encode: Callable[[np.ndarray], bytes]

    def seconds(self, size: int) -> float:
        """How long `size` bytes of this format play."""
        return size / self.sample_bytes / self.rate

    def to_wire(self) -> dict[str, Any]:
        # The GA reference's G.711 format objects carry their type alone (the rate is always 8000).
        return {"type": self.type, "rate": self.rate} if self.type == "audio/pcm" else {"type": self.type}


PCM = AudioFormat("audio/pcm", WIRE_RATE, 2, _pcm16_decode, _pcm16_encode)
PCMU = AudioFormat("audio/pcmu", 8000, 1, ulaw_decode, ulaw_encode)
PCMA = AudioFormat("audio/pcma", 8000, 1, alaw_decode, alaw_encode)
FORMATS = {fmt.type: fmt for fmt in (PCM, PCMU, PCMA)}


class InputDecoder:
    """A session's input audio in its wire format, as float32 samples at the ASR's 16 kHz."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        # soxr's HQ filter would delay 8 kHz input 66 ms (the end of every turn with it), MQ's 26 ms;
        # G.711's 8-bit codes need no more than MQ's precision.
        self._resampler = StreamResampler(fmt.rate, ASR_RATE, "HQ" if fmt.rate == WIRE_RATE else "MQ")

    def asr_samples(self, size: int) -> int:
        """How many 16 kHz samples `size` bytes of input become (about)."""
        return size // self.format.sample_bytes * ASR_RATE // self.format.rate

    def process(self, data: bytes) -> np.ndarray:
        samples = self.format.decode(data).astype(np.float32) / 32768.0
        return self._resampler.process(samples)


class OutputEncoder:
    """A response's speech (PCM16 at 24 kHz) in the session's output format, chunk by chunk."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = None if fmt is PCM else StreamResampler(WIRE_RATE, fmt.rate)

    def encode(self, pcm: bytes) -> bytes:
        if self._resampler is None:
            return pcm
        samples = self._resampler.process(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
        return self.format.encode(np.frombuffer(float_to_pcm16(samples), dtype="<i2"))

    def flush(self) -> bytes:
        """What the resampler still holds, at the end of the speech."""
        if self._resampler is None:
            return b""
        samples = self._resampler.process(np.zeros(0, dtype=np.float32), last=True)
        return self.format.encode(np.frombuffer(float_to_pcm16(samples), dtype="<i2"))
