"""llama.cpp in-process (llama-cpp-python): a small pool of contexts over one model file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from voice.llm.base import ChatMessage, GenerationOptions, LLMError, shared_prefix
from voice.llm.compute_thread import route_decodes
from voice.models import llama_file

_WAIT_POLL_S = 0.05
_REPLY_ROOM = 256  # tokens a prefilled prompt leaves free in its context
_CUT = "\x00cut-here\x00"  # marks where the last message's text ends in a rendered prompt


def shared_turns(before: list[dict[str, str]], after: list[dict[str, str]]) -> float:
    """How many leading messages two conversations share, plus a half where the first message
    that differs begins like its counterpart (a prefilled partial utterance, then the whole of it,
    which may differ in a word or in case)."""
    count = shared_prefix(before, after)
    if count < min(len(before), len(after)):
        old, new = before[count], after[count]
        begun = os.path.commonprefix([old["content"].lower(), new["content"].lower()])
        if old["role"] == new["role"] and old["content"] and len(begun) >= len(old["content"]) // 2:
            return count + 0.5
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
        weights = str(llama_file(Path(model_path)))
        self._contexts = [Llama(model_path=weights, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
                          for _ in range(max(1, parallel))]
        for context in self._contexts:
            route_decodes(context)
        self._free = list(range(len(self._contexts)))
        self._history: dict[int, list[dict[str, str]]] = {}  # context -> the conversation it last saw
        self._prefilling: set[int] = set()
        self._changed = threading.Condition()
        self._formatter = _chat_formatter(self._contexts[0])

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

    def _acquire(self, conversation: list[dict[str, str]], cancel: threading.Event, wait: bool = True) -> int | None:
        """The context that knows most of `conversation` (waiting for it while a prefill runs on
        it, which is short), else the free one idle longest; None if cancelled while waiting.
        Without `wait` (a prefill): the best context, marked as prefilling, or None if it is busy."""
        def score(index: int) -> float:
            # Beyond the system prompt, which every context holds.
            return max(0.0, shared_turns(self._history.get(index, []), conversation) - 1)

        with self._changed:
            while True:
                if cancel.is_set():
                    return None
                top = max(score(index) for index in range(len(self._contexts)))
                best = max(self._free, key=score) if self._free else None  # ties: the first, idle longest
                if best is not None and score(best) == top:
                    break
                if not wait:
                    return None
                prefilling = any(score(index) == top for index in self._prefilling)
                if best is not None and not (top > 0 and prefilling):
                    break
                self._changed.wait(_WAIT_POLL_S)
            self._free.remove(best)
            if not wait:
                self._prefilling.add(best)
            return best

    def _release(self, index: int, conversation: list[dict[str, str]]) -> None:
        with self._changed:
            self._history[index] = conversation
            self._prefilling.discard(index)
            self._free.append(index)
            self._changed.notify_all()

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event) -> None:
        """Evaluate the prompt of `messages` up to the end of the last message's text (a user
        utterance still being spoken) in the context that will serve it, so that the reply, once
        the utterance is complete, evaluates only the words that came after."""
        if self._formatter is None:
            return
        conversation = [m.as_dict() for m in messages]
        index = self._acquire(conversation, cancel, wait=False)  # busy: the reply will evaluate it all
        if index is None:
            return
        try:
            marked = [*conversation[:-1], {**conversation[-1], "content": conversation[-1]["content"] + _CUT}]
            prompt = self._formatter(messages=marked).prompt.split(_CUT)[0]
            llama = self._contexts[index]
            tokens = llama.tokenize(prompt.encode("utf-8"), special=True)
            cached = shared_prefix(llama._input_ids, tokens)  # what llama.cpp reuses
            if cached < len(tokens) < llama.n_ctx() - _REPLY_ROOM and not cancel.is_set():
                llama.n_tokens = cached
                llama.eval(tokens[cached:])  # drops the cache beyond `cached` first
        finally:
            self._release(index, conversation)

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


def _chat_formatter(llama):  # noqa: ANN001, ANN202 - llama_cpp types, imported lazily
    """The prompt formatter llama-cpp-python builds from the model's own chat template (the one
    `create_chat_completion` uses), or None for another chat format (no prefill then)."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if llama.chat_format != "chat_template.default" or not template:
        return None
    model = llama._model

    def text(token: int) -> str:
        return model.token_get_text(token) if token != -1 else ""

    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=text(llama.token_eos()),
                                                 bos_token=text(llama.token_bos()))
