"""llama.cpp in-process (llama-cpp-python): a small pool of contexts over one model file."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from voice.llm.base import ChatMessage, GenerationOptions, LLMError


class LlamaCppChat:
    """A GGUF model loaded once, with `parallel` contexts (llama.cpp memory-maps the weights, so
    they share them). A context serves one reply at a time; with more than one, a long reply in
    one session does not hold up the first token of another."""

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int = 2, parallel: int = 2) -> None:
        from llama_cpp import Llama

        self.name = Path(model_path).name
        self._free: queue.Queue[Llama] = queue.Queue()
        for _ in range(max(1, parallel)):
            self._free.put(Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False))

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str]:
        while True:  # wait for a free context, first come first served, unless cancelled meanwhile
            if cancel.is_set():
                return
            try:
                llama = self._free.get(timeout=0.05)
                break
            except queue.Empty:
                continue
        try:
            stream = llama.create_chat_completion(
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
        finally:
            self._free.put(llama)
