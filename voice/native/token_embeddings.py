"""The LLM's input token embeddings, read from its GGUF file (the `gguf` package).

The native path turns the chat-template text around the user's audio into embeddings too, so
that the text and the audio are decoded as one llama.cpp batch: every decode call reads all the
weights once, and on a CPU that read costs as much as a few dozen positions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voice.llm.base import LLMError
from voice.models import llama_file


class TokenEmbeddings:
    """Rows of `token_embd.weight`, dequantized to float32 on demand (the file stays memory-mapped).

    Reading the GGUF file's index takes seconds (the `gguf` package parses the whole vocabulary),
    so with `background` it is read in a thread, and the first lookup waits for it."""

    def __init__(self, gguf_path: str | Path, *, background: bool = False) -> None:
        self.path = llama_file(Path(gguf_path))
        self._loaded = threading.Event()
        self._error: Exception | None = None
        if background:
            threading.Thread(target=self._load, name="gguf-token-embeddings", daemon=True).start()
        else:
            self._load()
            if self._error is not None:
                raise self._error

    def _load(self) -> None:
        try:
            import gguf

            reader = gguf.GGUFReader(str(self.path))
            tensor = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
            if tensor is None:
                raise LLMError(f"{self.path} has no token_embd.weight tensor")
            self._dequantize = gguf.quants.dequantize
            self._data = tensor.data  # (n_vocab, bytes per row), quantized
            self._type = tensor.tensor_type
            self.n_embd = int(tensor.shape[0])
            self.n_vocab = int(tensor.shape[1])
        except Exception as exc:  # noqa: BLE001 - raised again at the first lookup
            self._error = exc
        finally:
            self._loaded.set()

    def __call__(self, tokens: Sequence[int]) -> np.ndarray:
        """The embeddings (len(tokens), n_embd) of token ids, float32."""
        self._wait()
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise ValueError(f"token ids must be in [0, {self.n_vocab})")
        rows = self._dequantize(self._data[ids], self._type)
        return np.ascontiguousarray(rows.reshape(ids.size, self.n_embd), dtype=np.float32)

    def matrix(self) -> np.ndarray:
        """The whole table (n_vocab, n_embd), float32 (the training script's frozen embedding)."""
        self._wait()
        return self(range(self.n_vocab))

    def _wait(self) -> None:
        self._loaded.wait()
        if self._error is not None:
            raise LLMError(f"cannot read the token embeddings of {self.path}: {self._error}") from self._error


def token_embedding_matrix(gguf_path: str | Path) -> np.ndarray:
    """The LLM's input token embeddings (n_vocab, n_embd), float32, dequantized from the GGUF file."""
    return TokenEmbeddings(gguf_path).matrix()
