"""The conversation a session holds: its items, and the chat history the LLM sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voice.llm.base import ChatMessage, ToolCall

_CONTENT_TYPE = {"user": "input_text", "system": "input_text", "assistant": "output_text"}


@dataclass(frozen=True)
class ConversationLimits:
    """How much one session's conversation may hold; past it, items are refused (`conversation_full`)."""

    max_items: int = 1000
    max_text_bytes: int = 8 * 1024 * 1024
    """UTF-8 bytes of every item's text: messages, transcripts, function names, arguments and outputs,
    and the spoken segments kept for truncation."""


def retention(truncation: str | dict[str, Any]) -> float | None:
    """The share of the history kept when it is cut, by the session's `truncation` (None: never cut)."""
    if truncation == "disabled":
        return None
    return float(truncation["retention_ratio"]) if isinstance(truncation, dict) else 0.5


def _bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass
class Item:
    """One conversation item: a message, a function call, or a function call's output."""

    id: str
    role: str  # user | assistant | system
    content_type: str  # input_audio | input_text | output_audio | output_text
    text: str | None = None  # the text, or the transcript of audio (or a function call's output)
    status: str = "completed"
    audio_ms: float = 0.0  # assistant audio sent so far
    segments: list[tuple[str, float]] = field(default_factory=list)  # (text, audio ms) as spoken
    type: str = "message"  # message | function_call | function_call_output
    call_id: str = ""
    name: str = ""  # the function called
    silence_ms: int = 0  # a user item committed for a silence (server_vad's idle timeout): how long it was
    arguments: str = ""  # its arguments, a JSON string

    @property
    def text_bytes(self) -> int:
        """What the item's text holds in UTF-8 (its segments, kept for truncation, included)."""
        return _bytes(self.text or "") + _bytes(self.name) + _bytes(self.arguments) \
            + sum(_bytes(text) for text, _ in self.segments)

    @property
    def prompt_text(self) -> str:
        """What the item puts in the prompt (for the history's size)."""
        if self.type == "function_call":
            return f"{self.name}{self.arguments}"
        if self.silence_ms and not self.text:
            return f"(The user has said nothing for {self.silence_ms / 1000:.0f} seconds.)"
        return (self.text or "").strip()

    def to_wire(self) -> dict[str, Any]:
        if self.type == "function_call":
            return {"id": self.id, "object": "realtime.item", "type": "function_call", "status": self.status,
                    "name": self.name, "call_id": self.call_id, "arguments": self.arguments}
        if self.type == "function_call_output":
            return {"id": self.id, "object": "realtime.item", "type": "function_call_output",
                    "status": self.status, "call_id": self.call_id, "output": self.text or ""}
        part: dict[str, Any] = {"type": self.content_type}
        if self.content_type in ("input_audio", "output_audio"):
            part["transcript"] = self.text
        else:
            part["text"] = self.text or ""
        return {"id": self.id, "object": "realtime.item", "type": "message", "role": self.role,
                "status": self.status, "content": [part]}

    def truncate(self, audio_end_ms: float) -> None:
        """Keep only the text whose audio was played before `audio_end_ms`."""
        kept: list[str] = []
        elapsed = 0.0
        for text, duration in self.segments:
            if elapsed + duration <= audio_end_ms:
                kept.append(text)
            elif audio_end_ms > elapsed and duration > 0:
                words = text.split()
                share = int(len(words) * (audio_end_ms - elapsed) / duration)
                if share:
                    kept.append(" ".join(words[:share]))
                break
            else:
                break
            elapsed += duration
        self.text = " ".join(kept)
        self.audio_ms = min(self.audio_ms, float(audio_end_ms))


class Conversation:
    """Items in order, with the chat messages derived from them."""

    def __init__(self, history_chars: int = 4000, limits: ConversationLimits | None = None) -> None:
        self.items: list[Item] = []
        self.history_chars = history_chars
        self.retention: float | None = 0.5
        """When the history outgrows `history_chars`, the share of it kept (the oldest items go);
        None: never cut (a prompt too long for the LLM's context then fails the reply)."""
        self.limits = limits or ConversationLimits()
        self._window_start: str | None = None  # id of the oldest item the prompt still includes

    def _window(self) -> list[Item]:
        """The finished items the prompt includes: all of them while they fit `history_chars`;
        past that, the oldest are dropped in one step down to `retention` of the budget. The window's
        start then stays put for several turns, so the prompt keeps the same beginning and the
        LLM's cache of it stays valid (a window sliding by one item every turn would make the
        LLM evaluate the whole history again on every turn)."""
        items = [item for item in self.items if (item.prompt_text or item.type == "function_call_output")
                 and item.status != "in_progress"]
        start = next((k for k, item in enumerate(items) if item.id == self._window_start), 0)
        size = sum(len(item.prompt_text) for item in items[start:])
        if self.retention is not None and size > self.history_chars:
            while start < len(items) - 1 and size > self.history_chars * self.retention:
                size -= len(items[start].prompt_text)
                start += 1
        while start < len(items) and items[start].type == "function_call_output":
            start += 1  # an output without its call means nothing to the model
        self._window_start = items[start].id if items else None
        return items[start:]

    def no_room(self, item: Item | None = None) -> str | None:
        """Why the conversation has no room for `item` (or for one more item of the server's), or None."""
        limits = self.limits
        if len(self.items) >= limits.max_items:
            return f"the conversation holds its limit of {limits.max_items} items: delete some to go on"
        size = sum(existing.text_bytes for existing in self.items) + (item.text_bytes if item else 0)
        if size > limits.max_text_bytes:
            return f"the conversation would hold over {limits.max_text_bytes} bytes of text: delete items to go on"
        return None

    def clear(self) -> None:
        """Drop every item (the session ended: its memory goes back at once, cycles or not)."""
        self.items.clear()
        self._window_start = None

    def get(self, item_id: str) -> Item | None:
        return next((item for item in self.items if item.id == item_id), None)

    def has_call(self, call_id: str) -> bool:
        """Whether a function call with this call id is in the conversation."""
        return any(item.type == "function_call" and item.call_id == call_id for item in self.items)

    @property
    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Append (or insert after `previous_item_id`, `root` = first); return the id before it."""
        if previous_item_id is None:
            before = self.last_id
            self.items.append(item)
            return before
        if previous_item_id == "root":
            self.items.insert(0, item)
            return None
        index = next(i for i, existing in enumerate(self.items) if existing.id == previous_item_id)
        self.items.insert(index + 1, item)
        return previous_item_id

    def delete(self, item_id: str) -> bool:
        item = self.get(item_id)
        if item is None:
            return False
        self.items.remove(item)
        return True

    def messages(self, instructions: str, pending_user: str | None = None) -> list[ChatMessage]:
        """System prompt plus the history window (and a user utterance not yet in the
        conversation, for a speculative reply)."""
        history = [_message(item) for item in self._window()]
        if pending_user:
            history.append(ChatMessage("user", pending_user))
        # Chat templates want user/assistant turns after one system message; an assistant's calls
        # join its words, and each output is a `tool` message of its own.
        merged: list[ChatMessage] = [ChatMessage("system", instructions)]
        for message in history:
            last = merged[-1]
            if message.role == "system":
                merged[0] = ChatMessage("system", f"{merged[0].content}\n{message.content}")
            elif last.role == message.role and len(merged) > 1 and message.role != "tool":
                content = " ".join(c for c in (last.content, message.content) if c)
                merged[-1] = ChatMessage(message.role, content, last.tool_calls + message.tool_calls)
            else:
                merged.append(message)
        return merged


def _message(item: Item) -> ChatMessage:
    """The chat message an item stands for."""
    if item.type == "function_call":
        return ChatMessage("assistant", "", (ToolCall(item.name, item.arguments or "{}", item.call_id),))
    if item.type == "function_call_output":
        return ChatMessage("tool", item.text or "", tool_call_id=item.call_id)
    return ChatMessage(item.role, item.prompt_text)


def text_item(item_id: str, role: str, text: str) -> Item:
    return Item(id=item_id, role=role, content_type=_CONTENT_TYPE[role], text=text)
