"""A model's own chat template, read from its GGUF and rendered as llama-cpp-python renders it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

_MARK = "\x00cut-here\x00"  # marks where a message's text ends in a rendered prompt


class ChatTemplate:
    """The Jinja chat template of a GGUF model (`tokenizer.chat_template`), with its BOS and EOS texts."""

    def __init__(self, llama: Any) -> None:
        """From a loaded `llama_cpp.Llama` (a vocabulary-only load is enough)."""
        from llama_cpp import llama_chat_format

        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{llama.model_path} has no chat template")
        model = llama._model  # llama-cpp-python 0.3.36 (pinned)

        def text(token: int) -> str:
            return model.token_get_text(token) if token != -1 else ""

        self.knows_tools = "tools" in template
        """Whether the template renders `tools` (and calls and results) itself."""
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos()))

    @classmethod
    def of(cls, llama: Any) -> ChatTemplate | None:
        """The template llama-cpp-python's own chat completion uses for `llama`, or None when it
        uses another chat format (one it picks by name, not the GGUF's template)."""
        if llama.chat_format != "chat_template.default" or not llama.metadata.get("tokenizer.chat_template"):
            return None
        return cls(llama)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt of `messages` (and of `tools`, in the chat-completions format, for a template
        that renders them), ending with the assistant's turn opening."""
        if tools:
            return self._formatter(messages=messages, tools=tools).prompt
        return self._formatter(messages=messages).prompt

    def around_last(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
                    ) -> tuple[str, str]:
        """The prompt text before and after the last message's content: what comes before a user
        turn still being spoken, or around audio that stands for the user's words."""
        last = messages[-1]
        marked = [*messages[:-1], {**last, "content": last["content"] + _MARK}]
        before, _, after = self.render(marked, tools).partition(_MARK)
        return before, after


@cache
def gguf_template(path: Path) -> ChatTemplate:
    """The chat template of the GGUF at `path` (its vocabulary alone is loaded, once)."""
    from llama_cpp import Llama

    return ChatTemplate(Llama(model_path=str(path), vocab_only=True, verbose=False))
