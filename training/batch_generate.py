"""Greedy replies to many text prompts at once: one llama.cpp context, one sequence per prompt.

Making training data means thousands of distilled replies. Decoding one token for 16 sequences
in one `llama_decode` reads the weights once, so on a small CPU it costs little more than one
token for one sequence; `BatchedGreedy` turns that into about a fivefold throughput over
`EmbeddingContext.generate` one prompt at a time. Greedy means argmax of the logits, what
llama.cpp's greedy sampler takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.llm.base import LLMError, shared_prefix
from voice.llm.compute_thread import on_compute_thread
from voice.models import llama_file


@dataclass(frozen=True)
class GreedyReply:
    ids: list[int]
    """The generated token ids, without the end token."""
    finished: bool
    """Whether the reply ended by itself within the token limit."""


class BatchedGreedy:
    """Greedy generation for up to `n_seq` prompts per llama.cpp decode, each in its own
    `seq_ctx` positions (a multiple of 256: llama.cpp rounds other sizes up)."""

    def __init__(self, model_path: str | Path, *, n_seq: int = 16, seq_ctx: int = 256, n_threads: int = 2) -> None:
        import llama_cpp
        from llama_cpp import Llama

        self._lib = llama_cpp
        self.n_seq = n_seq
        self.seq_ctx = seq_ctx
        self._llama = Llama(model_path=str(llama_file(Path(model_path))), n_ctx=64, n_batch=64, verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_seq * seq_ctx
        params.n_batch = params.n_ctx
        params.n_ubatch = 512
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = n_threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Llama() has it: the same logits
        self._ctx = llama_cpp.llama_init_from_model(self._llama.model, params)
        if not self._ctx:
            raise LLMError(f"llama.cpp could not make a context for {n_seq} sequences of {seq_ctx}")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self.n_vocab = self._llama.n_vocab()
        self._batch = llama_cpp.llama_batch_init(params.n_ctx, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        """Token ids for `text`, parsing special tokens; no BOS added."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of generated ids (control tokens leave nothing)."""
        return self._llama.detokenize(list(ids)).decode("utf-8", errors="replace")

    def generate(self, prompts: Sequence[Sequence[int]], max_tokens: int) -> list[GreedyReply]:
        """The greedy continuation of each prompt (at most `max_tokens`), in order."""
        replies: list[GreedyReply] = []
        for start in range(0, len(prompts), self.n_seq):
            replies += self._generate_group(prompts[start:start + self.n_seq], max_tokens)
        return replies

    def _generate_group(self, prompts: Sequence[Sequence[int]], max_tokens: int) -> list[GreedyReply]:
        for prompt in prompts:
            if not prompt or len(prompt) + max_tokens > self.seq_ctx:
                raise ValueError(f"a prompt of {len(prompt)} tokens and {max_tokens} more do not fit {self.seq_ctx}")
        self._lib.llama_memory_clear(self._memory, True)
        outputs: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        # The prefix all prompts share (the chat template and system prompt) is decoded once and
        # copied; each sequence keeps at least one token of its own, whose logits start its reply.
        common = min(min(shared_prefix(prompts[0], prompt), len(prompt) - 1) for prompt in prompts)
        if len(prompts) > 1 and common > 0:
            self._decode([(0, pos, token) for pos, token in enumerate(prompts[0][:common])], logits=False)
            for seq in range(1, len(prompts)):
                self._lib.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        else:
            common = 0
        # (sequence, position, token) of what to decode; the last entry of each sequence gives logits
        entries = [(seq, pos, token) for seq, prompt in enumerate(prompts)
                   for pos, token in enumerate(prompt) if pos >= common]
        positions = [len(prompt) for prompt in prompts]
        while entries:
            last_rows = self._decode(entries)
            entries = []
            for seq, row in last_rows.items():
                logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, row), shape=(self.n_vocab,))
                token = int(np.argmax(logits))
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finished[seq] = True
                    continue
                if len(outputs[seq]) == max_tokens:  # a token beyond the limit: not finished
                    continue
                outputs[seq].append(token)
                entries.append((seq, positions[seq], token))
                positions[seq] += 1
        return [GreedyReply(ids, done) for ids, done in zip(outputs, finished, strict=True)]

    def _decode(self, entries: list[tuple[int, int, int]], logits: bool = True) -> dict[int, int]:
        """Decode the entries in one batch; returns each sequence's batch row that has logits."""
        batch = self._batch
        last_rows: dict[int, int] = {}
        for row, (seq, pos, token) in enumerate(entries):
            batch.token[row] = token
            batch.pos[row] = pos
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = seq
            batch.logits[row] = False
            last_rows[seq] = row
        for row in last_rows.values():
            batch.logits[row] = logits
        batch.n_tokens = len(entries)
        code = on_compute_thread(self._lib.llama_decode, self._ctx, batch)
        if code != 0:
            raise LLMError(f"llama_decode returned {code}")
        return last_rows

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
        self._llama.close()
