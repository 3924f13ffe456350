"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp's server, ...), streamed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai

from voice.llm.base import ChatMessage, GenerationOptions, LLMError, ToolCall
from voice.llm.tool_calls import CallSpotter, repeats, text_call

log = logging.getLogger(__name__)


class OpenAICompatibleChat:
    """Streams `/v1/chat/completions` from a server at `base_url` (for example http://host:8000/v1)."""

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 20.0):
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=0)
        self._model = model
        self._timeout = timeout
        self.name = model or base_url

    def _model_name(self) -> str:
        if self._model is None:
            try:
                models = self._client.models.list().data
            except openai.OpenAIError as exc:
                raise LLMError(f"LLM server unreachable: {exc}") from exc
            if not models:
                raise LLMError("the LLM server lists no models; pass --llm-name")
            self._model = models[0].id
        return self._model

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str | ToolCall]:
        wire = [_wire_message(m) for m in messages]
        said = False
        for piece in self.stream_messages(wire, options, cancel):
            if isinstance(piece, ToolCall) and not options.require_tool and repeats(piece, messages):
                # The call was made and answered: the result is to be said (asked again, without tools).
                log.info("the model repeats its answered call %s: asking for words", piece.name)
                yield from self.stream_messages([*wire, SAY_THE_RESULT], replace(options, tools=()), cancel)
                return
            said = True
            yield piece
        if not said and not cancel.is_set() and messages and messages[-1].role == "tool":
            # Small models echo a function's output as JSON, which is no call and is not to be spoken.
            log.info("the reply to a function's output had no words: asking for words")
            yield from self.stream_messages([*wire, SAY_THE_RESULT], replace(options, tools=()), cancel)

    def stream_messages(self, messages: list[dict[str, Any]], options: GenerationOptions,
                        cancel: threading.Event) -> Iterator[str | ToolCall]:
        """Stream a reply to chat messages in the wire format (content may be a list of parts); the
        tools go to the server, and its streamed `tool_calls` come back whole, after the text."""
        extra: dict[str, Any] = {}
        if options.tools:
            extra = {"tools": [tool.as_dict() for tool in options.tools],
                     "tool_choice": "required" if options.require_tool else "auto"}
        calls: dict[int, dict[str, str]] = {}  # index -> id, name, arguments so far
        spotter = CallSpotter() if options.tools else None  # a call the server left in the text
        body = ""
        found: ToolCall | None = None
        try:
            stream = self._client.chat.completions.create(
                model=self._model_name(),
                messages=messages,  # type: ignore[arg-type]
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                stream=True,
                **extra,
            )
            with stream:
                for chunk in stream:
                    if cancel.is_set():
                        return  # leaving the block closes the HTTP stream; the server stops
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    if delta.content and spotter is None:
                        yield delta.content
                    elif delta.content and spotter is not None and spotter.opened:
                        body += delta.content
                    elif delta.content and spotter is not None:
                        spotted = spotter.feed(delta.content)
                        if spotted.text:
                            yield spotted.text
                        body = spotted.rest
                    if body and "}" in (delta.content or "") and (found := text_call(body, options.tools)):
                        break  # a whole call in the text: what follows is the model repeating it
                    for part in delta.tool_calls or ():
                        call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = part.id or call["id"]
                        if part.function is not None:
                            call["name"] += part.function.name or ""
                            call["arguments"] += part.function.arguments or ""
            if spotter is not None and not spotter.opened and (rest := spotter.flush()):
                yield rest
            for call in calls.values():
                if call["name"]:
                    yield ToolCall(call["name"], call["arguments"] or "{}", call["id"])
            if spotter is not None and spotter.opened and not calls:
                found = found or text_call(body, options.tools)
                if found:
                    yield found
        except openai.APITimeoutError as exc:
            raise LLMError(f"LLM server timed out (nothing for {self._timeout:g} s)") from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"LLM server error: {exc}") from exc


SAY_THE_RESULT = {"role": "system",
                  "content": "Tell the user the result of the function call in one short spoken sentence, in words."}


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    """A message as chat-completions servers take it (an assistant's calls without text: null content)."""
    wire = message.as_dict()
    if message.tool_calls and not message.content:
        wire["content"] = None
    return wire
