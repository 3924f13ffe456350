"""Stand-ins for the LLM and the voice, for tests of the transport and its limits: replies as long
and as fast as a test needs, without model time. The VAD stays real."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from voice.engine import Engine
from voice.llm.base import ChatMessage, GenerationOptions
from voice.vad import SileroModel


class ScriptedChat:
    """A ChatModel that says `sentences` different sentences; with `hold`, it waits after the first
    one until the test sets it (a reply the test keeps going)."""

    name = "scripted"

    def __init__(self, sentences: int = 8, hold: threading.Event | None = None) -> None:
        self.sentences = sentences
        self.hold = hold

    def stream_chat(self, messages: list[ChatMessage], options: GenerationOptions,
                    cancel: threading.Event) -> Iterator[str]:
        for n in range(self.sentences):
            if n == 1 and self.hold is not None:
                while not self.hold.wait(0.05) and not cancel.is_set():
                    pass
            if cancel.is_set():
                return
            yield from (" This", " is", " part", f" {n + 1}", " of", " the", " story", ".")


class NoiseSynth:
    """A Synthesizer that answers each text with quiet noise, `seconds_per_char` long, in half-second
    pieces. Noise, not a tone: the websocket compresses its frames, and a repeated tone would shrink
    to almost nothing on the wire, where speech does not."""

    name = "noise"
    sample_rate = 24_000

    def __init__(self, seconds_per_char: float = 0.06) -> None:
        self.seconds_per_char = seconds_per_char
        self._random = np.random.default_rng(0)
        self._lock = threading.Lock()  # synthesize runs in several worker threads

    def synthesize(self, text: str, soon: bool = False) -> Iterator[np.ndarray]:
        samples = int(len(text) * self.seconds_per_char * self.sample_rate)
        piece = self.sample_rate // 2
        for start in range(0, samples, piece):
            with self._lock:
                noise = self._random.normal(0.0, 0.1, min(piece, samples - start))
            yield noise.astype(np.float32)


def standin_engine(vad: SileroModel, chat: ScriptedChat, voice: NoiseSynth | None = None) -> Engine:
    """An engine with the real VAD, the scripted LLM and the noise voice (no ASR: text turns only)."""
    return Engine(None, chat, voice or NoiseSynth(), vad, workers=4)  # type: ignore[arg-type]
