"""The native audio-token path: Whisper encoder -> trained projector -> LLM fed with embeddings.

The user's speech never becomes text: its encoder states, projected to the LLM's embedding size,
stand in the chat prompt where the user's message would be (the LLaVA / Ultravox recipe), and the
LLM answers it directly. The prompt follows the ChatML template of SmolLM2 (and Qwen):

    <|im_start|>system\\n{system}<|im_end|>\\n ... history ...
    <|im_start|>user\\n[{instruction}\\n]{AUDIO}<|im_end|>\\n<|im_start|>assistant\\n
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voice import models
from voice.llm.base import ChatMessage, GenerationOptions
from voice.native.base import AudioChatModel, transcribe
from voice.native.encoder import WhisperEncoder
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.projector import NumpyProjector
from voice.native.token_embeddings import TokenEmbeddings

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)
_WAIT_POLL_S = 0.05

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""What SmolLM2's chat template puts in when the conversation has no system message."""


def prompt_texts(messages: list[ChatMessage], instruction: str | None = None) -> tuple[str, str]:
    """The chat-template text before and after the user's audio: `messages` are the conversation
    so far, the audio is the user's next turn (after `instruction` when one is given)."""
    parts: list[str] = []
    if not messages or messages[0].role != "system":
        parts.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for message in messages:
        parts.append(f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n")
    parts.append("<|im_start|>user\n" + (f"{instruction}\n" if instruction else ""))
    return "".join(parts), "<|im_end|>\n<|im_start|>assistant\n"


class NativeAudioChat:
    """Speech in, reply text out, with no transcript in between. Loaded once and shared: the
    encoder and projector are thread-safe, and `parallel` llama.cpp contexts serve that many
    replies at the same time (others wait for a free one)."""

    def __init__(self, projector: NumpyProjector | str | Path, *, llm_model: str | Path | None = None,
                 encoder: WhisperEncoder | WhisperModel | str | None = None, n_ctx: int = 2048,
                 n_threads: int = 2, parallel: int = 1) -> None:
        self.projector = projector if isinstance(projector, NumpyProjector) else NumpyProjector.load(projector)
        self.encoder = encoder if isinstance(encoder, WhisperEncoder) else WhisperEncoder(encoder,
                                                                                         cpu_threads=n_threads)
        model_path = models.gguf_model(str(llm_model) if llm_model else None)
        self.name = f"native:{model_path.name}"
        config = self.projector.config
        if self.encoder.dim != config.encoder_dim:
            raise ValueError(f"projector expects {config.encoder_dim}-dim encoder states, the encoder "
                             f"{self.encoder.name} gives {self.encoder.dim}")
        if config.llm != model_path.name:
            log.warning("projector was trained for %s, running with %s", config.llm, model_path.name)
        self._free: list[EmbeddingContext] = []  # idle longest first
        self._changed = threading.Condition()
        embed = TokenEmbeddings(model_path, background=True)  # text and audio: one decode call
        for _ in range(max(1, parallel)):
            context = EmbeddingContext(model_path, n_ctx=n_ctx, n_threads=n_threads, embed=embed)
            if context.n_embd != config.llm_dim:
                raise ValueError(f"projector gives {config.llm_dim}-dim embeddings, {model_path.name} "
                                 f"takes {context.n_embd}")
            self._free.append(context)
        self._tokenizer = self._free[0]  # any context tokenizes alike, from any thread (the vocabulary is read-only)

    def audio_embeddings(self, audio_16k: np.ndarray) -> np.ndarray:
        """The LLM input embeddings (positions, n_embd) standing for the audio."""
        return self.projector(self.encoder.encode(audio_16k))

    def stream_reply(self, audio_16k: np.ndarray, messages: list[ChatMessage], options: GenerationOptions,
                     cancel: threading.Event, instruction: str | None = None) -> Iterator[str]:
        """Stream the assistant's reply (text deltas) to the user's speech, after the conversation
        `messages` (system prompt first); stops between tokens once `cancel` is set."""
        yield from self._stream(audio_16k, messages, instruction, options, cancel)

    def transcribe(self, audio_16k: np.ndarray, cancel: threading.Event | None = None, max_tokens: int = 96) -> str:
        """What the native model hears: it is asked to repeat what the user said."""
        return transcribe(self, audio_16k, cancel, max_tokens)

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event) -> None:
        """Evaluate the conversation before the user's next audio (`messages`: system prompt and
        history) in the context that will serve the reply, while the user speaks; skipped when
        every context is busy (the reply then evaluates it all)."""
        before = self._tokenizer.tokenize(prompt_texts(messages)[0])
        context = self._acquire(before, cancel, wait=False)
        if context is None:
            return
        try:
            if context.cached_prefix(before) < len(before) and not cancel.is_set():
                context.start([before])
        finally:
            self._release(context)

    def warm(self, messages: list[ChatMessage]) -> None:
        """Evaluate the text before a first turn's audio (the system prompt) in every context, so
        that no session's first turn pays for it."""
        before = self._tokenizer.tokenize(prompt_texts(messages)[0])
        with self._changed:
            for context in self._free:
                context.start([before])

    def close(self) -> None:
        with self._changed:
            for context in self._free:
                context.close()
            self._free.clear()

    def _stream(self, audio_16k: np.ndarray, messages: list[ChatMessage], instruction: str | None,
                options: GenerationOptions, cancel: threading.Event) -> Iterator[str]:
        if cancel.is_set():
            return
        started = time.perf_counter()
        embeddings = self.audio_embeddings(audio_16k)
        encoded = time.perf_counter()
        before, after = prompt_texts(messages, instruction)
        before_tokens = self._tokenizer.tokenize(before)
        context = self._acquire(before_tokens, cancel)
        if context is None:
            return
        tokens = None
        try:
            if cancel.is_set():  # while the audio was encoded: the prompt's evaluation cannot be stopped
                return
            acquired = time.perf_counter()
            reused = context.start([before_tokens, embeddings, context.tokenize(after)])
            log.debug("native prompt: audio encoded in %.0f ms, context free after %.0f more, %d positions "
                      "decoded in %.0f ms (%d reused)", 1e3 * (encoded - started), 1e3 * (acquired - encoded),
                      context.n_past - reused, 1e3 * (time.perf_counter() - acquired), reused)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            tokens = context.generate(options.max_tokens, options.temperature, cancel=cancel)
            for token in tokens:
                text = decoder.decode(context.piece(token))
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail and not cancel.is_set():
                yield tail
        finally:
            if tokens is not None:
                tokens.close()  # frees the sampler before the context serves someone else
            self._release(context)

    def _release(self, context: EmbeddingContext) -> None:
        with self._changed:
            self._free.append(context)
            self._changed.notify_all()

    def _acquire(self, before: list[int], cancel: threading.Event, wait: bool = True) -> EmbeddingContext | None:
        """The free context whose KV cache holds most of `before` (usually the one that served this
        conversation's previous turn, so that only the new turn is evaluated), ties to the one idle
        longest; None when cancelled while waiting for one (or, with `wait` False, when none is free)."""
        with self._changed:
            while not self._free:
                if cancel.is_set() or not wait:
                    return None
                self._changed.wait(_WAIT_POLL_S)
            best = max(self._free, key=lambda context: context.cached_prefix(before))
            self._free.remove(best)
            return best


class NativeTurn:
    """One native turn behind the ChatModel interface: the user's speech is the next message, so
    the cascade's response runner (clauses -> TTS, cancellation, timings) serves both paths."""

    def __init__(self, native: AudioChatModel, audio_16k: np.ndarray) -> None:
        self.native = native
        self.audio = audio_16k
        self.name = native.name

    def stream_chat(self, messages: list[ChatMessage], options: GenerationOptions,
                    cancel: threading.Event) -> Iterator[str]:
        return self.native.stream_reply(self.audio, messages, options, cancel)
