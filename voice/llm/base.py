"""The streaming chat interface every LLM backend implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 160
    temperature: float = 0.7


def shared_prefix(before: Sequence[object], after: Sequence[object]) -> int:
    """How many leading items two sequences (messages, token ids) have in common: what of a new
    prompt a cached one already holds."""
    count = 0
    for old, new in zip(before, after, strict=False):
        if old != new:
            break
        count += 1
    return count


class LLMError(RuntimeError):
    """The language model failed (server down, dropped stream, bad reply)."""


class ChatModel(Protocol):
    """Streams a reply token by token; stops promptly once `cancel` is set.

    A backend that caches prompts may also have `warm(messages)`, which the server calls once at
    start-up with the system prompt, and `prefill(messages, cancel)`, which evaluates a prompt
    ending in a user utterance still being spoken, so that the reply evaluates only the rest.
    """

    name: str

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str]:
        ...
