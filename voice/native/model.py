"""The native audio-token path: Whisper encoder -> trained projector -> LLM fed with embeddings.

The user's speech never becomes text: its encoder states, projected to the LLM's embedding size,
stand in the chat prompt where the user's message would be (the LLaVA / Ultravox recipe), and the
LLM answers it directly. The prompt is the LLM's own chat template (from its GGUF), with the audio
where the user's message text would be.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voice import models
from voice.blas import one_blas_thread
from voice.llm.base import ChatMessage, GenerationOptions
from voice.llm.chat_template import ChatTemplate, gguf_template
from voice.llm.context_pool import WAIT, ContextPool
from voice.native.base import transcribe
from voice.native.early_encoding import complete_positions, encode_from, final_positions
from voice.native.encoder import WhisperEncoder
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.merge import merged_model
from voice.native.projector import NumpyProjector
from voice.native.token_embeddings import TokenEmbeddings

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)
AUDIO_MARGIN_S = 1.0
"""Audio evaluated while the user speaks stops this far before the audio heard so far: Whisper's
encoder attends both ways, so a frame's state changes until it has enough audio after it (the
trade-off of margins: `python -m benchmarks.native_prefill --margins ...`)."""
ENCODER_LEFT_CONTEXT_S: float | None = 3.0
"""Audio the encoder sees before the first position it computes, once earlier positions are
evaluated (None: the whole turn), so that an evaluation's cost does not grow with the turn
(`python -m benchmarks.native_prefill --left-contexts ...`)."""
AUDIO_REUSE_TOLERANCE = 0.0
"""Above 0, the positions inside AUDIO_MARGIN_S are evaluated tentatively too, and later
evaluations keep the leading ones whose embedding moved less than this (relative to its norm,
`EmbeddingContext.start`). Off: it saved decoding but no time on the server
(`python -m benchmarks.native_prefill --reuse-tolerances ...`, benchmarks.ab)."""
_PREFILL_WAIT_S = 0.5  # how long a reply waits for the evaluation of its own audio to finish


def prompt_texts(messages: list[ChatMessage], instruction: str | None = None,
                 template: ChatTemplate | None = None) -> tuple[str, str]:
    """The prompt text before and after the user's audio: `messages` are the conversation so far,
    the audio is the user's next turn (after `instruction` when one is given). `template`: the
    LLM's chat template (default: the bundled LLM's)."""
    template = template or gguf_template(models.gguf_model(None))
    turn = {"role": "user", "content": f"{instruction}\n" if instruction else ""}
    return template.around_last([*(m.as_dict() for m in messages), turn])


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
        # Per context: the audio whose encoding its cached rows came from, and how many of those rows
        # are final (encoded with AUDIO_MARGIN_S of audio after them).
        self._sources: dict[EmbeddingContext, tuple[np.ndarray, int]] = {}
        embed = TokenEmbeddings(model_path, background=True)  # text and audio: one decode call
        llama_path, lora = self._llama_model(model_path)
        contexts = []
        for _ in range(max(1, parallel)):
            context = EmbeddingContext(llama_path, n_ctx=n_ctx, n_threads=n_threads, embed=embed, lora=lora)
            if context.n_embd != config.llm_dim:
                raise ValueError(f"projector gives {config.llm_dim}-dim embeddings, {model_path.name} "
                                 f"takes {context.n_embd}")
            contexts.append(context)
        # The audio of an early evaluation under way is the tag of the context it prepares.
        self._pool: ContextPool[EmbeddingContext] = ContextPool(contexts)
        self._tokenizer = contexts[0]  # any context tokenizes alike, from any thread (the vocabulary is read-only)
        self.template = ChatTemplate(self._tokenizer.llama)

    @property
    def contexts(self) -> list[EmbeddingContext]:
        """The llama.cpp contexts (for benchmarks that drive one directly; the server leases them)."""
        return self._pool.contexts

    def _llama_model(self, model_path: Path) -> tuple[Path, Path | None]:
        """The GGUF the native contexts load, and the LoRA adapter they apply at run time (None when
        there is none, or when it is merged into the GGUF: the fast way, tried first)."""
        adapter = self.projector.adapter
        if adapter is None:
            return model_path, None
        try:
            merged = merged_model(models.llama_file(model_path), adapter, models.models_dir())
        except Exception:  # noqa: BLE001 - only an optimisation: llama.cpp applies the adapter itself then
            log.warning("cannot merge the LoRA adapter %s; applying it at run time", adapter, exc_info=True)
            return model_path, adapter
        log.info("native path: %s with the LoRA adapter %s merged (%s)", model_path.name, adapter.name, merged)
        return merged, None

    def audio_embeddings(self, audio_16k: np.ndarray) -> np.ndarray:
        """The LLM input embeddings (positions, n_embd) standing for the audio."""
        with one_blas_thread():
            return self.projector(self.encoder.encode(audio_16k))

    def stream_reply(self, audio_16k: np.ndarray, messages: list[ChatMessage], options: GenerationOptions,
                     cancel: threading.Event, instruction: str | None = None) -> Iterator[str]:
        """Stream the assistant's reply (text deltas) to the user's speech, after the conversation
        `messages` (system prompt first); stops between tokens once `cancel` is set."""
        yield from self._stream(audio_16k, messages, instruction, options, cancel)

    def transcribe(self, audio_16k: np.ndarray, cancel: threading.Event | None = None, max_tokens: int = 96) -> str:
        """What the native model hears: it is asked to repeat what the user said."""
        return transcribe(self, audio_16k, cancel, max_tokens)

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event,
                audio_16k: np.ndarray | None = None) -> None:
        """Evaluate the prompt of the user's next turn ahead, while the user speaks, in the context
        that will serve the reply: the conversation before it (`messages`: system prompt and
        history) and, given the speech so far (`audio_16k`, from the turn's start), the audio up to
        AUDIO_MARGIN_S before its end (with AUDIO_REUSE_TOLERANCE, the rest of it tentatively). The
        reply then evaluates only the rest. Skipped when every context is busy (the reply then
        evaluates it all)."""
        before = self._tokenizer.tokenize(prompt_texts(messages, template=self.template)[0])
        context = self._acquire(before, cancel, wait=False, audio=audio_16k)
        if context is None:
            return
        try:
            early = None if audio_16k is None or cancel.is_set() else self._early_rows(context, before, audio_16k)
            if early is not None:
                rows, final = early
                self._sources.pop(context, None)  # until the decode below has succeeded
                context.start([before, rows], tolerance=AUDIO_REUSE_TOLERANCE)
                self._sources[context] = (audio_16k, final)
            elif context.cached_prefix(before) < len(before) and not cancel.is_set():
                context.start([before])
        finally:
            self._release(context)

    def _early_rows(self, context: EmbeddingContext, before: list[int],
                    audio_16k: np.ndarray) -> tuple[np.ndarray, int] | None:
        """The embeddings to evaluate early for the speech so far: the audio's leading positions
        that the rest of the turn will not change (what `context` already holds of them, then the
        new ones) and, with AUDIO_REUSE_TOLERANCE, the positions after them as encoded now; with
        how many are of the first kind. None if there is no new position."""
        stack = self.projector.config.stack
        with one_blas_thread():
            cached = self._cached_rows(context, before, audio_16k)
            frames, total = self._encode_after(audio_16k, len(cached))
            final = max(len(cached), self._final_count(total))
            count = complete_positions(audio_16k.size, stack) if AUDIO_REUSE_TOLERANCE > 0 else final
            if count <= len(cached):
                return None
            new = self.projector(frames[: (count - len(cached)) * stack])
        return np.concatenate([cached, new]).astype(np.float32, copy=False), final

    def _reply_rows(self, context: EmbeddingContext, before: list[int],
                    audio_16k: np.ndarray) -> tuple[np.ndarray, int, int]:
        """The audio's embeddings for a reply in `context`: the rows it holds from the evaluation
        of this speech while the user spoke, then the rest encoded and projected (a frame at least);
        with how many rows were cached, and the turn's encoder frame count."""
        stack = self.projector.config.stack
        with one_blas_thread():
            cached = self._cached_rows(context, before, audio_16k)
            cached = cached[: complete_positions(audio_16k.size, stack)]
            frames, total = self._encode_after(audio_16k, len(cached))
            rest = self.projector(frames)
        return np.concatenate([cached, rest]).astype(np.float32, copy=False), len(cached), total

    def _encode_after(self, audio_16k: np.ndarray, first_row: int) -> tuple[np.ndarray, int]:
        """The encoder frames of the audio from position `first_row` on, and the whole audio's
        frame count. The encoder sees ENCODER_LEFT_CONTEXT_S of audio before that position."""
        return encode_from(self.encoder.encode, audio_16k, first_row, self.projector.config.stack,
                           ENCODER_LEFT_CONTEXT_S)

    def _final_count(self, frames: int) -> int:
        """How many leading audio positions have AUDIO_MARGIN_S of encoded audio after them, of
        audio that encodes to `frames` frames."""
        return final_positions(frames, AUDIO_MARGIN_S, self.projector.config.stack)

    def _cached_rows(self, context: EmbeddingContext, before: list[int], audio_16k: np.ndarray) -> np.ndarray:
        """The final audio rows `context` holds after `before` for speech that `audio_16k` goes on."""
        source = self._sources.get(context)
        if source is None or not _starts_with(audio_16k, source[0]):
            return np.zeros((0, context.n_embd), np.float32)
        return context.cached_embeddings(before)[: source[1]]

    def warm(self, messages: list[ChatMessage]) -> None:
        """Evaluate the text before a first turn's audio (the system prompt) in every context, so
        that no session's first turn pays for it."""
        before = self._tokenizer.tokenize(prompt_texts(messages, template=self.template)[0])
        with self._pool.idle() as free:
            for context in free:
                context.start([before])
                self._sources.pop(context, None)

    def close(self) -> None:
        with self._pool.idle() as free:
            for context in free:
                context.close()
            free.clear()

    def _stream(self, audio_16k: np.ndarray, messages: list[ChatMessage], instruction: str | None,
                options: GenerationOptions, cancel: threading.Event) -> Iterator[str]:
        if cancel.is_set():
            return
        started = time.perf_counter()
        before, after = prompt_texts(messages, instruction, self.template)
        before_tokens = self._tokenizer.tokenize(before)
        context = self._acquire(before_tokens, cancel, audio=audio_16k)
        if context is None:
            return
        tokens = None
        try:
            if cancel.is_set():
                return
            acquired = time.perf_counter()
            embeddings, cached, frames = self._reply_rows(context, before_tokens, audio_16k)
            encoded = time.perf_counter()
            if cancel.is_set():  # while the audio was encoded: the prompt's evaluation cannot be stopped
                return
            self._sources.pop(context, None)
            reused = context.start([before_tokens, embeddings, context.tokenize(after)],
                                   tolerance=AUDIO_REUSE_TOLERANCE)
            self._sources[context] = (audio_16k, max(cached, self._final_count(frames)))
            log.debug("native prompt: context free after %.0f ms, audio encoded in %.0f ms, %d positions "
                      "decoded in %.0f ms (%d reused: %d final audio rows cached, %d more kept)",
                      1e3 * (acquired - started), 1e3 * (encoded - acquired), context.n_past - reused,
                      1e3 * (time.perf_counter() - encoded), reused, cached,
                      max(0, reused - len(before_tokens) - cached))
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
        self._pool.release(context)

    def _acquire(self, before: list[int], cancel: threading.Event, wait: bool = True,
                 audio: np.ndarray | None = None) -> EmbeddingContext | None:
        """The free context whose KV cache holds most of `before` and then of `audio`'s rows
        (usually the one that served this conversation's previous turn, or evaluated this turn's
        speech while the user spoke), ties to the one idle longest; None when cancelled while
        waiting for one (or, with `wait` False, when none is free). A reply waits a little for the
        early evaluation of its own speech to finish, rather than evaluate it all elsewhere."""
        deadline = time.monotonic() + _PREFILL_WAIT_S

        def cached(context: EmbeddingContext) -> tuple[int, int]:
            rows = 0 if audio is None else len(self._cached_rows(context, before, audio))
            return context.cached_prefix(before), rows

        def choose(free: Sequence[EmbeddingContext], preparing: Mapping[EmbeddingContext, object]) -> object:
            if not free:
                return WAIT if wait else None
            if wait and audio is not None and time.monotonic() < deadline \
                    and any(isinstance(tag, np.ndarray) and _starts_with(audio, tag) for tag in preparing.values()):
                return WAIT  # this turn's speech is being evaluated in a busy context
            return max(free, key=cached)

        return self._pool.acquire(choose, cancel, tag=audio if not wait else None)


def _starts_with(audio: np.ndarray, prefix: np.ndarray) -> bool:
    return prefix.size <= audio.size and np.array_equal(audio[: prefix.size], prefix)
