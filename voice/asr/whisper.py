"""faster-whisper (CTranslate2) speech recognition.

Whisper is trained on 30 s windows, and faster-whisper pads every input to 30 s: on a CPU the
encoder then spends most of its time on silence. The fast path encodes only the utterance plus a
few seconds of padding (CTranslate2 accepts the shorter mel input) and decodes with timestamp
tokens, which mark where each segment ends; segments that start after the audio ends and
repetition loops (what a short window provokes) are cut, and anything still doubtful is decoded
again the standard way.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from voice.asr.base import Heard, Hints, TranscriptionCancelled
from voice.asr.hallucination import has_repetition_loop, is_hallucination, strip_non_speech
from voice.audio import ASR_RATE

log = logging.getLogger(__name__)

# CTranslate2's oneDNN caches compiled kernels per tensor shape, and the decoder's shapes change at
# every step of every utterance: with the default cache (1024 entries) a server's memory grows by
# hundreds of MB before it levels off. Without the cache, Whisper measured no slower here.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")

# Segment-level rejection thresholds, as in Whisper's own transcribe() heuristics.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_MAX_COMPRESSION = 2.4
_SECONDS_PER_TIMESTAMP = 0.02
_MIN_WINDOW_S = 10.0  # shorter windows make tiny.en loop (6 s: 14 of 50 cuts of one clip fell back to 30 s)
_PAD_S = 3.0
_MAX_PROMPT_TOKENS = 223  # Whisper's limit for the previous text: half its 448-token context, less one


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TranscriptionCancelled


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float | None
    text: str


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
        short_window: bool = True,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model_name = model
        self.language = language
        self.beam_size = beam_size
        self.short_window = short_window
        self._model = WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        multilingual = self._model.model.is_multilingual
        self.languages = None if multilingual else frozenset({"en"})
        self._tokenizers = {language: Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe",
                                                language=language or ("en" if not multilingual else None))}
        self._tokenizer = self._tokenizers[language]
        self.fallbacks = 0  # how often the fast path had to be redone the standard way

    @property
    def whisper_model(self):  # noqa: ANN201 - faster_whisper.WhisperModel, imported lazily
        """The loaded faster-whisper model (the native path shares its encoder)."""
        return self._model

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        return self.hear(audio, cancel).text

    def _tokenizer_for(self, language: str | None):  # noqa: ANN202 - faster_whisper's Tokenizer, imported lazily
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:  # (a dict write is atomic: two threads at worst build it twice)
            self._tokenizers[language] = Tokenizer(self._model.hf_tokenizer, True, task="transcribe", language=language)
        return self._tokenizers[language]

    def hear(self, audio: np.ndarray, cancel: threading.Event | None = None, hints: Hints | None = None) -> Heard:
        language = hints.language if hints is not None and hints.language else self.language
        prompt = hints.prompt if hints is not None and hints.prompt else None
        if self.languages is not None and language not in self.languages:
            raise ValueError(f"the speech recogniser transcribes {'/'.join(sorted(self.languages))} only, "
                             f"not {language!r} (a multilingual Whisper model does: --asr-model small)")
        audio = np.asarray(audio, dtype=np.float32)
        seconds = audio.size / ASR_RATE
        if audio.size < ASR_RATE // 10:
            return Heard("")
        heard = None
        if self.short_window and seconds + _PAD_S <= 30.0 and language:
            heard = self._transcribe_short(audio, cancel, language, prompt)
            if heard is None:
                self.fallbacks += 1
        if heard is None:
            _check(cancel)
            heard = self._transcribe_padded(audio, language, prompt)
        text = strip_non_speech(heard.text)
        if is_hallucination(text, seconds):
            if text:
                log.info("dropped a likely hallucination: %r", text)
            return Heard("")
        return Heard(text, heard.confidence)

    def _transcribe_padded(self, audio: np.ndarray, language: str | None, prompt: str | None) -> Heard:
        """faster-whisper's standard path: 30 s windows."""
        segments, _info = self._model.transcribe(
            audio, language=language, beam_size=self.beam_size, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, temperature=0.0, initial_prompt=prompt,
        )
        kept: list[str] = []
        confidences: list[float] = []
        for segment in segments:
            if segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _LOW_LOGPROB:
                continue
            if segment.compression_ratio > _MAX_COMPRESSION or has_repetition_loop(segment.text):
                log.info("dropped a looping ASR segment: %r", segment.text[:80])
                continue
            kept.append(segment.text.strip())
            confidences.append(segment.avg_logprob)
        return Heard(" ".join(kept), min(confidences, default=0.0))

    def _transcribe_short(self, audio: np.ndarray, cancel: threading.Event | None, language: str,
                          prompt: str | None) -> Heard | None:
        """Encode the utterance plus padding only; None when the result cannot be trusted."""
        seconds = audio.size / ASR_RATE
        window = min(30.0, max(_MIN_WINDOW_S, seconds + _PAD_S))
        padded = np.concatenate([audio, np.zeros(int(window * ASR_RATE) - audio.size, dtype=np.float32)])
        features = self._model.feature_extractor(padded)[:, :-1]
        features = features[:, : features.shape[1] // 2 * 2]  # the encoder's stride-2 convolution
        encoded = self._model.encode(features)
        _check(cancel)  # decoding is the other half of the pass: skip it for a pass given up
        tokenizer = self._tokenizer if language == self.language else self._tokenizer_for(language)
        max_tokens = int(seconds * 6) + 24
        start = list(tokenizer.sot_sequence)
        if prompt:  # as Whisper conditions on previous text: after the start-of-previous token
            start = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-_MAX_PROMPT_TOKENS:], *start]
        result = self._model.model.generate(
            encoded, [start], beam_size=self.beam_size, max_length=min(448, max_tokens + len(start)),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
        )[0]
        tokens = result.sequences_ids[0]
        confidence = result.scores[0] / max(1, len(tokens))
        if result.no_speech_prob > _NO_SPEECH_PROB and confidence < _LOW_LOGPROB:
            return Heard("")
        segments, closed = self._segments(tokens)
        kept: list[str] = []
        for segment in segments:
            if segment.start >= seconds - 0.1 or (kept and segment.text == kept[-1]):
                break  # text "after" the audio, or a segment repeating itself: the decoder looping
            kept.append(segment.text)
        text = " ".join(kept)
        if not closed and len(kept) == len(segments) or has_repetition_loop(text):
            return None  # ran out of tokens mid-segment, or looped inside one: not trustworthy
        return Heard(text, confidence)

    def _segments(self, tokens: list[int]) -> tuple[list[_Segment], bool]:
        """Split timestamped output into segments; also say whether the last one was closed."""
        begin = self._tokenizer.timestamp_begin
        eot = self._tokenizer.eot
        segments: list[_Segment] = []
        start: float | None = None
        text_tokens: list[int] = []
        for token in tokens:
            if token == eot:
                break
            if token >= begin:
                stamp = (token - begin) * _SECONDS_PER_TIMESTAMP
                if start is None:
                    start = stamp
                else:
                    text = self._tokenizer.decode(text_tokens).strip()
                    if text:
                        segments.append(_Segment(start, stamp, text))
                    start, text_tokens = None, []
                continue
            if start is None:
                start = segments[-1].end if segments and segments[-1].end is not None else 0.0
            text_tokens.append(token)
        if text_tokens:  # text after the last timestamp: the decoder stopped mid-segment
            text = self._tokenizer.decode(text_tokens).strip()
            if text:
                segments.append(_Segment(start or 0.0, None, text))
            return segments, False
        return segments, True
