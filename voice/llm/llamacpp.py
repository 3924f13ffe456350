"""llama.cpp in-process (llama-cpp-python), one shared model behind a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from voice.llm.base import ChatMessage, GenerationOptions, LLMError


class LlamaCppChat:
    """A GGUF model loaded once. Generation is serialised: llama.cpp contexts are not thread-safe."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int = 2) -> None:
        from llama_cpp import Llama

        self.name = Path(model_path).name
        self._llama = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        self._lock = threading.Lock()

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str]:
        with self._lock:
            if cancel.is_set():
                return
            try:
                stream = self._llama.create_chat_completion(
                    messages=[m.as_dict() for m in messages],
                    stream=True,
                    max_tokens=options.max_tokens,
                    temperature=options.temperature,
                )
                for chunk in stream:
                    if cancel.is_set():
                        stream.close()  # stops llama.cpp between tokens
                        return
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        yield delta
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise LLMError(f"llama.cpp: {exc}") from exc
