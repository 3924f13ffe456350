"""llama.cpp in-process (llama-cpp-python): a small pool of contexts over one model file."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from voice.llm.base import ChatMessage, GenerationOptions, LLMError

_WAIT_POLL_S = 0.05


def shared_turns(before: list[dict[str, str]], after: list[dict[str, str]]) -> int:
    """How many leading messages two conversations share."""
    count = 0
    for old, new in zip(before, after, strict=False):
        if old != new:
            break
        count += 1
    return count


class LlamaCppChat:
    """A GGUF model loaded once, with `parallel` contexts (llama.cpp memory-maps the weights, so
    they share them). A context serves one reply at a time; with more than one, a long reply in
    one session does not hold up the first token of another.

    Each context keeps the tokens of its last conversation in its KV cache, and llama.cpp skips
    the part of a new prompt that matches them. A request therefore takes the free context whose
    last conversation shares the most messages with its own (usually the one that served the same
    session's previous turn), so that only the new turn is evaluated, not the whole history; a
    new conversation takes the context idle longest, leaving the others' histories in place.
    """

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int = 2, parallel: int = 2) -> None:
        from llama_cpp import Llama

        self.name = Path(model_path).name
        self._contexts = [Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
                          for _ in range(max(1, parallel))]
        self._free = list(range(len(self._contexts)))
        self._history: dict[int, list[dict[str, str]]] = {}  # context -> the conversation it last saw
        self._changed = threading.Condition()

    def warm(self, messages: list[ChatMessage]) -> None:
        """Evaluate `messages` (the system prompt) in every context now, so that no session's
        first turn pays for it."""
        conversation = [m.as_dict() for m in messages] + [{"role": "user", "content": "Hello."}]
        with self._changed:
            for index, context in enumerate(self._contexts):
                if index in self._free:
                    reply = context.create_chat_completion(messages=conversation, max_tokens=1, temperature=0.0)
                    content = reply["choices"][0]["message"]["content"] or ""
                    self._history[index] = [*conversation, {"role": "assistant", "content": content}]

    def _acquire(self, conversation: list[dict[str, str]], cancel: threading.Event) -> int | None:
        """The free context that knows most of `conversation`, first come first served; None if
        cancelled while waiting for one."""
        with self._changed:
            while not self._free:
                if cancel.is_set():
                    return None
                self._changed.wait(_WAIT_POLL_S)
            # The free context holding most of this conversation beyond its system prompt (cheap to
            # evaluate again); otherwise the one that has been idle longest (first in `_free`).
            best = max(self._free, key=lambda index: max(
                0, shared_turns(self._history.get(index, []), conversation) - 1))
            self._free.remove(best)
            return best

    def _release(self, index: int, conversation: list[dict[str, str]]) -> None:
        with self._changed:
            self._history[index] = conversation
            self._free.append(index)
            self._changed.notify()

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str]:
        conversation = [m.as_dict() for m in messages]
        index = self._acquire(conversation, cancel)
        if index is None:
            return
        reply: list[str] = []
        try:
            stream = self._contexts[index].create_chat_completion(
                messages=conversation,
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
                    reply.append(delta)
                    yield delta
        except ValueError as exc:  # e.g. prompt longer than the context window
            raise LLMError(f"llama.cpp: {exc}") from exc
        finally:
            self._release(index, [*conversation, {"role": "assistant", "content": "".join(reply)}])
