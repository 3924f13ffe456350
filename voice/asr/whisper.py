"""faster-whisper (CTranslate2) speech recognition."""

from __future__ import annotations

import logging

import numpy as np

from voice.asr.hallucination import has_repetition_loop, is_hallucination, strip_non_speech
from voice.audio import ASR_RATE

log = logging.getLogger(__name__)

# Segment-level rejection thresholds, as in Whisper's own transcribe() heuristics.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_MAX_COMPRESSION = 2.4


class WhisperTranscriber:
    """A faster-whisper model, loaded once; `transcribe` is safe to call from several threads."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        language: str | None = "en",
        beam_size: int = 1,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_name = model
        self.language = language
        self.beam_size = beam_size
        self._model = WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=cpu_threads)

    def transcribe(self, audio: np.ndarray) -> str:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size < ASR_RATE // 10:
            return ""
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            temperature=0.0,
        )
        kept: list[str] = []
        for segment in segments:
            if segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _LOW_LOGPROB:
                continue
            if segment.compression_ratio > _MAX_COMPRESSION or has_repetition_loop(segment.text):
                log.info("dropped a looping ASR segment: %r", segment.text[:80])
                continue
            kept.append(segment.text.strip())
        text = strip_non_speech(" ".join(kept))
        if is_hallucination(text, audio.size / ASR_RATE):
            if text:
                log.info("dropped a likely hallucination: %r", text)
            return ""
        return text
