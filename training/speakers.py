"""Text to 16 kHz speech in many voices, for the projector's training data.

Piper speaks with the bundled voice (random rate and prosody); espeak-ng (eleven voice variants,
random rate and pitch) and flite (its built-in voices: American and Scottish, male and female,
statistical and diphone) speak a share of the examples when they are installed (`apt-get install
espeak-ng flite`).

Festival's voices (`apt-get install festival festvox-kdlpc16k festvox-us-slt-hts`) are kept out of
the training data on purpose: `festival_speak` gives the evaluation voices the projector has never
heard (benchmarks/native_eval.py).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from voice import models
from voice.audio import ASR_RATE, resample

ESPEAK_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m7", "+f1", "+f2", "+f3", "+f4", "+klatt"]
FLITE_VOICES = ["slt", "rms", "awb", "kal16"]
FESTIVAL_VOICES = ("ked_diphone", "cmu_us_slt_arctic_hts")
"""An American man (diphone) and woman (HTS statistical), never in the training data."""


class Speaker:
    """Speaks text with a random engine and random voice settings."""

    def __init__(self, espeak_share: float = 0.3, flite_share: float = 0.0, threads: int = 2) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        model, config = models.piper_voice(None)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = False
        self._piper = PiperVoice(
            session=onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"]),
            config=PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8"))),
        )
        self.espeak = shutil.which("espeak-ng")
        self.flite = shutil.which("flite")
        self.espeak_share = espeak_share if self.espeak else 0.0
        self.flite_share = flite_share if self.flite else 0.0

    def speak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        """The speech and the voice settings (for the manifest)."""
        draw = rng.random()
        if draw < self.espeak_share:
            return self._espeak(text, rng)
        if draw < self.espeak_share + self.flite_share:
            return self._flite(text, rng)
        return self._piper_speak(text, rng)

    def _piper_speak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        from piper.config import SynthesisConfig

        settings = {"tts": "piper", "length_scale": round(rng.uniform(0.75, 1.35), 3),
                    "noise_scale": round(rng.uniform(0.4, 0.9), 3), "noise_w_scale": round(rng.uniform(0.5, 1.1), 3)}
        config = SynthesisConfig(length_scale=settings["length_scale"], noise_scale=settings["noise_scale"],
                                 noise_w_scale=settings["noise_w_scale"])
        chunks = [chunk.audio_float_array for chunk in self._piper.synthesize(text, syn_config=config)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return resample(audio, self._piper.config.sample_rate, ASR_RATE), settings

    def _espeak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        settings = {"tts": "espeak-ng", "voice": "en-us" + rng.choice(ESPEAK_VARIANTS),
                    "speed": rng.randint(130, 210), "pitch": rng.randint(25, 75)}
        wav = subprocess.run([self.espeak, "-v", settings["voice"], "-s", str(settings["speed"]),
                              "-p", str(settings["pitch"]), "--stdout", text],
                             check=True, capture_output=True, timeout=60).stdout
        return _read_wav(wav), settings

    def _flite(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        settings = {"tts": "flite", "voice": rng.choice(FLITE_VOICES),
                    "duration_stretch": round(rng.uniform(0.8, 1.25), 3)}
        with tempfile.TemporaryDirectory() as directory:  # flite writes a file, not stdout
            path = Path(directory) / "speech.wav"
            subprocess.run([self.flite, "-voice", settings["voice"], "--setf",
                            f"duration_stretch={settings['duration_stretch']}", "-t", text, "-o", str(path)],
                           check=True, capture_output=True, timeout=60)
            return _read_wav(path.read_bytes()), settings


def festival_speak(text: str, voice: str) -> np.ndarray:
    """`text` spoken by one of Festival's `voice`s, as 16 kHz float32 (RuntimeError when Festival or
    the voice is not installed)."""
    text2wave = shutil.which("text2wave")
    if text2wave is None:
        raise RuntimeError("festival is not installed (apt-get install festival festvox-kdlpc16k festvox-us-slt-hts)")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "speech.wav"
        done = subprocess.run([text2wave, "-eval", f"(voice_{voice})", "-o", str(path)], input=text.encode(),
                              capture_output=True, timeout=60)
        # text2wave exits 0 after a Scheme error (an unknown voice): the error is only in its output
        if done.returncode or not path.is_file() or b"ERROR" in done.stderr + done.stdout:
            raise RuntimeError(f"festival could not speak with {voice}: {(done.stderr or done.stdout).decode()[-200:]}")
        return _read_wav(path.read_bytes())


def _read_wav(data: bytes) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return resample(audio.reshape(len(audio), -1)[:, 0], rate, ASR_RATE)
