"""The pieces of in-process tool calls: the spotter that keeps `<tool_call>` markup out of speech,
the grammar built from the tools' schemas, parsing a call, and the messages a chat template is
given. Fast; the grammar is checked by llama.cpp's own parser (no model)."""

from __future__ import annotations

import json

import pytest

from voice.llm.base import ChatMessage, Tool, ToolCall
from voice.llm.tool_calls import (
    CallSpotter,
    Spotted,
    call_grammar,
    call_schema,
    called_name,
    parse_call,
    template_messages,
)

SET_LIGHT = Tool("set_light", "Turn a light on or off.",
                 {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                  "required": ["room", "on"]})
TIMER = Tool("set_timer", "Start a timer.", {"type": "object", "properties": {"minutes": {"type": "integer"}},
                                             "required": ["minutes"]})


def spot(pieces: list[str]) -> tuple[list[str], bool]:
    spotter = CallSpotter()
    said = []
    for piece in pieces:
        spotted = spotter.feed(piece)
        said.append(spotted.text)
        if spotted.opened:
            return said, True
    return [*said, spotter.flush()], False


def test_plain_text_passes_at_once():
    said, opened = spot(["Hamlet", " was written", " by Shakespeare."])
    assert said[:3] == ["Hamlet", " was written", " by Shakespeare."] and not opened


def test_the_opening_is_found_whole_or_across_pieces_and_never_spoken():
    assert spot(["<tool_call>", '{"name"']) == ([""], True)
    said, opened = spot(["Sure. <", "tool", "_call>", "\n{"])
    assert opened and "".join(said) == "Sure. "
    assert said[0] == "Sure. "  # the "<" waits, the words before it do not


def test_a_less_than_that_opens_nothing_is_spoken_in_the_end():
    said, opened = spot(["3 <", " 4 and x <t", "oo"])
    assert not opened and "".join(said) == "3 < 4 and x <too"


def test_the_grammar_of_the_tools_is_one_llama_cpp_parses():
    import llama_cpp
    from llama_cpp import Llama

    from voice.models import gguf_model

    vocab = Llama(model_path=str(gguf_model(None)), vocab_only=True, verbose=False)._model.vocab
    for tools in [(SET_LIGHT,), (SET_LIGHT, TIMER), (Tool("ping"),)]:
        grammar = call_grammar(tools)
        for tool in tools:
            assert f'\\"{tool.name}\\"' in grammar
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler, grammar  # NULL when llama.cpp cannot parse it
        llama_cpp.llama_sampler_free(sampler)


def test_the_call_schema_accepts_exactly_calls_to_the_tools():
    import jsonschema

    schema = call_schema((SET_LIGHT, TIMER))
    jsonschema.validate({"name": "set_light", "arguments": {"room": "hall", "on": True}}, schema)
    jsonschema.validate({"name": "set_timer", "arguments": {"minutes": 5}}, schema)
    for wrong in [{"name": "set_light", "arguments": {"room": "hall"}}, {"name": "launch", "arguments": {}},
                  {"name": "set_timer", "arguments": {"minutes": "five"}}]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_a_call_parses_from_its_body():
    call = parse_call('\n{"name": "set_light", "arguments": {"room": "living room", "on": true}}\n</tool_call>')
    assert call.name == "set_light" and json.loads(call.arguments) == {"room": "living room", "on": True}
    assert json.loads(parse_call('{"name": "f", "arguments": "{\\"a\\": 1}"}').arguments) == {"a": 1}
    for bad in ['{"name": "set_light", "arguments": {"room": "liv', '["set_light"]']:
        with pytest.raises(ValueError):
            parse_call(bad)


HISTORY = [ChatMessage("system", "Be brief."), ChatMessage("user", "Lamp on."),
           ChatMessage("assistant", "", (ToolCall("set_light", '{"room": "hall", "on": true}', "call_1"),)),
           ChatMessage("tool", '{"ok": true}', tool_call_id="call_1")]


def test_a_template_that_knows_tools_gets_them_and_the_calls_arguments_as_objects():
    messages, tools = template_messages(HISTORY, (SET_LIGHT,), template_knows_tools=True)
    assert tools == [SET_LIGHT.as_dict()]
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"room": "hall", "on": True}
    assert messages[3] == {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"}


def test_a_template_without_tools_gets_them_in_its_system_message_and_calls_as_text():
    messages, tools = template_messages(HISTORY, (SET_LIGHT,), template_knows_tools=False)
    assert tools is None
    assert messages[0]["content"].startswith("Be brief.") and '"set_light"' in messages[0]["content"]
    assert messages[2] == {"role": "assistant",
                           "content": '<tool_call>\n{"name": "set_light", "arguments": {"room": "hall", "on": true}}'
                                      "\n</tool_call>"}
    assert messages[3] == {"role": "user", "content": '<tool_response>\n{"ok": true}\n</tool_response>'}


def test_a_reply_that_begins_with_a_brace_or_a_fence_is_a_call_without_markup():
    spotter = CallSpotter()
    assert spotter.feed("  ") == Spotted("")
    assert spotter.feed('{"') == Spotted("", True, '{"')
    assert CallSpotter().feed("```json") == Spotted("", True, "```json")
    assert spot(["Use", " {braces}"]) == (["Use", " {braces}", ""], False)  # not at the start: words


def test_the_name_of_a_call_is_known_once_written():
    assert called_name('{"name": "set_li') is None
    assert called_name('```json\n{"name": "add", "arg') == "add"


def test_a_call_left_in_a_servers_text_is_found_when_it_names_a_tool():
    from voice.llm.tool_calls import text_call

    call = text_call('"name": ignored ```json\n{"name": "set_light", "arguments": {"room": "hall", "on": false}}\n```',
                     (SET_LIGHT,))
    assert call is not None and json.loads(call.arguments) == {"room": "hall", "on": False}
    assert text_call('{"name": "add", "arguments": {}}', (SET_LIGHT,)) is None
    assert text_call("no call here", (SET_LIGHT,)) is None


def test_the_first_call_counts_when_a_model_made_to_call_writes_it_again_and_again():
    from voice.llm.tool_calls import text_call

    once = '{"name": "set_light", "arguments": {"room": "living_room", "on": true}}'
    again = '{"name": "set_light", "arguments": {"room": "living_room", "on": false}}'
    call = text_call(f"{once}```json\n{again}```json\n{again[:30]}", (SET_LIGHT,))
    assert call is not None and json.loads(call.arguments) == {"room": "living_room", "on": True}


def test_a_call_repeats_when_made_and_answered_since_the_user_spoke():
    from voice.llm.tool_calls import repeats

    same = ToolCall("set_light", '{"on": true, "room": "hall"}')
    assert repeats(same, HISTORY)
    assert not repeats(ToolCall("set_light", '{"on": false, "room": "hall"}'), HISTORY)
    assert not repeats(same, [*HISTORY, ChatMessage("user", "Again, please.")])


def test_a_call_is_grounded_only_in_what_the_user_said():
    from voice.llm.tool_calls import grounded

    light = ToolCall("set_light", json.dumps({"room": "living_room", "on": True}))
    assert grounded(light, "Would you please turn on the living room lamp?", (SET_LIGHT,))
    assert not grounded(light, "What is 17 times 23?", (SET_LIGHT,))
    assert not grounded(ToolCall("get_weather", json.dumps({"city": "Tokyo"})), "What's the capital of Japan?")
    timer = ToolCall("set_timer", json.dumps({"minutes": 30}))
    assert grounded(timer, "Set a timer for half an hour.") and grounded(timer, "Timer, 30 minutes.")
    assert not grounded(timer, "Which month has the fewest days?")
    unit = Tool("convert", "", {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}})
    assert grounded(ToolCall("convert", json.dumps({"unit": "celsius"})), "Is it warm?", (unit,))


def test_a_calls_json_after_words_opens_a_call_and_is_never_spoken():
    said, opened = spot(["Here is the call:", '\n{"na', 'me": "set_light"'])
    assert "".join(said) == "Here is the call:\n" and opened
    said, opened = spot(["Sure.", " ```", "json\n{"])
    assert "".join(said) == "Sure. " and opened
