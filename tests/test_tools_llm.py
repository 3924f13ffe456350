"""In-process tool calls through llama.cpp on real models: Qwen2.5-Coder-0.5B's own format under
the tools' grammar, and the bundled SmolLM2 (no tool format: a call only when one is required)."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest

from server.config import DEFAULT_INSTRUCTIONS
from voice import models
from voice.llm.base import ChatMessage, GenerationOptions, Tool, ToolCall
from voice.llm.llamacpp import LlamaCppChat

SET_LIGHT = Tool("set_light", "Turn the light in a room on or off.",
                 {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                  "required": ["room", "on"]})
SET_TIMER = Tool("set_timer", "Start a countdown timer.",
                 {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]})


def reply(llm: LlamaCppChat, text: str, **options) -> list[str | ToolCall]:
    messages = [ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", text)]
    return list(llm.stream_chat(messages, GenerationOptions(temperature=0.0, **options), threading.Event()))


def the_call(out: list[str | ToolCall]) -> ToolCall:
    calls = [piece for piece in out if isinstance(piece, ToolCall)]
    assert len(calls) == 1 and out[-1] is calls[0], out
    return calls[0]


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppChat:
    return LlamaCppChat(models.gguf_model(None), n_ctx=2048, parallel=1)


def test_a_model_without_a_tool_format_answers_in_words_unless_a_call_is_required(smollm2):
    out = reply(smollm2, "Turn on the living room lamp.", tools=(SET_LIGHT,))
    assert out and all(isinstance(piece, str) for piece in out)
    call = the_call(reply(smollm2, "Turn on the living room lamp.", tools=(SET_LIGHT, SET_TIMER), require_tool=True))
    schema = {t.name: t.parameters for t in (SET_LIGHT, SET_TIMER)}[call.name]
    jsonschema.validate(json.loads(call.arguments), schema)  # the grammar wrote it


@pytest.fixture(scope="module")
def qwen() -> LlamaCppChat:
    try:
        return LlamaCppChat(models.gguf_model("qwen2.5-coder-0.5b"), n_ctx=2048, parallel=1)
    except Exception as exc:  # noqa: BLE001 - the extra is not installed
        pytest.skip(f"qwen2.5-coder-0.5b is not installed: {exc}")


@pytest.mark.slow
def test_qwen_calls_the_tool_in_its_own_format_with_arguments_that_validate(qwen):
    call = the_call(reply(qwen, "Would you please turn on the living room lamp?", tools=(SET_LIGHT, SET_TIMER)))
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, SET_LIGHT.parameters)
    room = arguments["room"].lower().replace("_", " ")
    assert call.name == "set_light" and arguments["on"] is True and "living room" in room


@pytest.mark.slow
def test_qwen_answers_questions_in_words_with_tools_declared(qwen):
    for question, answer in [("Who wrote Hamlet?", "shakespeare"), ("What is two plus two?", "four")]:
        out = reply(qwen, question, tools=(SET_LIGHT,))
        words = "".join(piece for piece in out if isinstance(piece, str))
        assert all(isinstance(piece, str) for piece in out) and answer in words.lower(), out
        assert "<" not in words and "{" not in words


@pytest.mark.slow
def test_qwen_required_and_named_calls_follow_the_schema(qwen):
    call = the_call(reply(qwen, "What is two plus two?", tools=(SET_LIGHT,), require_tool=True))
    jsonschema.validate(json.loads(call.arguments), SET_LIGHT.parameters)
    call = the_call(reply(qwen, "Turn on the hall light.", tools=(SET_TIMER,), require_tool=True))
    assert call.name == "set_timer"
    jsonschema.validate(json.loads(call.arguments), SET_TIMER.parameters)


@pytest.mark.slow
def test_qwen_reads_a_call_and_its_output_in_the_history(qwen):
    messages = [ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", "Turn on the kitchen light."),
                ChatMessage("assistant", "", (ToolCall("set_light", '{"room": "kitchen", "on": true}', "call_1"),)),
                ChatMessage("tool", '{"ok": true, "light": "on"}', tool_call_id="call_1")]
    out = list(qwen.stream_chat(messages, GenerationOptions(temperature=0.0, tools=(SET_LIGHT,)), threading.Event()))
    words = "".join(piece for piece in out if isinstance(piece, str))
    assert all(isinstance(piece, str) for piece in out) and words.strip(), out
