"""The in-process llama.cpp backend: streaming, and a session's next turn on the context that
already holds its conversation."""

from __future__ import annotations

import threading

import pytest

from tests.helpers import record_decodes
from voice.llm.base import ChatMessage, GenerationOptions
from voice.llm.llamacpp import LlamaCppChat, shared_turns
from voice.models import gguf_model

OPTIONS = GenerationOptions(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def chat() -> LlamaCppChat:
    return LlamaCppChat(gguf_model(None), n_ctx=1024, parallel=2)


def test_shared_turns_counts_the_leading_messages_in_common():
    a = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    assert shared_turns(a, [*a, {"role": "assistant", "content": "x"}]) == 2
    assert shared_turns(a, [a[0], {"role": "user", "content": "other"}]) == 1
    assert shared_turns([], a) == 0
    # A prefilled partial utterance, then the whole of it (case and the last word may differ).
    assert shared_turns([a[0], {"role": "user", "content": "Turn on the Living"}],
                        [a[0], {"role": "user", "content": "Turn on the living room lamp."}]) == 1.5


def test_a_prefilled_utterance_leaves_only_its_rest_to_evaluate(chat, monkeypatch):
    from llama_cpp import Llama

    evaluated: list[int] = []
    real_eval = Llama.eval
    monkeypatch.setattr(Llama, "eval", lambda self, tokens: (evaluated.append(len(tokens)), real_eval(self, tokens)))
    system = ChatMessage("system", "You are a voice assistant. Answer in one short sentence.")
    whole = [system, ChatMessage("user", "Would you please turn on the living room lamp?")]
    "".join(chat.stream_chat(whole, OPTIONS, threading.Event()))
    cold = evaluated[0]  # the utterance and the template's tail, after the system prompt

    other_system = ChatMessage("system", "You are a voice assistant. Reply in one short sentence.")
    partial = [other_system, ChatMessage("user", "Would you please turn")]
    evaluated.clear()
    chat.prefill(partial, threading.Event())
    holder = next(i for i, seen in chat._history.items() if seen == [m.as_dict() for m in partial])
    assert evaluated and chat._contexts[holder].n_tokens > 0
    evaluated.clear()
    complete = [other_system, ChatMessage("user", "Would you please turn on the living room lamp?")]
    assert "".join(chat.stream_chat(complete, OPTIONS, threading.Event())).strip()
    assert chat._history[holder][1]["content"] == complete[1].content  # the prefilled context served it
    assert evaluated[0] < cold - 3  # "Would you please turn" was already evaluated


def test_a_conversation_goes_back_to_the_context_that_holds_it(chat):
    system = ChatMessage("system", "You are a helpful voice assistant. Answer in one short sentence.")
    first = [system, ChatMessage("user", "What colour is the sky?")]
    reply = "".join(chat.stream_chat(first, OPTIONS, threading.Event()))
    assert reply.strip()
    other = [system, ChatMessage("user", "Name a fruit.")]
    # Both contexts are free; the other conversation shares only the system prompt with either.
    assert "".join(chat.stream_chat(other, OPTIONS, threading.Event())).strip()
    holder = next(i for i, seen in chat._history.items() if seen[1]["content"] == "What colour is the sky?")

    second = [*first, ChatMessage("assistant", reply.strip()), ChatMessage("user", "And at night?")]
    assert "".join(chat.stream_chat(second, OPTIONS, threading.Event())).strip()
    assert chat._history[holder][-2]["content"] == "And at night?"


def test_a_request_cancelled_while_waiting_for_a_context_gives_up(chat):
    taken = [chat._acquire([], threading.Event()) for _ in range(2)]
    cancel = threading.Event()
    replies: list[list[str]] = []
    waiter = threading.Thread(target=lambda: replies.append(
        list(chat.stream_chat([ChatMessage("user", "hello")], OPTIONS, cancel))))
    try:
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # no free context
        cancel.set()
        waiter.join(5)
        assert replies == [[]]
    finally:
        for index in taken:
            chat._release(index, [])


def test_warming_puts_the_system_prompt_in_every_context(chat):
    system = ChatMessage("system", "You are a warm voice assistant.")
    chat.warm([system])
    assert all(chat._history[index][0] == system.as_dict() for index in range(2))
    new_session = [system, ChatMessage("user", "Hi there.")]
    assert "".join(chat.stream_chat(new_session, OPTIONS, threading.Event())).strip()


def test_decodes_run_on_the_compute_thread_whichever_thread_streams(chat, monkeypatch):
    """llama.cpp's OpenMP teams belong to the calling thread: with decodes from several threads,
    libgomp stops spinning and a token costs 2.5x (voice/llm/compute_thread.py)."""
    from concurrent.futures import ThreadPoolExecutor

    import llama_cpp.llama_cpp

    threads = record_decodes(monkeypatch, llama_cpp.llama_cpp)
    system = ChatMessage("system", "You are a voice assistant. Answer in one short sentence.")
    with ThreadPoolExecutor(3, thread_name_prefix="worker") as pool:
        replies = [pool.submit(lambda q=q: "".join(chat.stream_chat([system, ChatMessage("user", q)], OPTIONS,
                                                                    threading.Event())))
                   for q in ("What colour is grass?", "Name a fruit.", "Say hello.")]
        assert all(future.result().strip() for future in replies)
        pool.submit(chat.prefill, [system, ChatMessage("user", "What is the tallest")], threading.Event()).result()
    assert len(threads) > 3 * OPTIONS.max_tokens // 2
    assert set(threads) == {"llama-compute"}


def test_the_compute_thread_runs_calls_and_passes_errors_on():
    from voice.llm.compute_thread import is_compute_thread, on_compute_thread

    assert not is_compute_thread()
    assert on_compute_thread(is_compute_thread)
    assert on_compute_thread(lambda: on_compute_thread(lambda: 7))  # called from itself: no deadlock
    with pytest.raises(ZeroDivisionError):
        on_compute_thread(lambda: 1 / 0)


def test_a_busy_engine_decodes_on_one_thread(chat, monkeypatch):
    """Two spinning threads on two shared cores stall at every barrier: while the engine runs
    BUSY_JOBS model jobs or more, decodes use one thread, else the context's own count."""
    import llama_cpp.llama_cpp as lib

    from voice.llm import compute_thread

    used = record_decodes(monkeypatch, lib, lib.llama_n_threads)
    messages = [ChatMessage("system", "Answer in one word."), ChatMessage("user", "Name a colour.")]
    for jobs in (compute_thread.BUSY_JOBS, 0):
        monkeypatch.setattr(compute_thread, "_load", lambda jobs=jobs: jobs)
        used.clear()
        assert "".join(chat.stream_chat(messages, OPTIONS, threading.Event())).strip()
        assert set(used) == ({1} if jobs else {chat._contexts[0].n_threads})
