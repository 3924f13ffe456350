"""`audio.input.noise_reduction`: WebRTC's noise suppression on the input audio, on a real recording
under steady noise (the noise is generated: it is the input, not the thing under test)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from server.config import SessionConfig, TurnDetection
from server.session import RealtimeSession
from tests.helpers import DATA, reference, wer
from tests.test_protocol import Driver
from voice.asr.whisper import WhisperTranscriber
from voice.audio import ASR_RATE, WIRE_RATE, resample
from voice.denoise import Denoiser
from voice.models import whisper_model

CLIP = "06_ps_goforward.wav"


def db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x)) + 1e-12))


def noisy(seconds_before: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The clip after `seconds_before` of noise, under steady noise at about 10 dB below the speech."""
    speech, rate = soundfile.read(DATA / CLIP, dtype="float32")
    assert rate == ASR_RATE
    lead = np.zeros(int(seconds_before * ASR_RATE), np.float32)
    clean = np.concatenate([lead, speech, np.zeros(ASR_RATE // 2, np.float32)])
    noise = np.random.default_rng(7).normal(0, 1, clean.size).astype(np.float32)
    noise *= np.sqrt(np.mean(np.square(speech)) / np.mean(np.square(noise))) / np.sqrt(10)
    return clean + noise, noise


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_the_noise_is_suppressed_and_the_words_stay(kind):
    mixed, noise = noisy()
    denoiser = Denoiser(kind)
    out = np.concatenate([denoiser.process(mixed[at:at + 1000]) for at in range(0, mixed.size, 1000)])
    assert mixed.size - out.size < 160  # whole 10 ms frames, in order; the rest waits for more audio
    settled = slice(ASR_RATE, 2 * ASR_RATE)  # noise alone, once the suppressor has learnt it
    assert db(out[settled]) < db(mixed[settled]) - 10
    whisper = WhisperTranscriber(whisper_model(None))
    assert wer(reference(CLIP), whisper.transcribe(out)) <= 0.25


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="near_field, far_field"):
        Denoiser("studio")


def test_a_session_with_noise_reduction_hears_the_turn_through_the_noise(silero):
    mixed, _ = noisy()
    pcm = (np.clip(resample(mixed, ASR_RATE, WIRE_RATE), -1, 1) * 32767).astype("<i2").tobytes()
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection()), silero))
    driver.send({"type": "session.update", "session": {"audio": {"input": {
        "noise_reduction": {"type": "far_field"}}}}})
    assert driver.of("session.updated")[-1]["session"]["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    driver.stream(pcm)
    assert driver.of("input_audio_buffer.speech_started") and driver.of("input_audio_buffer.speech_stopped")
    turn = driver.turn_job().audio  # the turn's audio is the cleaned one (its lead-in is noise alone)
    assert db(turn[:ASR_RATE // 4]) < db(mixed[:ASR_RATE // 4]) - 10
    driver.send({"type": "session.update", "session": {"audio": {"input": {"noise_reduction": None}}}})
    assert driver.of("session.updated")[-1]["session"]["audio"]["input"]["noise_reduction"] is None
