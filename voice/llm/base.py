"""The streaming chat interface every LLM backend implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_dict(self) -> dict[str, Any]:
        """In the chat-completions format (what chat templates and OpenAI-compatible servers take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: the function's name and its arguments as a JSON string."""

    name: str
    arguments: str
    call_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls an assistant message made."""
    tool_call_id: str | None = None
    """For a `tool` message (a function's output): the call it answers."""

    def as_dict(self) -> dict[str, Any]:
        """In the chat-completions format."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 160
    temperature: float = 0.7
    tools: tuple[Tool, ...] = ()
    """Functions the model may call (none: it only talks)."""
    require_tool: bool = False
    """The reply must be a call to one of `tools`."""


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
    """Streams a reply token by token; stops promptly once `cancel` is set. Text comes as strings;
    a call to one of `options.tools` comes whole, as a ToolCall (after any text).

    A backend that caches prompts may also have `warm(messages)`, which the server calls once at
    start-up with the system prompt, and `prefill(messages, cancel)`, which evaluates a prompt
    ending in a user utterance still being spoken, so that the reply evaluates only the rest.
    """

    name: str

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str | ToolCall]:
        ...
