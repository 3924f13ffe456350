"""Realtime function tools through the sans-I/O session: `session.tools` and `tool_choice`, the
`function_call` output item and its events, outputs from the client, the history the LLM sees, and
the error events of bad definitions, unknown call ids and invalid outputs. No model: the test
answers the reply jobs the session asks for."""

from __future__ import annotations

import json

import pytest

from server.config import SessionConfig
from server.effects import StartResponse
from server.session import RealtimeSession
from tests.test_protocol import Driver
from voice.llm.base import ChatMessage, Tool, ToolCall
from voice.response_events import FunctionCall, ResponseFinished, SpeechSegment

SET_LIGHT = {"type": "function", "name": "set_light", "description": "Turn a light on or off.",
             "parameters": {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                            "required": ["room", "on"]}}
GET_TIME = {"type": "function", "name": "get_time", "description": "The time now.", "parameters": {"type": "object"}}


@pytest.fixture
def driver(silero) -> Driver:
    """A push-to-talk session (the test asks for each response)."""
    return Driver(RealtimeSession(SessionConfig(turn_detection=None), silero))


def say(driver: Driver, text: str) -> None:
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": text}]}})


def start(driver: Driver, **response) -> StartResponse:
    driver.send({"type": "response.create", **({"response": response} if response else {})})
    return [e for e in driver.effects if isinstance(e, StartResponse)][-1]


def declare(driver: Driver, *tools: dict, choice="auto") -> None:
    driver.send({"type": "session.update", "session": {"tools": list(tools), "tool_choice": choice}})


def test_declared_tools_are_echoed_and_offered_to_the_model(driver):
    declare(driver, SET_LIGHT, GET_TIME)
    session = driver.of("session.updated")[-1]["session"]
    assert [t["name"] for t in session["tools"]] == ["set_light", "get_time"]
    assert session["tool_choice"] == "auto"
    say(driver, "Turn on the lamp.")
    options = start(driver).options
    assert [t.name for t in options.tools] == ["set_light", "get_time"] and not options.require_tool
    assert options.tools[0].parameters == SET_LIGHT["parameters"]


@pytest.mark.parametrize(("choice", "names", "required"), [
    ("none", [], False),
    ("required", ["set_light", "get_time"], True),
    ({"type": "function", "name": "get_time"}, ["get_time"], True),
])
def test_tool_choice_decides_what_the_model_is_offered(driver, choice, names, required):
    declare(driver, SET_LIGHT, GET_TIME, choice=choice)
    assert driver.of("session.updated")[-1]["session"]["tool_choice"] == choice
    say(driver, "What is two plus two?")
    options = start(driver).options
    assert [t.name for t in options.tools] == names and options.require_tool is required


def test_response_create_overrides_the_tools_for_one_response(driver):
    declare(driver, SET_LIGHT)
    say(driver, "Hi")
    job = start(driver, tool_choice="none")
    assert job.options.tools == ()
    driver.progress(job.response_id, ResponseFinished())
    options = start(driver, tools=[GET_TIME], tool_choice={"type": "function", "name": "get_time"}).options
    assert [t.name for t in options.tools] == ["get_time"] and options.require_tool
    assert driver.session.config.tools[0].name == "set_light"  # the session's own are unchanged


@pytest.mark.parametrize("tools", [
    [{"type": "function", "description": "no name", "parameters": {"type": "object"}}],
    [{"type": "function", "name": "bad schema", "parameters": {"type": "object"}}],
    [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "banana"}}}}],
    [{"type": "function", "name": "f", "parameters": {"type": "string"}}],
    [{"type": "function", "name": "f", "parameters": "not a schema"}],
    [SET_LIGHT, SET_LIGHT],
    [{"type": "retrieval", "name": "f"}],
    "not a list",
])
def test_a_bad_tool_definition_gets_an_error_and_changes_nothing(driver, tools):
    declare(driver, GET_TIME)
    before = driver.session.config
    driver.send({"type": "session.update", "event_id": "evt_bad",
                 "session": {"instructions": "Changed.", "tools": tools}})
    error = driver.events[-1]
    assert error["type"] == "error" and error["error"]["event_id"] == "evt_bad", error
    assert error["error"]["param"].startswith("session.tools")
    assert driver.session.config == before


def test_a_tool_choice_naming_no_tool_is_refused(driver):
    declare(driver, GET_TIME)
    driver.send({"type": "session.update", "session": {"tool_choice": {"type": "function", "name": "set_light"}}})
    assert driver.events[-1]["type"] == "error"
    driver.send({"type": "session.update", "session": {"tool_choice": "sometimes"}})
    assert driver.events[-1]["type"] == "error"
    assert driver.session.config.tool_choice == "auto"


def call_and_answer(driver: Driver) -> tuple[dict, StartResponse]:
    """A spoken response that calls set_light, then the client's output and the next response."""
    declare(driver, SET_LIGHT)
    say(driver, "Turn on the living room lamp.")
    job = start(driver)
    arguments = json.dumps({"room": "living room", "on": True})
    driver.progress(job.response_id, FunctionCall("set_light", arguments))
    driver.progress(job.response_id, ResponseFinished())
    return driver.of("response.done")[-1]["response"], job


def test_a_call_is_a_function_call_item_with_its_arguments_and_no_audio(driver):
    first = len(driver.events)
    done, job = call_and_answer(driver)
    types = [e["type"] for e in driver.events[first:] if e["type"].startswith("response.")]
    assert types[-6:] == ["response.created", "response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done", "response.done"]
    assert not driver.of("response.output_audio.delta") and not driver.of("response.content_part.added")
    assert done["status"] == "completed"
    [item] = done["output"]
    assert item["type"] == "function_call" and item["name"] == "set_light"
    assert json.loads(item["arguments"]) == {"room": "living room", "on": True}
    finished = driver.of("response.function_call_arguments.done")[-1]
    assert finished["call_id"] == item["call_id"] and finished["item_id"] == item["id"]
    assert finished["arguments"] == item["arguments"] and finished["name"] == "set_light"
    assert "".join(e["delta"] for e in driver.of("response.function_call_arguments.delta")) == item["arguments"]
    # The call is in the conversation, and retrieve returns it.
    driver.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    assert driver.events[-1]["type"] == "conversation.item.retrieved"
    assert driver.events[-1]["item"] == item


def test_the_output_goes_into_the_history_and_the_next_reply_speaks(driver):
    done, _ = call_and_answer(driver)
    call = done["output"][0]
    driver.send({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                               "call_id": call["call_id"],
                                                               "output": json.dumps({"ok": True})}})
    added = driver.of("conversation.item.added")[-1]["item"]
    assert added["type"] == "function_call_output" and added["call_id"] == call["call_id"]
    driver.send({"type": "conversation.item.retrieve", "item_id": added["id"]})
    assert driver.events[-1]["item"]["output"] == '{"ok": true}'
    job = start(driver)
    assert job.messages[-2:] == [
        ChatMessage("assistant", "", (ToolCall("set_light", call["arguments"], call["call_id"]),)),
        ChatMessage("tool", '{"ok": true}', tool_call_id=call["call_id"])]
    assert job.messages[-2].as_dict()["tool_calls"][0]["function"]["name"] == "set_light"
    driver.progress(job.response_id, SpeechSegment("The lamp is on.", bytes(4800)))
    driver.progress(job.response_id, ResponseFinished())
    reply = driver.of("response.done")[-1]["response"]["output"]
    assert [i["type"] for i in reply] == ["message"] and reply[0]["content"][0]["transcript"] == "The lamp is on."
    assert driver.of("response.output_audio.delta")


def test_words_then_a_call_give_two_output_items_in_order(driver):
    declare(driver, SET_LIGHT)
    say(driver, "Turn on the lamp.")
    job = start(driver)
    driver.progress(job.response_id, SpeechSegment("Sure.", bytes(4800)))
    driver.progress(job.response_id, FunctionCall("set_light", '{"room": "hall", "on": true}'))
    driver.progress(job.response_id, ResponseFinished())
    output = driver.of("response.done")[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["message", "function_call"]
    assert driver.of("response.function_call_arguments.done")[-1]["output_index"] == 1


def test_a_reply_without_tools_opens_its_message_at_once_as_before(driver):
    say(driver, "Hi")
    start(driver)
    assert driver.types()[-4:] == ["response.created", "response.output_item.added", "conversation.item.added",
                                   "response.content_part.added"]


def test_an_output_for_an_unknown_call_or_not_a_string_is_refused(driver):
    done, _ = call_and_answer(driver)
    call_id = done["output"][0]["call_id"]
    items = len(driver.session.conversation.items)
    for item, code in [({"type": "function_call_output", "call_id": "call_nope", "output": "x"}, "invalid_call_id"),
                       ({"type": "function_call_output", "call_id": call_id, "output": {"ok": True}}, "invalid_type"),
                       ({"type": "function_call_output", "output": "x"}, "missing_required_parameter")]:
        driver.send({"type": "conversation.item.create", "event_id": "evt_x", "item": item})
        assert driver.events[-1]["type"] == "error" and driver.events[-1]["error"]["code"] == code, item
    assert len(driver.session.conversation.items) == items


def test_a_client_may_add_a_call_and_its_output_to_the_history(driver):
    driver.send({"type": "conversation.item.create", "item": {"type": "function_call", "call_id": "c1",
                                                               "name": "get_time", "arguments": "{}"}})
    driver.send({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c1",
                                                               "output": "It is noon."}})
    assert [e["type"] for e in driver.events[-4:]] == ["conversation.item.added", "conversation.item.done"] * 2
    messages = start(driver).messages
    assert messages[-1] == ChatMessage("tool", "It is noon.", tool_call_id="c1")
    assert messages[-2].tool_calls == (ToolCall("get_time", "{}", "c1"),)


def test_tools_in_generation_options_are_chat_completions_tools():
    tool = Tool("set_light", "Turn a light on or off.", SET_LIGHT["parameters"])
    assert tool.as_dict() == {"type": "function", "function": {"name": "set_light",
                                                               "description": "Turn a light on or off.",
                                                               "parameters": SET_LIGHT["parameters"]}}
