"""Noise suppression of the input audio: WebRTC's audio processing module (`webrtc-noise-gain`), the
protocol's `audio.input.noise_reduction`.

It works on 10 ms frames of 16 kHz PCM16; a stream's remainder waits for the next call, so the
audio comes out at most 10 ms late and never out of order.
"""

from __future__ import annotations

import numpy as np
from webrtc_noise_gain import AudioProcessor

from voice.audio import ASR_RATE

FRAME = ASR_RATE // 100  # 10 ms
# WebRTC's suppression levels (0-4) by the protocol's microphone kinds: a close microphone hears less
# noise and keeps more of the voice with the moderate level; a distant one needs the strongest.
LEVELS = {"near_field": 2, "far_field": 4}


class Denoiser:
    """One stream's noise suppressor (it keeps the noise estimate of what it has heard)."""

    def __init__(self, kind: str) -> None:
        if kind not in LEVELS:
            raise ValueError(f"noise reduction must be one of {', '.join(LEVELS)}, not {kind!r}")
        self.kind = kind
        self._processor = AudioProcessor(0, LEVELS[kind])
        self._pending = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Suppress the noise of 16 kHz float32 samples; returns whole 10 ms frames of what came so far."""
        pending = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        whole = pending.size // FRAME * FRAME
        self._pending = pending[whole:]
        pcm = (np.clip(pending[:whole], -1.0, 1.0) * 32767).astype("<i2").tobytes()
        step = 2 * FRAME
        out = b"".join(self._processor.Process10ms(pcm[at:at + step]).audio for at in range(0, len(pcm), step))
        return np.frombuffer(out, "<i2").astype(np.float32) / 32768
