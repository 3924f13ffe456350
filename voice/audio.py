"""PCM conversions and resampling (soxr)."""

from __future__ import annotations

import numpy as np
import soxr

WIRE_RATE = 24_000
"""Sample rate of PCM16 audio on the wire (OpenAI Realtime `audio/pcm`)."""
ASR_RATE = 16_000
"""Sample rate Whisper and the VAD work at."""


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes to float32 samples in [-1, 1]."""
    if len(data) % 2:
        raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] to little-endian PCM16 bytes (clipped); inverse of pcm16_to_float."""
    scaled = np.asarray(samples, dtype=np.float32) * 32768.0
    return np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole signal with soxr (high quality)."""
    samples = np.asarray(samples, dtype=np.float32)
    if in_rate == out_rate or samples.size == 0:
        return samples
    return soxr.resample(samples, in_rate, out_rate, quality="HQ").astype(np.float32)


class StreamResampler:
    """Resample a stream chunk by chunk without edge artefacts between chunks."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32",
                                                                             quality=quality)

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
