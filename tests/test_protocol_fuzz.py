"""Property-based fuzzing of the protocol: through the websocket of a real server (stand-in models),
every malformed event gets an `error` event naming it and the session stays open; arbitrary JSON
never closes a session; and a valid exchange still works after every bad input."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.client_events import CLIENT_EVENT_TYPES, SessionSpec
from server.config import SessionConfig
from server.effects import CancelResponse, StartResponse
from server.response_wire import SERVER_METADATA_KEYS
from server.session import RealtimeSession
from tests.stand_in import answer_to, errors_for, send, stand_in_server, until

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["event_id", "session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response",
          "response_id", "previous_item_id"]
TEXT_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
VALID = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "x",
                                           "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}},
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": TEXT_ITEM},
    {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10},
    {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 20}},
    {"type": "response.cancel"},
]


# ---------------------------------------------------------------- malformed by construction
@dataclass(frozen=True)
class Raw:
    """JSON text sent as it is: numbers that Python's json cannot write (NaN, 5,000 digits)."""

    text: str


def dumps(event: dict) -> str:
    raws: list[str] = []

    def default(value: object) -> str:
        assert isinstance(value, Raw)
        raws.append(value.text)
        return f"@raw{len(raws) - 1}@"
    text = json.dumps(event, default=default)
    for k, raw in enumerate(raws):
        text = text.replace(f'"@raw{k}@"', raw)
    return text


huge = st.integers(4301, 6000).flatmap(lambda n: st.sampled_from([Raw("9" * n), Raw("-" + "9" * n)]))
not_finite = st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400")])
containers = st.lists(json_values, max_size=3) | st.dictionaries(st.text(max_size=8), json_values, max_size=3)
not_number = st.text(max_size=8) | st.booleans() | containers | huge | not_finite
not_string = st.integers() | st.floats(allow_nan=False) | st.booleans() | containers | huge
not_bool = st.none() | st.integers() | st.text(max_size=8) | containers


def outside(low: float, high: float) -> st.SearchStrategy:
    return st.floats(min_value=high, exclude_min=True, allow_infinity=False) \
        | st.floats(max_value=low, exclude_max=True, allow_infinity=False) | not_number


def int_outside(low: int, high: int) -> st.SearchStrategy:
    return st.integers(min_value=high + 1) | st.integers(max_value=low - 1) | not_number \
        | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x))


def not_one_of(*allowed: str) -> st.SearchStrategy:
    return st.text(max_size=12).filter(lambda s: s not in allowed) | not_string


def session(*path: str) -> tuple[dict, tuple[str, ...]]:
    return {"type": "session.update", "session": {}}, ("session", *path)


TURN = ("audio", "input", "turn_detection")
# (event, the path of the field, values that field must refuse)
BAD_FIELDS: list[tuple[dict, tuple[str, ...], st.SearchStrategy]] = [
    (*session("temperature"), outside(0.0, 2.0)),
    (*session("max_output_tokens"), int_outside(1, 4096).filter(lambda v: v != "inf")),
    (*session("instructions"), not_string | st.just("x" * 262_145)),
    (*session("output_modalities"), st.just([]) | st.lists(not_one_of("audio", "text"), min_size=1, max_size=2)
     | st.text(max_size=5)),
    (*session("type"), not_one_of("realtime") | st.none()),
    (*session("tool_choice"), not_one_of("auto", "none", "required") | st.fixed_dictionaries({"type": st.just(
        "function")})),
    (*session("tools"), st.lists(st.fixed_dictionaries({"name": not_string}), min_size=1, max_size=2)),
    (*session(*TURN, "type"), not_one_of("server_vad", "semantic_vad") | st.none()),
    (*session(*TURN, "eagerness"), not_one_of("low", "medium", "high", "auto").filter(lambda v: v is not None)),
    (*session(*TURN, "threshold"), outside(0.0, 1.0)),
    (*session(*TURN, "prefix_padding_ms"), int_outside(0, 5000)),
    (*session(*TURN, "silence_duration_ms"), int_outside(0, 10_000)),
    (*session(*TURN, "create_response"), not_bool),
    (*session(*TURN, "interrupt_response"), not_bool),
    (*session("audio", "output", "speed"), outside(0.25, 1.5)),
    (*session("audio", "output", "voice"), st.just("") | st.integers() | st.booleans() | st.lists(st.text())),
    (*session("audio", "input", "format"), st.fixed_dictionaries({"rate": st.integers().filter(lambda r: r != 24_000)})
     | not_string.filter(lambda v: not isinstance(v, dict))),
    (*session("audio", "input", "transcription"), st.integers() | st.text() | st.lists(st.integers())),
    ({"type": "conversation.item.create", "item": TEXT_ITEM}, ("item", "role"), not_one_of("user", "assistant",
                                                                                          "system")),
    ({"type": "conversation.item.create", "item": TEXT_ITEM}, ("item", "content"), st.just([]) | not_string),
    ({"type": "conversation.item.create", "item": TEXT_ITEM}, ("item", "id"), st.just("") | st.text(
        min_size=65, max_size=80) | st.integers() | containers),
    ({"type": "conversation.item.create", "item": TEXT_ITEM}, ("item", "type"),
     not_one_of("message", "function_call", "function_call_output")),
    ({"type": "conversation.item.create", "item": TEXT_ITEM}, ("previous_item_id",), not_string),
    ({"type": "conversation.item.truncate", "item_id": "item_x", "audio_end_ms": 10}, ("audio_end_ms",),
     int_outside(0, 2**31 - 1)),
    ({"type": "conversation.item.truncate", "item_id": "item_x", "audio_end_ms": 10}, ("content_index",),
     int_outside(0, 32)),
    ({"type": "conversation.item.delete", "item_id": "x"}, ("item_id",), st.just("") | not_string | st.none()),
    ({"type": "conversation.item.retrieve", "item_id": "x"}, ("item_id",), st.just("") | not_string | st.none()),
    ({"type": "response.create", "response": {}}, ("response", "temperature"), outside(0.0, 2.0)),
    ({"type": "response.create", "response": {}}, ("response", "metadata"),
     st.dictionaries(st.text(max_size=8), not_string, min_size=1, max_size=3)
     | st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=17, max_size=20)
     | st.sampled_from(sorted(SERVER_METADATA_KEYS)).map(lambda key: {key: "1"}) | st.text() | st.lists(st.text())),
    ({"type": "response.cancel"}, ("response_id",), not_string),
    ({"type": "input_audio_buffer.append", "audio": ""}, ("audio",),
     not_string | st.none() | st.just("%%%") | st.just(base64.b64encode(b"abc").decode())),
]
SESSION_FIELDS = sorted(SessionSpec.model_fields)


@st.composite
def malformed_events(draw) -> str:
    """A valid event with one field given a value it must refuse, an unknown field, or an unknown type."""
    kind = draw(st.sampled_from(["field", "field", "field", "unknown_field", "unknown_type"]))
    if kind == "unknown_type":
        event = {"type": draw(st.text(max_size=30).filter(lambda t: t not in CLIENT_EVENT_TYPES))}
    elif kind == "unknown_field":
        event = json.loads(json.dumps(draw(st.sampled_from(VALID))))
        event[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in {*FIELDS, "type", "content_index",
                                                                                "audio_end_ms"}))] = 1
    else:
        base, path, bad = draw(st.sampled_from(BAD_FIELDS))
        event = json.loads(json.dumps(base))
        target = event
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = draw(bad)
    event["event_id"] = "evt_bad"
    return dumps(event)


random_events = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(CLIENT_EVENT_TYPES)) | st.text(max_size=30)},
    optional={name: json_values for name in FIELDS},
)
random_sessions = st.fixed_dictionaries({"type": st.just("session.update"), "session": st.dictionaries(
    st.sampled_from(SESSION_FIELDS), json_values, max_size=4)})


@st.composite
def mutated_events(draw) -> dict:
    event = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    target = event
    path = [k for k in event if k != "type"]
    if path and draw(st.booleans()):
        key = draw(st.sampled_from(path))
        if isinstance(target[key], dict) and target[key] and draw(st.booleans()):
            target = target[key]
            key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(json_values)
    return event


raw_messages = (
    st.text(max_size=60)
    | st.binary(max_size=60)
    | json_values.map(json.dumps)
    | random_events.map(json.dumps)
    | random_sessions.map(json.dumps)
    | mutated_events().map(json.dumps)
    | mutated_events().map(lambda e: json.dumps(e)[: len(json.dumps(e)) // 2])  # truncated JSON
)


# ---------------------------------------------------------------- through the websocket
@pytest.fixture(scope="module")
def server(silero):
    with stand_in_server(silero) as running:
        yield running


def still_works(websocket) -> None:
    """A valid exchange: an item added, then retrieved."""
    send(websocket, {"type": "conversation.item.create", "event_id": "evt_check",
                     "item": {**TEXT_ITEM, "id": "item_fuzz_check"}},
         {"type": "conversation.item.retrieve", "event_id": "evt_check", "item_id": "item_fuzz_check"})
    event = until(websocket, lambda e: (e["type"] == "conversation.item.retrieved" and e["item"]["id"]
                                        == "item_fuzz_check") or (e["type"] == "error"
                                                                  and e["error"]["event_id"] == "evt_check"))[-1]
    assert event["type"] == "conversation.item.retrieved", event


def well_formed(events: list[dict]) -> None:
    for event in events:
        assert isinstance(event["type"], str) and event["event_id"]
        if event["type"] == "error":
            error = event["error"]
            assert error["message"] and error["code"] and error["type"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(malformed_events(), min_size=1, max_size=4))
def test_every_malformed_event_gets_an_error_and_the_session_stays_open(server, messages):
    with server.client() as websocket:
        for k, message in enumerate(messages):
            events = answer_to(websocket, message, probe=f"probe_{k}")
            well_formed(events)
            errors = errors_for(events, "evt_bad")
            assert errors, (message[:300], [e["type"] for e in events])
            assert all(error["type"] == "invalid_request_error" for error in errors)
        still_works(websocket)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_messages, min_size=1, max_size=5))
def test_arbitrary_json_never_closes_a_session(server, messages):
    with server.client() as websocket:
        for k, message in enumerate(messages):
            well_formed(answer_to(websocket, message, probe=f"probe_{k}"))
        send(websocket, {"type": "response.cancel"})  # (whatever a random event started)
        still_works(websocket)


# ---------------------------------------------------------------- in memory, the session's state too
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(raw_messages | malformed_events(), min_size=1, max_size=6))
def test_random_input_never_breaks_a_session(silero, messages):
    session = RealtimeSession(SessionConfig(), silero)
    session.start()
    now = 1.0
    for raw in messages:
        out = session.receive_client(raw, now)
        now += 0.02
        well_formed(out.events)
        for event in out.events:
            json.dumps(event)  # everything sent must serialise
        if isinstance(raw, str) and '"evt_bad"' in raw:
            assert errors_for(out.events, "evt_bad"), raw[:300]
        # After each input, a valid exchange still works.
        if session.response_active:
            cancelled = session.receive_client(json.dumps({"type": "response.cancel"}), now)
            assert any(isinstance(e, CancelResponse) for e in cancelled.effects)
        session.receive_client(json.dumps(VALID[4]), now)
        out = session.receive_client(json.dumps({"type": "response.create"}), now)
        if not any(isinstance(e, StartResponse) for e in out.effects):
            # Only a pending transcription (an audio commit) may hold a response back.
            assert session.turns.transcribing, [e["type"] for e in out.events]
        else:
            session.receive_client(json.dumps({"type": "response.cancel"}), now)
