"""Voice activity detection: speech start and end of turn from a 16 kHz stream.

A frame (32 ms) is voiced when both detectors agree: webrtcvad (fast, but it takes
broadband noise and tones for speech) and the Silero VAD network shipped with
faster-whisper (robust to noise, about 0.2 ms a frame). The segmenter turns voiced
frames into turns: a turn opens after `min_speech_ms` of speech and closes after
`silence_duration_ms` without any.

Silero's recurrent state decays slowly, so it keeps calling the breathy or reverberant tail of
an utterance speech for 100-150 ms after the words end, and every millisecond of that is added to
the reply's latency. While a turn is open, a frame must therefore also be loud enough to be
speech: above the noise floor by `tail_floor_margin_db` and within `tail_peak_drop_db` of the
turn's loudest frame. Opening a turn is left to the two detectors alone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import onnxruntime
import webrtcvad

from voice.audio import ASR_RATE, float_to_pcm16

FRAME_SAMPLES = 512
"""Samples per VAD frame at 16 kHz (32 ms): Silero's native window."""
FRAME_MS = FRAME_SAMPLES * 1000 // ASR_RATE
_WEBRTC_SAMPLES = 480  # webrtcvad takes 10, 20 or 30 ms: judge the first 30 ms of each frame
_SILERO_CONTEXT = 64
_SILENT_DB = -100.0
_DIGITAL_SILENCE_DB = _SILENT_DB + 1.0  # quieter than this: zeros, not a microphone's noise
_FLOOR_RISE_DB_PER_FRAME = 1.5 * FRAME_SAMPLES / ASR_RATE
_NOISE_PROBABILITY = 0.1  # outside a turn, a frame Silero scores below this is noise, not speech
_NOISE_FRAMES = 8  # 256 ms of such frames in a row give the floor a fresh estimate


def _level_db(frame: np.ndarray) -> float:
    """RMS level of a frame in dB full scale."""
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
    return max(_SILENT_DB, 20.0 * np.log10(rms + 1e-10))


@dataclass(frozen=True)
class VadConfig:
    """Turn detection parameters (OpenAI `server_vad` names where they exist)."""

    threshold: float = 0.5
    """Silero speech probability above which a frame counts as speech (0..1)."""
    prefix_padding_ms: int = 300
    """Audio kept before the detected speech start."""
    silence_duration_ms: int = 500
    """Silence that ends a turn."""
    min_speech_ms: int = 160
    """Speech needed before a turn opens, so that a click or a cough does not."""
    webrtc_mode: int = 1
    """webrtcvad aggressiveness, 0 (lenient) to 3 (strict)."""
    tail_floor_margin_db: float | None = 4.5
    """In an open turn, a frame this close to the noise floor is silence (None: no energy gate)."""
    tail_peak_drop_db: float | None = 32.0
    """In an open turn, a frame this far below the turn's loudest is silence (None: no gate)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if self.silence_duration_ms < 0 or self.prefix_padding_ms < 0 or self.min_speech_ms < 0:
            raise ValueError("durations must not be negative")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError("webrtc_mode must be 0, 1, 2 or 3")


@dataclass(frozen=True)
class VoiceStarted:
    audio_start_ms: int
    """Stream position of the first speech frame, less the prefix padding."""
    speech_start_ms: int = 0
    """Stream position of the first speech frame."""


@dataclass(frozen=True)
class VoiceStopped:
    audio_end_ms: int
    """Stream position just after the last speech frame."""


VadEvent = VoiceStarted | VoiceStopped


class SileroModel:
    """The Silero VAD ONNX network bundled with faster-whisper; stateless and shareable."""

    def __init__(self) -> None:
        from faster_whisper.utils import get_assets_path

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            f"{get_assets_path()}/silero_vad_v6.onnx", providers=["CPUExecutionProvider"], sess_options=options
        )


class SileroStream:
    """Frame-by-frame speech probabilities, carrying the network's state between frames."""

    def __init__(self, model: SileroModel) -> None:
        self._session = model.session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_SILERO_CONTEXT, dtype=np.float32)

    def probability(self, frame: np.ndarray) -> float:
        window = np.concatenate([self._context, frame])[None, :]
        out, self._h, self._c = self._session.run(None, {"input": window, "h": self._h, "c": self._c})
        self._context = frame[-_SILERO_CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])


class VadSegmenter:
    """Sans-I/O turn segmentation: feed 16 kHz float samples, get speech start/stop events."""

    def __init__(self, config: VadConfig, model: SileroModel) -> None:
        self.config = config
        self._webrtc = webrtcvad.Vad(config.webrtc_mode)
        self._silero = SileroStream(model)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames = 0
        self.speaking = False
        self._run_start: int | None = None  # first frame of the current voiced run (before a turn opens)
        self._run_voiced = 0
        self._last_voiced: int | None = None  # last voiced frame index
        self.last_probability = 0.0
        self._turn_silence_ms: int | None = None  # a shorter window for the open turn, if any
        self._noise_floor_db: float | None = None
        self._noise_levels: deque[float] = deque(maxlen=_NOISE_FRAMES)  # levels of the latest run of noise frames
        self._peak_db = _SILENT_DB  # loudest voiced frame of the current run or turn
        self._min_speech_ms = config.min_speech_ms

    @property
    def position_ms(self) -> int:
        """Stream time of the audio processed so far (whole frames)."""
        return self._frames * FRAME_MS

    @property
    def last_voiced_end_ms(self) -> int | None:
        return None if self._last_voiced is None else (self._last_voiced + 1) * FRAME_MS

    def end_after_silence(self, silence_ms: int) -> None:
        """Let the open turn end after `silence_ms` (a turn that already reads as finished)."""
        if self.speaking:
            self._turn_silence_ms = min(silence_ms, self.config.silence_duration_ms)

    def end_turn(self) -> VoiceStopped | None:
        """Close an open turn now (for a turn that has run too long)."""
        if not self.speaking:
            return None
        self.speaking = False
        self._peak_db = _SILENT_DB
        return VoiceStopped(audio_end_ms=self.position_ms)

    def _is_voiced(self, frame: np.ndarray) -> bool:
        probability = self._silero.probability(frame)
        self.last_probability = probability
        level = _level_db(frame)
        floor = self._track_noise_floor(level)
        # Hysteresis: once a turn is open, a slightly weaker frame still counts as speech.
        threshold = self.config.threshold if not self.speaking else max(0.0, self.config.threshold - 0.15)
        if probability < threshold:
            return False
        if not self._webrtc.is_speech(float_to_pcm16(frame[:_WEBRTC_SAMPLES]), ASR_RATE):
            return False
        if self.speaking and not self._loud_enough(level, floor):
            return False
        self._peak_db = max(self._peak_db, level)
        return True

    def _track_noise_floor(self, level: float) -> float:
        """Follows the quietest recent frames: down at once; up by 1.5 dB a second between turns,
        and at once to the quiet end (10th percentile) of the last 256 ms when all of it was
        plainly not speech, so that a noisier microphone (or recording) is learnt before its
        first turn ends. Within a turn the floor does not rise: a long utterance would lift it
        into its own quiet words. Digital silence (exact zeros: padding, a muted or gated input)
        says nothing of the microphone's noise and is left out: counted, it would sink the floor,
        and with it the energy gate on the tail of the next turn."""
        floor = self._noise_floor_db
        if level > _DIGITAL_SILENCE_DB:
            if floor is None or level < floor:
                floor = level
            elif not self.speaking:
                floor = min(level, floor + _FLOOR_RISE_DB_PER_FRAME)
            if self.speaking or self.last_probability >= _NOISE_PROBABILITY:
                self._noise_levels.clear()
            else:
                self._noise_levels.append(level)
                if len(self._noise_levels) == self._noise_levels.maxlen:
                    floor = max(floor, float(np.percentile(self._noise_levels, 10)))
            self._noise_floor_db = floor
        return _SILENT_DB if floor is None else floor

    def _loud_enough(self, level: float, floor: float) -> bool:
        config = self.config
        if config.tail_floor_margin_db is not None and level < floor + config.tail_floor_margin_db:
            return False
        return config.tail_peak_drop_db is None or level >= self._peak_db - config.tail_peak_drop_db

    def process(self, samples: np.ndarray, min_speech_ms: int | None = None) -> list[VadEvent]:
        """Consume samples; return the events whose frames are complete. `min_speech_ms` replaces the
        config's for these samples (a turn that opens over the assistant's voice opens sooner)."""
        self._min_speech_ms = self.config.min_speech_ms if min_speech_ms is None else min_speech_ms
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = data[whole:]
        events: list[VadEvent] = []
        for start in range(0, whole, FRAME_SAMPLES):
            event = self._step(data[start : start + FRAME_SAMPLES])
            if event is not None:
                events.append(event)
        return events

    def _step(self, frame: np.ndarray) -> VadEvent | None:
        index = self._frames
        self._frames += 1
        voiced = self._is_voiced(frame)
        config = self.config
        if voiced:
            self._last_voiced = index
        if not self.speaking:
            if voiced:
                if self._run_start is None:
                    self._run_start = index
                    self._run_voiced = 0
                self._run_voiced += 1
                if self._run_voiced * FRAME_MS >= self._min_speech_ms:
                    self.speaking = True
                    speech_ms = self._run_start * FRAME_MS
                    self._run_start = None
                    return VoiceStarted(audio_start_ms=max(0, speech_ms - config.prefix_padding_ms),
                                        speech_start_ms=speech_ms)
            elif self._run_start is not None and (index - (self._last_voiced or 0)) * FRAME_MS > 100:
                self._run_start = None  # a short blip, not the start of speech
                self._peak_db = _SILENT_DB
            return None
        assert self._last_voiced is not None
        if voiced:
            self._turn_silence_ms = None  # the user went on: the full window applies again
        window = self._turn_silence_ms if self._turn_silence_ms is not None else config.silence_duration_ms
        if (index - self._last_voiced) * FRAME_MS >= window:
            self.speaking = False
            self._turn_silence_ms = None
            self._peak_db = _SILENT_DB
            return VoiceStopped(audio_end_ms=(self._last_voiced + 1) * FRAME_MS)
        return None
