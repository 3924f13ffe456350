"""llama.cpp in-process (llama-cpp-python): a small pool of contexts over one model file."""

from __future__ import annotations

import codecs
import logging
import os
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from voice.llm.base import ChatMessage, GenerationOptions, LLMError, Tool, ToolCall, shared_prefix
from voice.llm.chat_template import ChatTemplate
from voice.llm.compute_thread import route_decodes
from voice.llm.context_pool import WAIT, ContextPool
from voice.llm.tool_calls import (
    OPEN,
    CallSpotter,
    call_grammar,
    called_name,
    grounded,
    parse_call,
    repeats,
    template_messages,
)
from voice.models import llama_file

log = logging.getLogger(__name__)

_REPLY_ROOM = 256  # tokens a prefilled prompt leaves free in its context
_CALL_TOKENS = 512  # at least this many tokens for a tool call's JSON, whatever the reply's limit
_WORDS_GBNF = "root ::= [^{<` \\t\\n] [^\\uFFFF]*"  # a reply that opens with a word, not a call
_NAME_TOKENS = 16  # a spontaneous call must name its function within this many tokens


def _speaks_of_tools(messages: Sequence[ChatMessage]) -> bool:
    """Whether the conversation holds calls or their outputs (rendered in the model's tool format)."""
    return any(m.role == "tool" or m.tool_calls for m in messages)


def _last_said(messages: Sequence[ChatMessage]) -> str:
    """The user's last message (what a call's arguments must come from)."""
    return next((message.content for message in reversed(messages) if message.role == "user"), "")


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
        self._contexts = [Llama(model_path=weights, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                verbose=False)
                          for _ in range(max(1, parallel))]
        for context in self._contexts:
            route_decodes(context)
        self._pool = ContextPool(range(len(self._contexts)))  # leases context indices
        self._history: dict[int, list[dict[str, str]]] = {}  # context -> the conversation it last saw
        self._offered: dict[int, tuple[Tool, ...]] = {}  # context -> the tools its last reply was offered
        self._template = ChatTemplate.of(self._contexts[0])

    def warm(self, messages: list[ChatMessage]) -> None:
        """Evaluate `messages` (the system prompt) in every context now, so that no session's
        first turn pays for it."""
        conversation = [m.as_dict() for m in messages] + [{"role": "user", "content": "Hello."}]
        with self._pool.idle() as free:
            for index in free:
                reply = self._contexts[index].create_chat_completion(messages=conversation, max_tokens=1,
                                                                     temperature=0.0)
                content = reply["choices"][0]["message"]["content"] or ""
                self._history[index] = [*conversation, {"role": "assistant", "content": content}]

    def _acquire(self, conversation: list[dict[str, str]], cancel: threading.Event, wait: bool = True) -> int | None:
        """The context that knows most of `conversation` (waiting for it while a prefill runs on
        it, which is short), else the free one idle longest; None if cancelled while waiting.
        Without `wait` (a prefill): the best context, marked as being prepared, or None if it is busy."""
        def score(index: int) -> float:
            # Beyond the system prompt, which every context holds.
            return max(0.0, shared_turns(self._history.get(index, []), conversation) - 1)

        def choose(free: Sequence[int], preparing: Mapping[int, object]) -> int | object | None:
            top = max(score(index) for index in self._pool.contexts)
            best = max(free, key=score) if free else None  # ties: the first, idle longest
            if best is not None and score(best) == top:
                return best
            if not wait:
                return None
            prefilling = any(score(index) == top for index in preparing)
            return best if best is not None and not (top > 0 and prefilling) else WAIT

        return self._pool.acquire(choose, cancel, tag=None if wait else "prefill")

    def _release(self, index: int, conversation: list[dict[str, str]]) -> None:
        self._pool.release(index, lambda: self._history.__setitem__(index, conversation))

    def prefill(self, messages: list[ChatMessage], cancel: threading.Event) -> None:
        """Evaluate the prompt of `messages` up to the end of the last message's text (a user
        utterance still being spoken) in the context that will serve it, so that the reply, once
        the utterance is complete, evaluates only the words that came after."""
        if self._template is None:
            return
        conversation = [m.as_dict() for m in messages]
        index = self._acquire(conversation, cancel, wait=False)  # busy: the reply will evaluate it all
        if index is None:
            return
        try:
            llama = self._contexts[index]
            tools = self._offered.get(index, ())  # a session that declared tools declares them again
            if tools or _speaks_of_tools(messages):
                prompt = self._template.around_last(*template_messages(messages, tools, self._template.knows_tools))[0]
            else:
                prompt = self._template.around_last(conversation)[0]
            tokens = llama.tokenize(prompt.encode("utf-8"), special=True)
            cached = shared_prefix(llama._input_ids, tokens)  # what llama.cpp reuses
            if cached < len(tokens) < llama.n_ctx() - _REPLY_ROOM and not cancel.is_set():
                llama.n_tokens = cached
                llama.eval(tokens[cached:])  # drops the cache beyond `cached` first
        finally:
            self._release(index, conversation)

    def stream_chat(
        self, messages: list[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> Iterator[str | ToolCall]:
        if self._template is not None and (options.tools or _speaks_of_tools(messages)):
            yield from self._stream_with_tools(messages, options, cancel)
            return
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
            self._offered.pop(index, None)
            self._release(index, [*conversation, {"role": "assistant", "content": "".join(reply)}])

    def _stream_with_tools(self, messages: list[ChatMessage], options: GenerationOptions,
                           cancel: threading.Event) -> Iterator[str | ToolCall]:
        """A reply that may call one of `options.tools`, in the model's own format: the template
        renders the tools, the text streams as it comes (a call's markup held back), and once a call
        opens and names one of the tools, that tool's schema, as a grammar, writes the JSON. A call
        naming no tool is dropped and the reply drawn again as words. A required call opens at once,
        in the prompt. A model whose template has no tool format (SmolLM2) is offered tools only
        when a call is required: it does not choose calls well."""
        template = self._template
        assert template is not None
        if not template.knows_tools and not options.require_tool:
            options = replace(options, tools=())
        rendered, tools = template_messages(messages, options.tools, template.knows_tools)
        conversation = [m.as_dict() for m in messages]
        index = self._acquire(conversation, cancel)
        if index is None:
            return
        llama = self._contexts[index]
        reply = ""
        try:
            prompt = template.render(rendered, tools)
            plain = template.render(template_messages(messages, (), template.knows_tools)[0])
            chosen = options.tools
            if not (options.tools and options.require_tool):
                spoken, chosen = yield from self._words_or_call(llama, prompt, plain, options, cancel)
                reply += spoken
                if chosen is None:
                    return
                prompt += spoken
            prompt += OPEN + "\n"
            if cancel.is_set():
                return
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_string(call_grammar(chosen), verbose=False)
            body = "".join(self._generate(llama, prompt, max(options.max_tokens, _CALL_TOKENS),
                                          options.temperature, cancel, grammar))
            if cancel.is_set():
                return
            try:
                call = parse_call(body)
            except ValueError as exc:  # cut short by the token limit
                log.warning("the model's tool call does not parse: %s", exc)
                return
            if not options.require_tool and not grounded(call, _last_said(messages), options.tools):
                # Small models call for questions that need none (17 times 23 as set_light in the living room).
                log.info("the model's call %s(%s) is not in what the user said: drawing a reply in words",
                         call.name, call.arguments)
                for piece in self._words(llama, plain, options, cancel):
                    reply += piece
                    yield piece
                return
            if not options.require_tool and repeats(call, messages):
                log.info("the model repeats its answered call %s: drawing a reply in words", call.name)
                for piece in self._words(llama, plain, options, cancel):
                    reply += piece
                    yield piece
                return
            reply += f"{OPEN}\n{body.strip()}"
            yield call
        except ValueError as exc:
            raise LLMError(f"llama.cpp: {exc}") from exc
        finally:
            self._offered[index] = options.tools
            self._release(index, [*conversation, {"role": "assistant", "content": reply}])

    def _words_or_call(self, llama: Any, prompt: str, plain: str, options: GenerationOptions,
                       cancel: threading.Event) -> Generator[str, None, tuple[str, tuple[Tool, ...] | None]]:
        """Stream the reply's words until it ends or a call opens; returns the words, and the tool
        the call names (None: no call). An opened call runs unconstrained only until its name is
        written; one naming no declared tool is dropped, and the reply is drawn again from the
        `plain` prompt, without the tools (small models invent functions for plain questions)."""
        spotter = CallSpotter()
        spoken = ""
        for attempt in range(2):
            stream = self._generate(llama, plain if attempt else prompt, options.max_tokens, options.temperature,
                                    cancel)
            body = ""
            for piece in stream:
                spotted = spotter.feed(piece)
                if spotted.text:
                    spoken += spotted.text
                    yield spotted.text
                if spotted.opened:
                    body = spotted.rest
                    break
            if not spotter.opened:
                if rest := spotter.flush():
                    spoken += rest
                    yield rest
                return spoken, None
            if not options.tools:
                return spoken, None  # a call with no tools to call: the words before it are the reply
            for _ in range(_NAME_TOKENS):
                if called_name(body) is not None or (piece := next(stream, None)) is None:
                    break
                body += piece
            stream.close()
            name = called_name(body)
            chosen = tuple(tool for tool in options.tools if tool.name == name)
            if chosen or spoken:
                return spoken, chosen or options.tools
            if attempt:
                return spoken, None
            log.info("the model called %r, which is not a declared tool: drawing a reply in words", name)
            spotter = CallSpotter()
        return spoken, None

    def _words(self, llama: Any, prompt: str, options: GenerationOptions, cancel: threading.Event
               ) -> Iterator[str]:
        """A reply in words only: a grammar bars a call's opening from its first character (the
        reply may not begin with `{`, `<` or a fence), and it ends where a call would open later."""
        from llama_cpp import LlamaGrammar

        words = LlamaGrammar.from_string(_WORDS_GBNF, verbose=False)
        spotter = CallSpotter()
        for piece in self._generate(llama, prompt, options.max_tokens, options.temperature, cancel, words):
            spotted = spotter.feed(piece)
            if spotted.text:
                yield spotted.text
            if spotted.opened:
                return
        if rest := spotter.flush():
            yield rest

    @staticmethod
    def _generate(llama: Any, prompt: str, max_tokens: int, temperature: float, cancel: threading.Event,
                  grammar: Any = None) -> Generator[str, None, None]:
        """The text of `prompt`'s continuation, piece by piece (special tokens as their text), to the
        end-of-generation token; the cached prefix of the context is reused."""
        import llama_cpp

        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= llama.n_ctx():
            raise ValueError(f"the prompt's {len(tokens)} tokens exceed the context window of {llama.n_ctx()}")
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        vocab = llama._model.vocab  # llama-cpp-python 0.3.36 (pinned)
        room = min(max_tokens, llama.n_ctx() - len(tokens))
        for count, token in enumerate(llama.generate(tokens, temp=temperature, grammar=grammar)):
            if cancel.is_set() or llama_cpp.llama_vocab_is_eog(vocab, token):
                return
            piece = decoder.decode(llama.detokenize([token], special=True))
            if piece:
                yield piece
            if count + 1 >= room:
                return
