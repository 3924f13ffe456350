"""The OpenAI-compatible backend's tools, against a stand-in server that streams as chat-completions
servers do: the request carries `tools` and `tool_choice`, history messages carry calls and outputs,
and streamed `tool_calls` deltas come back as one ToolCall. No model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from voice.llm.base import ChatMessage, GenerationOptions, Tool, ToolCall
from voice.llm.openai_http import SAY_THE_RESULT, OpenAICompatibleChat

SET_LIGHT = Tool("set_light", "Turn a light on or off.",
                 {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}}})


def chunk(delta: dict) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


STREAMS = {
    "call": [chunk({"role": "assistant", "content": None, "tool_calls": [
                 {"index": 0, "id": "call_9", "type": "function",
                  "function": {"name": "set_light", "arguments": ""}}]}),
             chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"room": "hall", '}}]}),
             chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"on": true}'}}]})],
    "text call": [chunk({"content": '{"name": "set_light", '}),
                  chunk({"content": '"arguments": {"room": "den", "on": false}}'})],
    "words": [chunk({"content": "It is "}), chunk({"content": "noon."})],
    "echo": [chunk({"content": '{"ok": '}), chunk({"content": "true}"})],
    "repeat": [chunk({"tool_calls": [{"index": 0, "id": "call_2", "type": "function", "function": {
        "name": "set_light", "arguments": '{"on": true, "room": "hall"}'}}]})],
}


@pytest.fixture
def server():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            key = request["messages"][-1]["content"]
            if request["messages"][-1] == SAY_THE_RESULT:
                key = "words"
            elif key == "done":  # after the output: the same call again while tools are offered
                key = "repeat" if "tools" in request else "words"
            for data in STREAMS[key]:
                self.wfile.write(data)
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", received
    httpd.shutdown()


HISTORY = [ChatMessage("system", "Be brief."), ChatMessage("user", "Lamp?"),
           ChatMessage("assistant", "", (ToolCall("set_light", '{"room": "hall", "on": true}', "call_1"),)),
           ChatMessage("tool", "done", tool_call_id="call_1")]


def ask(url: str, text: str | None, **options) -> list:
    chat = OpenAICompatibleChat(url, model="m")
    history = HISTORY + ([ChatMessage("user", text)] if text else [])
    return list(chat.stream_chat(history, GenerationOptions(**options), threading.Event()))


def test_a_call_repeating_the_answered_one_is_asked_again_for_words(server):
    url, received = server
    assert ask(url, None, tools=(SET_LIGHT,)) == ["It is ", "noon."]
    assert "tools" in received[-2] and "tools" not in received[-1]


def test_an_output_echoed_as_json_is_asked_again_for_words(server):
    url, received = server
    chat = OpenAICompatibleChat(url, model="m")
    history = [*HISTORY[:3], ChatMessage("tool", "echo", tool_call_id="call_1")]
    assert list(chat.stream_chat(history, GenerationOptions(tools=(SET_LIGHT,)), threading.Event())) \
        == ["It is ", "noon."]
    assert received[-1]["messages"][-1] == SAY_THE_RESULT and "tools" not in received[-1]


def test_streamed_tool_calls_come_back_as_one_call_and_the_request_carries_the_tools(server):
    url, received = server
    assert ask(url, "call", tools=(SET_LIGHT,)) == [ToolCall("set_light", '{"room": "hall", "on": true}', "call_9")]
    request = received[-1]
    assert request["tools"] == [SET_LIGHT.as_dict()] and request["tool_choice"] == "auto"
    assert request["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "set_light", "arguments": '{"room": "hall", "on": true}'}}]}
    assert request["messages"][3] == {"role": "tool", "content": "done", "tool_call_id": "call_1"}
    ask(url, "call", tools=(SET_LIGHT,), require_tool=True)
    assert received[-1]["tool_choice"] == "required"


def test_a_call_the_server_left_in_its_text_is_a_call_and_words_stay_words(server):
    url, received = server
    [call] = ask(url, "text call", tools=(SET_LIGHT,))
    assert call.name == "set_light" and json.loads(call.arguments) == {"room": "den", "on": False}
    assert ask(url, "words", tools=(SET_LIGHT,)) == ["It is ", "noon."]
    assert ask(url, "words") == ["It is ", "noon."]
    assert "tools" not in received[-1]
