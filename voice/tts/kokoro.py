"""Kokoro-82M text-to-speech (int8 ONNX, CPU): a chunk's sentences are synthesised and yielded one by one."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
VOICE_SHAPE = (510, 1, 256)
"""A voice file: one style vector for each token count a run may have (kokoro-js's voices/*.bin)."""
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class KokoroModel:
    """Kokoro's graph and its phonemiser, loaded once and shared by every Kokoro voice.

    The graph runs with kokoro-onnx's tokenizer (espeak-ng phonemes, behind its own lock) but in a
    session made here: its threads sleep once a run ends, so that they leave the cores to the LLM
    between sentences, as Piper's decoder does. onnxruntime sessions are safe to run from several
    threads.
    """

    def __init__(self, model_path: str | Path, *, threads: int = 2) -> None:
        import onnxruntime
        from kokoro_onnx.session import embedded_vocab, input_dtypes
        from kokoro_onnx.tokenizer import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # sentence lengths vary: an arena would keep the largest forever
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer(vocab=embedded_vocab(self._session) or None)
        dtypes = input_dtypes(self._session)
        self._tokens_input = "input_ids" if "input_ids" in dtypes else "tokens"  # newer exports rename it
        self._dtypes = dtypes
        self.name = Path(model_path).stem

    def sentences(self, text: str, lang: str = "en-us") -> list[str]:
        """`text`'s phonemes, one string a sentence, each short enough for one run."""
        from kokoro_onnx.chunker import split_phonemes

        phonemes = " ".join(self._tokenizer.phonemize(text, lang).split())
        return [batch for sentence in _SENTENCE_END.split(phonemes) for batch in split_phonemes(sentence)]

    def speak(self, phonemes: str, voice: np.ndarray, speed: float = 1.0) -> np.ndarray:
        """One run: the audio of `phonemes` (at most 510) in `voice`, its silences at both ends cut."""
        from kokoro_onnx.trim import trim

        tokens = self._tokenizer.tokenize(phonemes)
        if not tokens:
            return np.zeros(0, np.float32)
        style = voice[min(len(tokens), len(voice)) - 1]
        audio = self._session.run(None, {
            self._tokens_input: np.array([[0, *tokens, 0]], dtype=self._dtypes[self._tokens_input]),
            "style": np.asarray(style, dtype=self._dtypes["style"]),
            "speed": np.array([speed], dtype=self._dtypes["speed"]),
        })[0]
        return trim(np.asarray(audio, np.float32).ravel())[0]


def load_voice(path: str | Path) -> np.ndarray:
    """A Kokoro voice file: float32 style vectors of shape VOICE_SHAPE."""
    data = np.fromfile(path, dtype="<f4")
    if data.size != int(np.prod(VOICE_SHAPE)):
        raise ValueError(f"{path} is not a Kokoro voice: {data.size} float32 values, not {VOICE_SHAPE}")
    return data.reshape(VOICE_SHAPE)


class KokoroSynthesizer:
    """One Kokoro voice on a shared KokoroModel.

    Each sentence of a chunk is one run of the graph, yielded as soon as it is made (the caller
    checks for cancellation between them). A run cannot be cut like Piper's (its decoder works on
    the whole sentence), so `soon` changes nothing: the cascade's first chunk is already a few words.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, model: KokoroModel, voice_path: str | Path, *, name: str | None = None,
                 speed: float = 1.0, pause_s: float = 0.15) -> None:
        self._model = model
        self._voice = load_voice(voice_path)
        self._speed = speed
        self._pause = np.zeros(int(pause_s * SAMPLE_RATE), np.float32)
        self.name = name or Path(voice_path).stem

    def synthesize(self, text: str, soon: bool = False) -> Iterator[np.ndarray]:
        for k, phonemes in enumerate(self._model.sentences(text)):
            audio = self._model.speak(phonemes, self._voice, self._speed)
            if audio.size:
                # The run's silences were cut: sentences after the first get a pause before them.
                yield np.concatenate([self._pause, audio]) if k else audio
