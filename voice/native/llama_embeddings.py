"""llama.cpp fed with input embeddings as well as token ids (llama-cpp-python's low-level API).

A llama.cpp batch carries either token ids or embeddings (`llama_batch_init(n, n_embd, 1)` fills
`batch.embd`), so a prompt with audio in the middle is decoded as three batches into the same KV
cache: the chat-template text before the audio (tokens), the projected audio (embeddings), the
text after it (tokens); or, given the token embeddings (voice/native/token_embeddings.py), as one
batch of embeddings, which reads the weights once instead of three times. Sampling then runs token
by token with llama.cpp's sampler chain.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from voice.llm.base import LLMError, shared_prefix
from voice.llm.compute_thread import decode
from voice.models import llama_file

log = logging.getLogger(__name__)

Piece = Sequence[int] | np.ndarray
"""Part of a prompt: token ids, or embeddings (n, n_embd) float32."""


class EmbeddingContext:
    """One llama.cpp context (model weights memory-mapped, so several contexts share them).
    Not thread-safe: one prompt at a time (voice/native/model.py keeps a pool).

    With `embed` (token ids -> their input embeddings, voice/native/token_embeddings.py), `start`
    decodes a prompt that holds embeddings as one batch of embeddings, text included. With `lora`
    (a llama.cpp LoRA adapter file), this context runs the model with that adapter applied."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 2048, n_threads: int = 2, n_batch: int = 512,
                 embed: Callable[[Sequence[int]], np.ndarray] | None = None, lora: str | Path | None = None) -> None:
        import llama_cpp
        from llama_cpp import Llama

        self._lib = llama_cpp
        self.llama = Llama(model_path=str(llama_file(Path(model_path))), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                           n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
        self.n_ctx = self.llama.n_ctx()
        self.n_embd = self.llama.n_embd()
        self.n_vocab = self.llama.n_vocab()
        self.n_batch = n_batch
        self.embed = embed
        self.n_past = 0
        self._cached: list[int] = []  # the leading token ids of the last `start`, still in the KV cache
        self._cached_rows = np.zeros((0, self.n_embd), np.float32)  # the embeddings right after them
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        self._memory = llama_cpp.llama_get_memory(self.llama.ctx)
        self._adapter = None
        if lora is not None:
            try:
                self._apply_lora(Path(lora))
            except LLMError:
                self.llama.close()
                raise
        self._tokens = _Batch(llama_cpp, n_batch, 0)
        self._embeds = _Batch(llama_cpp, n_batch, self.n_embd)

    def _apply_lora(self, path: Path) -> None:
        # Not Llama(lora_path=...): that turns off memory-mapping, so each context would hold its own
        # copy of the weights.
        if not path.is_file():
            raise LLMError(f"LoRA adapter {path} not found")
        self._adapter = self._lib.llama_adapter_lora_init(self.llama.model, str(path).encode("utf-8"))
        if not self._adapter:
            self._adapter = None
            raise LLMError(f"llama.cpp could not load the LoRA adapter {path} (not one for {self.llama.model_path}?)")
        adapters = (self._lib.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if self._lib.llama_set_adapters_lora(self.llama.ctx, adapters, 1, scales) != 0:
            self._lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None
            raise LLMError(f"llama.cpp could not apply the LoRA adapter {path}")

    def tokenize(self, text: str) -> list[int]:
        """Token ids for `text`, parsing special tokens such as <|im_start|>; no BOS added."""
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def piece(self, token: int) -> bytes:
        """The bytes one generated token stands for (control tokens: empty)."""
        buffer = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
        return buffer.raw[:n]

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def reset(self) -> None:
        """Forget the previous prompt (clears the KV cache)."""
        self._lib.llama_memory_clear(self._memory, True)
        self.n_past = 0
        self._cached = []
        self._cached_rows = self._cached_rows[:0]

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading `tokens` the KV cache already holds (from the last `start`)."""
        return shared_prefix(self._cached, tokens)

    def cached_embeddings(self, tokens: Sequence[int]) -> np.ndarray:
        """The embeddings the KV cache holds right after exactly `tokens` (decoded by the last
        `start` after those tokens: an audio prefix evaluated early); empty when there are none."""
        if len(self._cached) != len(tokens) or self.cached_prefix(tokens) != len(tokens):
            return self._cached_rows[:0]
        return self._cached_rows

    def start(self, pieces: Sequence[Piece], tolerance: float = 0.0) -> int:
        """Decode a new prompt (see `feed`), keeping what the KV cache already holds of it: its
        leading token ids (the system prompt and history of the previous prompt) and, after all of
        them, the leading rows of an embeddings piece that are the rows decoded there before (audio
        evaluated while the user spoke): the very rows, or with `tolerance`, rows within that
        relative distance of them (the KV cache then keeps the rows it has, and `cached_embeddings`
        says so). Returns how many positions were reused."""
        pieces = [piece for piece in pieces if len(piece)]
        first = list(pieces[0]) if pieces and not _is_embeddings(pieces[0]) else []
        rows = pieces[1] if len(pieces) > 1 and first and _is_embeddings(pieces[1]) else None
        reuse = self.cached_prefix(first)
        cached = self.cached_embeddings(first)
        kept_rows = _shared_rows(cached, rows, tolerance) if rows is not None else 0
        if reuse + kept_rows == sum(len(piece) for piece in pieces):  # decode at least one position:
            if kept_rows:                                               # its logits start the reply
                kept_rows -= 1
            else:
                reuse -= 1
        if tolerance > 0 and rows is not None and kept_rows:  # the near rows stay as the KV cache has them
            rows = np.concatenate([cached[:kept_rows], rows[kept_rows:]])
        if reuse <= 0:
            self.reset()
        else:
            self._lib.llama_memory_seq_rm(self._memory, 0, reuse + kept_rows, -1)
            self.n_past = reuse + kept_rows
            self._cached = first[:reuse]  # what stays true should the decode below fail
            self._cached_rows = self._cached_rows[:kept_rows]
            pieces = [first[reuse:], *pieces[1:]]
            if kept_rows:
                pieces[1] = rows[kept_rows:]
        self.feed(self._as_one_piece(pieces))
        self._cached = first
        self._cached_rows = rows if rows is not None else self._cached_rows[:0]
        return max(0, reuse + kept_rows)

    def _as_one_piece(self, pieces: Sequence[Piece]) -> list[Piece]:
        """The pieces as one embeddings piece, when they hold embeddings and `embed` is set."""
        if self.embed is None or not any(_is_embeddings(piece) for piece in pieces):
            return list(pieces)
        try:
            parts = [piece if _is_embeddings(piece) else self.embed(piece) for piece in pieces if len(piece)]
        except Exception as exc:  # noqa: BLE001 - only an optimisation: decode the text as tokens then
            log.warning("token embeddings unavailable (%s): text is decoded apart from the audio", exc)
            self.embed = None
            return list(pieces)
        return [np.concatenate(parts).astype(np.float32, copy=False)]

    def feed(self, pieces: Sequence[Piece]) -> None:
        """Decode token and embedding pieces after what the context holds, in order; the logits of
        the last position are then available (`logits`, `generate`)."""
        pieces = [piece for piece in pieces if len(piece)]
        if not pieces:
            raise ValueError("empty prompt")
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            if _is_embeddings(piece):
                self.feed_embeddings(piece, logits=last)
            else:
                self.feed_tokens(piece, logits=last)

    def feed_tokens(self, tokens: Sequence[int], *, logits: bool = True) -> None:
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
        self._check_room(tokens.size)
        for start in range(0, tokens.size, self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            self._tokens.fill(self.n_past, chunk.size, logits and start + chunk.size == tokens.size)
            self._tokens.token[: chunk.size] = chunk
            self._decode(self._tokens, chunk.size)

    def feed_embeddings(self, embeddings: np.ndarray, *, logits: bool = True) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.n_embd:
            raise ValueError(f"embeddings must be (n, {self.n_embd}), got {embeddings.shape}")
        self._check_room(embeddings.shape[0])
        for start in range(0, embeddings.shape[0], self.n_batch):
            chunk = embeddings[start:start + self.n_batch]
            self._embeds.fill(self.n_past, chunk.shape[0], logits and start + chunk.shape[0] == embeddings.shape[0])
            ctypes.memmove(self._embeds.batch.embd, chunk.ctypes.data, chunk.nbytes)
            self._decode(self._embeds, chunk.shape[0])

    def logits(self) -> np.ndarray:
        """A copy of the logits at the last decoded position (n_vocab,)."""
        pointer = self._lib.llama_get_logits_ith(self.llama.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def generate(self, max_tokens: int, temperature: float = 0.0, *, seed: int | None = None,
                 cancel: threading.Event | None = None) -> Iterator[int]:
        """Sample tokens after `feed`, one by one (greedy at temperature 0), until an end-of-generation
        token, `max_tokens`, the context's end, or `cancel`; the end token is not yielded."""
        sampler = _sampler(self._lib, temperature, seed)
        try:
            for count in range(1, max_tokens + 1):
                if cancel is not None and cancel.is_set():
                    return
                token = int(self._lib.llama_sampler_sample(sampler, self.llama.ctx, -1))
                if self.is_end(token):
                    return
                yield token
                if count == max_tokens or self.n_past >= self.n_ctx or (cancel is not None and cancel.is_set()):
                    return
                self.feed_tokens([token])
        finally:
            self._lib.llama_sampler_free(sampler)

    def close(self) -> None:
        self._tokens.free()
        self._embeds.free()
        if self._adapter is not None:
            self._lib.llama_set_adapters_lora(self.llama.ctx, None, 0, None)
            self._lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self.llama.close()

    def _check_room(self, n: int) -> None:
        if self.n_past + n > self.n_ctx:
            raise LLMError(f"prompt of {self.n_past + n} positions does not fit the context ({self.n_ctx})")

    def _decode(self, batch: _Batch, n: int) -> None:
        batch.batch.n_tokens = n
        code = decode(self.llama.ctx, self.llama.n_threads, self._lib.llama_decode, self.llama.ctx, batch.batch)
        if code != 0:
            raise LLMError(f"llama_decode returned {code}")
        self.n_past += n


def _shared_rows(cached: np.ndarray, rows: np.ndarray, tolerance: float = 0.0) -> int:
    """How many leading rows of `rows` are the `cached` ones: exactly, or with `tolerance`, each
    within that distance of its cached row, relative to the cached row's norm."""
    n = min(len(cached), len(rows))
    if tolerance > 0:
        distance = np.linalg.norm(cached[:n] - rows[:n], axis=1)
        differs = np.flatnonzero(distance > tolerance * np.linalg.norm(cached[:n], axis=1))
    else:
        differs = np.flatnonzero((cached[:n] != rows[:n]).any(axis=1))
    return int(differs[0]) if differs.size else n


def _is_embeddings(piece: Piece) -> bool:
    return isinstance(piece, np.ndarray) and piece.ndim == 2


class _Batch:
    """A llama_batch allocated once (token ids, or embeddings when n_embd > 0), one sequence."""

    def __init__(self, lib, size: int, n_embd: int) -> None:
        self._lib = lib
        self.batch = lib.llama_batch_init(size, n_embd, 1)
        self.size = size
        self.token = None if n_embd else np.ctypeslib.as_array(self.batch.token, shape=(size,))
        self.pos = np.ctypeslib.as_array(self.batch.pos, shape=(size,))
        self.logits = np.ctypeslib.as_array(self.batch.logits, shape=(size,))
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(size,))[:] = 1
        for i in range(size):
            self.batch.seq_id[i][0] = 0

    def fill(self, start: int, n: int, logits_last: bool) -> None:
        self.pos[:n] = np.arange(start, start + n, dtype=np.int32)
        self.logits[:n] = 0
        self.logits[n - 1] = 1 if logits_last else 0

    def free(self) -> None:
        if self.batch is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None

    def __del__(self) -> None:
        self.free()


def _sampler(lib, temperature: float, seed: int | None):
    """A llama.cpp sampler chain: greedy, or top-k 40 / top-p 0.95 / min-p 0.05 / temperature
    (the defaults of llama-cpp-python's chat completions)."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(0.95, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
    seed = lib.LLAMA_DEFAULT_SEED if seed is None else seed
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain
