"""The brain benchmark's requests as speech: Piper's bundled voice, espeak-ng and flite, kept on disk."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.turns import Clip, last_voiced_ms
from voice.audio import WIRE_RATE, float_to_pcm16, resample

VOICES = ("piper", "espeak", "flite")
LEAD_IN_S = 0.4  # silence before the speech, as a microphone hears before anyone talks
CACHE = Path(__file__).resolve().parent.parent / "data" / "brain_speech"


@cache
def _piper():
    from voice.models import piper_voice
    from voice.tts.piper import PiperSynthesizer

    model, config = piper_voice(None)
    return PiperSynthesizer(model, config, stream=False)


def _command_wav(command: list[str]) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "speech.wav"
        subprocess.run([*command, str(path)], check=True, capture_output=True, timeout=60)
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def synthesise(text: str, voice: str) -> tuple[np.ndarray, int]:
    """`text` spoken by `voice` (one of VOICES): mono float samples and their rate."""
    if voice == "piper":
        piper = _piper()
        return np.concatenate(list(piper.synthesize(text))), piper.sample_rate
    if voice == "espeak":
        return _command_wav(["espeak-ng", "-v", "en-us", "-s", "165", text, "-w"])
    if voice == "flite":
        return _command_wav(["flite", "-voice", "slt", "-t", text, "-o"])
    raise ValueError(f"unknown voice {voice!r}: choose from {', '.join(VOICES)}")


def spoken_clip(name: str, text: str, voice: str, cache_dir: Path = CACHE) -> Clip:
    """`text` spoken by `voice` after LEAD_IN_S of silence, as 24 kHz PCM16 with the end of its
    speech found from the audio (as benchmarks/turns.py does for recordings); made once, then read
    from `cache_dir`."""
    key = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:16]
    path = cache_dir / f"{voice}-{key}.wav"
    if not path.is_file():
        samples, rate = synthesise(text, voice)
        audio = np.concatenate([np.zeros(int(LEAD_IN_S * WIRE_RATE), np.float32), resample(samples, rate, WIRE_RATE)])
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".part.wav")
        soundfile.write(str(temporary), audio, WIRE_RATE, subtype="PCM_16")
        temporary.replace(path)
    samples, rate = soundfile.read(str(path), dtype="float32")
    return Clip(name, float_to_pcm16(samples), text, last_voiced_ms(samples, rate))
