"""Has the user finished? The words (a small LLM) and the voice (Smart Turn) at a pause.

Two signals, each measured at every pause of the turn-taking benchmark's data
(`python -m benchmarks.turn_signals`); `python -m benchmarks.turn_fit` fits how they combine:
- `TextEnd`: how likely a small LLM finds that the user's words end the message here (the
  probability that the next token ends a sentence or the turn), together with what Whisper's
  punctuation and the utterance's length say;
- `SmartTurn` (pipecat-ai's Smart Turn v3.2, BSD-2-Clause): how likely the voice sounds finished.
  It is no judge of a finished turn on that data, but it is right when it is sure the voice goes on,
  so it may only hold a turn open.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from voice.audio import ASR_RATE
from voice.llm.compute_thread import route_decodes

WINDOW_S = 8  # Smart Turn hears the last 8 s

# logit(P(end)) = LM_WEIGHT * logit(P(the LLM ends the message here)) + QUESTION_WEIGHT * [it ends with "?"]
#                 + SHORT_WEIGHT * [two words or fewer] + BIAS   (fitted by `python -m benchmarks.turn_fit`)
LM_WEIGHT, QUESTION_WEIGHT, SHORT_WEIGHT, BIAS = 0.64, 1.81, -1.43, 1.42
SHORT_WORDS = 2
_ENDINGS = (".", "?", "!", "\n", "<|im_end|>")
# A system turn puts the small LLM in the assistant's chat; its end probabilities separate pauses from
# ends better than a bare user turn does (`python -m benchmarks.turn_fit`, area under the ROC curve).
_PREFIX = ("<|im_start|>system\nYou are a helpful voice assistant. The user speaks; their words are transcribed."
           "<|im_end|>\n<|im_start|>user\n")


@dataclass(frozen=True)
class EndScore:
    """What the signals say at a pause: `finished`, how likely the words end the turn (0..1); `voice`,
    how likely the voice sounds finished (None without an audio model)."""

    finished: float
    voice: float | None = None


def words_of(text: str) -> list[str]:
    """The words of a transcript, lower case, without punctuation (Whisper's punctuation says
    little about where a spoken sentence ends)."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


class TextEnd:
    """P(the user's message ends here) from its words, with a small LLM (a GGUF chat model: the
    bundled SmolLM2). Its decodes run on the compute thread, like every llama.cpp decode."""

    def __init__(self, model_path: str | Path, n_ctx: int = 256) -> None:
        from llama_cpp import Llama

        from voice.models import llama_file

        self._llm = Llama(model_path=str(llama_file(Path(model_path))), n_ctx=n_ctx, n_threads=1, n_threads_batch=1,
                          verbose=False)
        route_decodes(self._llm)
        tokenize = self._llm.tokenize
        self._endings = sorted({tokenize(end.encode(), add_bos=False, special=True)[0] for end in _ENDINGS})
        self._prefix = tokenize(_PREFIX.encode(), add_bos=False, special=True)
        self._lock = threading.Lock()

    def lm_probability(self, text: str) -> float:
        """P(the next token after the words ends a sentence or the message)."""
        words = words_of(text)
        if not words:
            return 0.0
        room = self._llm.n_ctx() - 1 - len(self._prefix)
        tokens = self._prefix + self._llm.tokenize(" ".join(words).encode(), add_bos=False, special=False)[-room:]
        with self._lock:
            # What the context holds already (the prefix, the words of the last pause) is kept.
            held = self._llm.input_ids[:self._llm.n_tokens].tolist()
            self._llm.n_tokens = min(self._llm.longest_token_prefix(held, tokens), len(tokens) - 1)
            self._llm.eval(tokens[self._llm.n_tokens:])
            pointer = self._llm._ctx.get_logits_ith(-1)  # llama-cpp-python 0.3.36 (pinned)
            logits = np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),)).astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        return float(probabilities[self._endings].sum() / probabilities.sum())

    def probability(self, text: str) -> float:
        """P(the turn is finished) from the transcript so far (the fitted combination)."""
        words = words_of(text)
        if not words:
            return 0.0
        p = min(max(self.lm_probability(text), 1e-6), 1 - 1e-6)
        logit = LM_WEIGHT * math.log(p / (1 - p)) + BIAS
        logit += QUESTION_WEIGHT * text.rstrip().endswith("?") + SHORT_WEIGHT * (len(words) <= SHORT_WORDS)
        return 1 / (1 + math.exp(-logit))


class SmartTurn:
    """Smart Turn v3.2 on onnxruntime. Its input is Whisper's log-mel features (80 bands) of the
    last 8 s of audio, zero-padded at the start and normalised to zero mean and unit variance
    first: faster-whisper's feature extractor computes the same features as pipecat's own code."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)

    def features(self, audio_16k: np.ndarray) -> np.ndarray:
        samples = WINDOW_S * ASR_RATE
        window = np.zeros(samples, np.float32)
        tail = np.asarray(audio_16k, np.float32)[-samples:]
        window[samples - tail.size:] = tail
        window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        return self._features(window, padding=0)[None].astype(np.float32)

    def probability(self, audio_16k: np.ndarray) -> float:
        """P(the turn is complete) for 16 kHz audio that ends now."""
        outputs = self._session.run(None, {"input_features": self.features(audio_16k)})
        return float(np.asarray(outputs[0]).reshape(-1)[0])


class EndOfTurn:
    """The end-of-turn scorer the engine shares: the words always, the voice when a model is given."""

    def __init__(self, text: TextEnd, voice: SmartTurn | None = None) -> None:
        self.text = text
        self.voice = voice

    def score(self, transcript: str, audio_16k: np.ndarray) -> EndScore:
        voice = self.voice.probability(audio_16k) if self.voice is not None else None
        return EndScore(self.text.probability(transcript), voice)
