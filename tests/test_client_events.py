"""Malformed client events, client metadata and the conversation's size, through the websocket of a
real server (stand-in models): each gets an `error` event naming it, and the session goes on."""

from __future__ import annotations

import base64
import gc
import json
import math
import urllib.request

import pytest

from server.client_events import parse_client_event
from server.connection import ConnectionLimits
from server.conversation import ConversationLimits, Item
from server.wire import ProtocolError
from tests.stand_in import StandInServer, answer_to, errors_for, send, stand_in_server, until

HELLO = {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Hello."}]}}
PUSH_TO_TALK = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}
HALF_SECOND = {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(24_000)).decode()}


@pytest.fixture(scope="module")
def server(silero):
    with stand_in_server(silero) as running:
        yield running


def refused(websocket, event: dict | str, event_id: str | None = None) -> dict:
    """The one error `event` got (it carries an event_id, or it is JSON text and `event_id` names it)."""
    event_id = event_id or event["event_id"]  # type: ignore[index]
    events = answer_to(websocket, event, probe=f"probe_{event_id}")
    [error] = errors_for(events, event_id)
    assert error["type"] == "invalid_request_error" and error["code"] and error["message"], error
    return error


def still_works(websocket) -> None:
    """A valid exchange after the bad ones: an item is added and can be retrieved."""
    send(websocket, {**HELLO, "item": {**HELLO["item"], "id": "item_check"}},
         {"type": "conversation.item.retrieve", "item_id": "item_check"})
    retrieved = until(websocket, lambda e: e["type"] in ("conversation.item.retrieved", "error"))[-1]
    assert retrieved["type"] == "conversation.item.retrieved", retrieved
    send(websocket, {"type": "conversation.item.delete", "item_id": "item_check"})
    until(websocket, lambda e: e["type"] == "conversation.item.deleted")


# ---------------------------------------------------------------- the crashers of issue 44
@pytest.mark.parametrize(("session", "param"), [
    ('{"temperature": %s}' % ("9" * 5000), "session.temperature"),  # (JSON text: Python's int() refuses it)
    ('{"temperature": -%s}' % ("9" * 5000), "session.temperature"),
    ('{"temperature": NaN}', "session.temperature"),
    ({"temperature": float("nan")}, "session.temperature"),
    ({"temperature": 1e308}, "session.temperature"),
    ({"temperature": "0.5"}, "session.temperature"),
    ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": []}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": {}}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 1.5}}}},
     "session.audio.input.turn_detection.silence_duration_ms"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": "yes"}}}},
     "session.audio.input.turn_detection.create_response"),
    ({"instructions": "x" * 300_000}, "session.instructions"),
    ({"max_output_tokens": True}, "session.max_output_tokens"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "x": float("inf")}}]},
     "session.tools[0].parameters"),
    ({"no_such_field": 1}, "session.no_such_field"),
])
def test_a_malformed_session_update_gets_an_error_and_the_session_goes_on(server, session, param):
    message = '{"type": "session.update", "event_id": "evt_bad", "session": %s}' % (
        session if isinstance(session, str) else json.dumps(session))
    with server.client() as websocket:
        error = refused(websocket, message, "evt_bad")
        assert error["param"] == param, error
        still_works(websocket)


@pytest.mark.parametrize(("event", "param"), [
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "id": "i" * 65,
                                                   "content": [{"type": "input_text", "text": "x"}]}}, "item.id"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": "x"}},
     "item.content"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "\ud800"}]}}, None),
    ({"type": "conversation.item.truncate", "item_id": ["x"], "audio_end_ms": 0}, "item_id"),
    ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": -1}, "audio_end_ms"),
    ({"type": "conversation.item.delete", "item_id": 7}, "item_id"),
    ({"type": "response.create", "response": {"metadata": {str(k): "v" for k in range(17)}}}, "response.metadata"),
    ({"type": "response.create", "response": {"metadata": {"k": "v" * 513}}}, "response.metadata.k"),
    ({"type": "response.create", "response": {"metadata": {"k": 1}}}, "response.metadata.k"),
    ({"type": "response.create", "response": {"temperature": -1}}, "response.temperature"),
    ({"type": "response.cancel", "response_id": {}}, "response_id"),
    ({"type": "input_audio_buffer.append", "audio": None}, "audio"),
    ({"type": "input_audio_buffer.commit", "extra": 1}, "extra"),
])
def test_every_other_event_is_checked_field_by_field(server, event, param):
    with server.client() as websocket:
        error = refused(websocket, {**event, "event_id": "evt_bad"})
        assert param is None or error["param"] == param, error
        still_works(websocket)


def test_the_schema_names_the_path_of_a_bad_value():
    with pytest.raises(ProtocolError) as caught:
        parse_client_event(json.dumps({"type": "session.update", "event_id": "e", "session": {
            "tools": [{"type": "function", "name": "ok"}, {"type": "function", "name": "bad name"}]}}))
    assert (caught.value.param, caught.value.code, caught.value.event_id) == ("session.tools[1].name",
                                                                              "invalid_value", "e")


# ---------------------------------------------------------------- client metadata
def push_to_talk_turn(websocket) -> None:
    send(websocket, PUSH_TO_TALK, HALF_SECOND, {"type": "input_audio_buffer.commit"})
    until(websocket, lambda e: e["type"] == "conversation.item.done")


def stage_sums(server: StandInServer) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("voice_stage_seconds_sum")}


@pytest.mark.parametrize("metadata", [{"tts_first_audio_ms": "x"}, {"llm_first_token_ms": "x"},
                                      {"timing_origin": "speech_end", "first_audio_sent_ms": "nan"},
                                      {"end_of_turn_ms": "-1e308"}, {"pipeline": "native"}])
def test_client_metadata_cannot_write_the_servers_timings(server, metadata):
    with server.client() as websocket:
        push_to_talk_turn(websocket)
        error = refused(websocket, {"type": "response.create", "event_id": "evt_meta",
                                    "response": {"output_modalities": ["text"], "metadata": metadata}})
        assert error["param"].startswith("response.metadata.") and "reserved" in error["message"]
        send(websocket, {"type": "response.cancel", "event_id": "evt_cancel"})  # (nothing to cancel)
        until(websocket, lambda e: e["type"] == "error" and e["error"]["event_id"] == "evt_cancel")
        # The turn still gets its reply, and the metrics hold only the server's own numbers.
        send(websocket, {"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = until(websocket, lambda e: e["type"] == "response.done")[-1]["response"]
        assert done["status"] == "completed" and done["metadata"]["timing_origin"] == "speech_end"
    assert all(math.isfinite(value) and value >= 0 for value in stage_sums(server).values())


def test_client_metadata_is_echoed_as_it_came_next_to_the_servers(server):
    metadata = {"tts_first_audio": "x", "llm_first_token_ms ": "nan", "note": "-1e308"}
    with server.client() as websocket:
        push_to_talk_turn(websocket)
        send(websocket, {"type": "response.create", "response": {"output_modalities": ["text"],
                                                                 "metadata": metadata}})
        created = until(websocket, lambda e: e["type"] == "response.created")[-1]["response"]
        done = until(websocket, lambda e: e["type"] == "response.done")[-1]["response"]
    assert created["metadata"] == metadata
    assert {key: done["metadata"][key] for key in metadata} == metadata
    assert float(done["metadata"]["llm_first_token_ms"]) >= 0 and done["status"] == "completed"


def test_a_cancelled_reply_with_client_metadata_ends_cleanly(server):
    with server.client() as websocket:
        push_to_talk_turn(websocket)
        send(websocket, {"type": "response.create", "response": {"metadata": {"llm": "x"}}},
             {"type": "response.cancel"})
        done = until(websocket, lambda e: e["type"] == "response.done")[-1]["response"]
        assert done["metadata"]["llm"] == "x"
        still_works(websocket)


# ---------------------------------------------------------------- the conversation's size
def test_a_full_conversation_refuses_the_next_item_and_goes_on(silero):
    limits = ConnectionLimits(conversation=ConversationLimits(max_items=3, max_text_bytes=1000))
    with stand_in_server(silero, limits) as small, small.client() as websocket:
        for k in range(3):
            send(websocket, {**HELLO, "event_id": f"evt_{k}"})
            until(websocket, lambda e: e["type"] == "conversation.item.done")
        error = refused(websocket, {**HELLO, "event_id": "evt_full"})
        assert error["code"] == "conversation_full" and error["param"] == "item"
        assert refused(websocket, {"type": "response.create", "event_id": "evt_reply"})["code"] == "conversation_full"
        send(websocket, {"type": "output_audio_buffer.clear"})  # the session goes on
        until(websocket, lambda e: e["type"] == "output_audio_buffer.cleared")


def test_text_past_the_byte_limit_is_refused(silero):
    limits = ConnectionLimits(conversation=ConversationLimits(max_items=10, max_text_bytes=1000))
    big = {**HELLO, "event_id": "evt_big", "item": {**HELLO["item"], "content": [{"type": "input_text",
                                                                                  "text": "é" * 400}]}}
    with stand_in_server(silero, limits) as small, small.client() as websocket:
        send(websocket, {**big, "event_id": "evt_first"})  # 800 bytes: it fits
        until(websocket, lambda e: e["type"] == "conversation.item.done")
        assert refused(websocket, big)["code"] == "conversation_full"  # 1,600 would not
        still_works(websocket)


def test_deleting_items_makes_room_again(silero):
    limits = ConnectionLimits(conversation=ConversationLimits(max_items=2, max_text_bytes=1000))
    with stand_in_server(silero, limits) as small, small.client() as websocket:
        for name in ("item_a", "item_b"):
            send(websocket, {**HELLO, "item": {**HELLO["item"], "id": name}})
            until(websocket, lambda e: e["type"] == "conversation.item.done")
        assert refused(websocket, {**HELLO, "event_id": "evt_full"})["code"] == "conversation_full"
        send(websocket, {"type": "conversation.item.delete", "item_id": "item_a"})
        until(websocket, lambda e: e["type"] == "conversation.item.deleted")
        send(websocket, HELLO)
        assert until(websocket, lambda e: e["type"] in ("conversation.item.done", "error"))[-1]["type"] \
            == "conversation.item.done"


def test_a_users_turn_into_a_full_conversation_is_refused_clearly(silero):
    limits = ConnectionLimits(conversation=ConversationLimits(max_items=1))
    with stand_in_server(silero, limits) as small, small.client() as websocket:
        send(websocket, HELLO)
        until(websocket, lambda e: e["type"] == "conversation.item.done")
        send(websocket, PUSH_TO_TALK, HALF_SECOND, {"type": "input_audio_buffer.commit", "event_id": "evt_commit"})
        events = until(websocket, lambda e: e["type"] == "error")
        assert events[-1]["error"]["code"] == "conversation_full"
        assert events[-1]["error"]["event_id"] == "evt_commit"
        assert not [e for e in events if e["type"] == "input_audio_buffer.committed"]
        send(websocket, {"type": "input_audio_buffer.clear"})  # the session goes on
        until(websocket, lambda e: e["type"] == "input_audio_buffer.cleared")


def test_the_default_limit_is_a_thousand_items(server):
    with server.client() as websocket:
        for k in range(1000):
            send(websocket, {**HELLO, "item": {**HELLO["item"], "id": f"item_{k}"}})
        until(websocket, lambda e: e["type"] == "conversation.item.done" and e["item"]["id"] == "item_999",
              timeout=60)
        assert refused(websocket, {**HELLO, "event_id": "evt_1001"})["code"] == "conversation_full"


def test_the_default_limit_is_eight_mib_of_text(server):
    part = {"type": "input_text", "text": "a" * 250_000}
    with server.client() as websocket:
        for k in range(8):  # 8 x 1,000,000 bytes: under 8 MiB
            send(websocket, {**HELLO, "item": {**HELLO["item"], "id": f"item_{k}", "content": [part] * 4}})
        until(websocket, lambda e: e["type"] == "conversation.item.done" and e["item"]["id"] == "item_7")
        big = {**HELLO, "event_id": "evt_big", "item": {**HELLO["item"], "content": [part] * 2}}
        assert refused(websocket, big)["code"] == "conversation_full"


def test_a_closed_sessions_conversation_is_let_go_at_once(server):
    """Freed when the session closes, not at the next garbage collection (a session is held in
    reference cycles: the server trims the heap right after it closes)."""
    marker = "remember me " * 1000
    gc.collect()
    gc.disable()
    try:
        with server.client() as websocket:
            for k in range(20):
                send(websocket, {**HELLO, "item": {**HELLO["item"], "id": f"item_{k}",
                                                   "content": [{"type": "input_text", "text": marker}]}})
            until(websocket, lambda e: e["type"] == "conversation.item.done" and e["item"]["id"] == "item_19")
        server.wait_idle()
        kept = [o for o in gc.get_objects() if isinstance(o, Item) and o.text == marker]
    finally:
        gc.enable()
    assert not kept


def test_voice_serve_documents_the_conversation_limits_with_their_defaults():
    from server.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.max_conversation_items, args.max_conversation_bytes) == (1000, 8 * 1024 * 1024)
    assert ConversationLimits() == ConversationLimits(max_items=1000, max_text_bytes=8 * 1024 * 1024)
    assert ConnectionLimits().conversation == ConversationLimits()
