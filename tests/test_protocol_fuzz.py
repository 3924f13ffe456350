"""Property-based fuzzing of the protocol layer: nothing a client sends crashes a session, and a
valid exchange still works after every bad input."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.client_events import CLIENT_EVENT_TYPES
from server.config import SessionConfig
from server.effects import CancelResponse, StartResponse
from server.session import RealtimeSession

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["event_id", "session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response",
          "response_id", "previous_item_id"]
VALID = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "x",
                                           "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}},
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hi"}]}},
    {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10},
    {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 20}},
    {"type": "response.cancel"},
]

random_events = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(CLIENT_EVENT_TYPES)) | st.text(max_size=30)},
    optional={name: json_values for name in FIELDS},
)


@st.composite
def mutated_events(draw):
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
    | mutated_events().map(json.dumps)
    | mutated_events().map(lambda e: json.dumps(e)[: len(json.dumps(e)) // 2])  # truncated JSON
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(raw_messages, min_size=1, max_size=6))
def test_random_input_never_breaks_a_session(silero, messages):
    session = RealtimeSession(SessionConfig(), silero)
    session.start()
    now = 1.0
    for raw in messages:
        out = session.receive_client(raw, now)
        now += 0.02
        for event in out.events:
            assert isinstance(event["type"], str) and event["event_id"]
            if event["type"] == "error":
                assert event["error"]["message"] and event["error"]["code"]
            json.dumps(event)  # everything sent must serialise
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
