"""PCM conversion and soxr resampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.audio import StreamResampler, float_to_pcm16, pcm16_to_float, resample


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("src", "dst"), [(24_000, 16_000), (22_050, 24_000), (16_000, 24_000), (48_000, 16_000)])
def test_resampling_keeps_pitch_and_duration(src, dst):
    out = resample(tone(440, src), src, dst)
    assert abs(len(out) - dst) <= 1
    assert abs(dominant_frequency(out, dst) - 440) < 2


def test_resampling_removes_what_the_new_rate_cannot_hold():
    out = resample(tone(10_000, 24_000), 24_000, 16_000)  # above the 8 kHz Nyquist limit
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01


def test_stream_resampler_matches_whole_signal():
    signal = tone(300, 24_000, 2.0)
    stream = StreamResampler(24_000, 16_000)
    pieces = [stream.process(signal[i:i + 480]) for i in range(0, len(signal), 480)]
    pieces.append(stream.process(np.zeros(0, dtype=np.float32), last=True))
    streamed = np.concatenate(pieces)
    whole = resample(signal, 24_000, 16_000)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole)) - 200
    assert np.max(np.abs(streamed[200:n] - whole[200:n])) < 0.01


@given(st.binary(max_size=400).map(lambda b: b[: len(b) // 2 * 2]))
def test_pcm16_round_trip(data):
    assert float_to_pcm16(pcm16_to_float(data)) == data


def test_odd_length_pcm_is_refused():
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float(b"\x00\x01\x02")


def test_float_to_pcm16_clips():
    assert np.frombuffer(float_to_pcm16(np.array([2.0, -2.0], dtype=np.float32)), "<i2").tolist() == [32767, -32768]
