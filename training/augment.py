"""Audio augmentation for the projector's training data: make synthetic speech sound more like a
real microphone in a real room.

Each example gets speed perturbation, silence around the speech and a random level; some also get
room reverberation (a synthetic impulse response: a direct path and exponentially decaying noise),
a microphone-like colouring (a smooth random equaliser curve, up to +-`EQ_DB` dB), a band limit
(telephone or a cheap microphone: resampled down and back up), and white or pink noise at a random
signal-to-noise ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voice.audio import ASR_RATE, resample, rms_dbfs

EQ_DB = 6.0
BAND_RATES = (8000, 11025, 12000)  # what a phone line or a cheap microphone keeps: up to half of these


@dataclass(frozen=True)
class AugmentOptions:
    noise_share: float = 0.7
    reverb_share: float = 0.0
    eq_share: float = 0.0
    band_share: float = 0.0


def augment(audio: np.ndarray, rng: np.random.Generator,
            options: AugmentOptions = AugmentOptions()) -> tuple[np.ndarray, dict]:
    """The augmented 16 kHz audio and what was done to it (for the manifest)."""
    speed = float(rng.uniform(0.9, 1.1))
    audio = resample(audio, int(ASR_RATE * speed), ASR_RATE)  # faster and higher (or slower and lower)
    info: dict = {"speed": round(speed, 3)}
    shares = (options.reverb_share, options.eq_share, options.band_share)
    # All three are drawn whenever any is asked for, so one option's share does not move the others'
    # draws; with none asked for, nothing is drawn and the stream is what it was before they existed.
    reverb, eq, band = rng.random(3) < shares if any(shares) else (False, False, False)
    if reverb:
        rt60, direct = float(rng.uniform(0.15, 0.8)), float(rng.uniform(-3.0, 12.0))
        audio = convolve(audio, room_response(rt60, direct, rng))
        info.update(rt60_s=round(rt60, 3), direct_to_reverb_db=round(direct, 1))
    if eq:
        audio = colour(audio, rng)
        info["eq"] = True
    if band:
        rate = int(rng.choice(BAND_RATES))
        audio = resample(resample(audio, ASR_RATE, rate), rate, ASR_RATE)
        info["band_rate"] = rate
    lead, tail = (int(rng.uniform(0.02, 0.4) * ASR_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    level = float(rng.uniform(-38.0, -14.0))
    if audio.any():
        # The speech's peaks stay below full scale (as a recorder's gain would keep them): the level gives way.
        level = min(level, rms_dbfs(audio) + 20 * float(np.log10(0.99 / np.abs(audio).max())))
        audio = audio * np.float32(10 ** ((level - rms_dbfs(audio)) / 20))
    info.update(level_dbfs=round(level, 1), noise=None)
    if rng.random() < options.noise_share:
        kind = "pink" if rng.random() < 0.5 else "white"
        snr = float(rng.uniform(5.0, 40.0))
        noise = coloured_noise(audio.size, kind, rng)
        noise *= np.float32(10 ** ((rms_dbfs(audio) - snr - rms_dbfs(noise)) / 20))
        audio = audio + noise
        info.update(noise=kind, snr_db=round(snr, 1))
    return np.clip(audio, -1.0, 1.0).astype(np.float32), info


def room_response(rt60: float, direct_to_reverb_db: float, rng: np.random.Generator,
                  rate: int = ASR_RATE) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then noise decaying by 60 dB in
    `rt60` seconds, scaled so that the direct path is `direct_to_reverb_db` above the tail's energy."""
    n = max(2, int(rt60 * rate))
    t = np.arange(n, dtype=np.float32) / rate
    tail = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9078 * t / rt60).astype(np.float32)
    tail[0] = 0.0
    tail *= np.float32(10 ** (-direct_to_reverb_db / 20) / max(1e-9, float(np.sqrt(np.sum(tail ** 2)))))
    tail[0] = 1.0
    return tail


def convolve(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`audio` through `response` (FFT convolution), as long as the audio plus the response's
    tail, at the audio's level."""
    if audio.size == 0:
        return audio
    n = audio.size + response.size - 1
    wet = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(response, n), n).astype(np.float32)
    before, after = rms_dbfs(audio), rms_dbfs(wet)
    return wet * np.float32(10 ** ((before - after) / 20)) if np.isfinite(before) and np.isfinite(after) else wet


def colour(audio: np.ndarray, rng: np.random.Generator, rate: int = ASR_RATE) -> np.ndarray:
    """A smooth random equaliser: gains (up to +-EQ_DB) at six log-spaced frequencies, interpolated
    in log frequency."""
    if audio.size < 2:
        return audio
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(audio.size, 1 / rate)
    anchors = np.geomspace(100.0, rate / 2, 6)
    gains_db = rng.uniform(-EQ_DB, EQ_DB, anchors.size)
    curve = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(anchors), gains_db)
    return np.fft.irfft(spectrum * 10 ** (curve / 20), audio.size).astype(np.float32)


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """White noise, or pink (1/f power)."""
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white" or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    return np.fft.irfft(spectrum, n).astype(np.float32)
