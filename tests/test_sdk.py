"""The Python client SDK (clients/python) against a real server on the bundled models: playback with
barge-in (a player that plays into memory at real-time pace stands for the sound card), reconnection
with backoff across a server restart, the tool-call callback, and the same calls in-process."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time

import pytest

from clients.python import Backoff, BufferPlayer, FunctionCall, Playback, RealtimeClient, load_wav_pcm24
from clients.python.events import item_truncate
from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from tests.helpers import DATA, reference, wer

LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
FORWARD = "06_ps_goforward.wav"
STORYTELLER = {"max_output_tokens": 400, "temperature": 0.0,
               "instructions": "You are a storyteller who tells long, detailed stories."}
SET_LIGHT = {"type": "function", "name": "set_light", "description": "Turn the light in a room on or off.",
             "parameters": {"type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                            "required": ["room", "on"]}}


class RealTimePlayer(BufferPlayer):
    """Plays into memory at real-time pace: the sound card's place in these tests."""

    def __init__(self) -> None:
        super().__init__()
        self.cleared_at_ms: list[float] = []  # how much had played when each clear came
        self._task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.advance((now - last) * 1000)
            last = now

    def clear(self) -> None:
        self.cleared_at_ms.append(self.played_ms())
        super().clear()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def server_on(engine, port: int = 0) -> VoiceServer:  # noqa: ANN001 - the engine fixture
    return VoiceServer(engine, SessionConfig(), ServerOptions(port=port))


async def next_event(client: RealtimeClient, kind: str, seen: list[dict] | None = None, timeout: float = 120.0,
                     where=lambda event: True) -> dict:  # noqa: ANN001 - a predicate
    async def read() -> dict:
        async for received in client.events():
            if seen is not None:
                seen.append(received.event)
            if received.type == kind and where(received.event):
                return received.event
        raise AssertionError(f"the connection ended before {kind}")
    return await asyncio.wait_for(read(), timeout)


async def collect(client: RealtimeClient, seen: list[dict]) -> None:
    async for received in client.events():
        seen.append(received.event)


async def poll(condition, timeout: float = 120.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_playback_truncates_to_what_was_played_and_drops_the_rest():
    player = BufferPlayer()
    playback = Playback(player)
    delta = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1",
             "delta": "AAAA" * 2400}  # 7200 bytes: 150 ms
    assert playback.observe(delta) == [] and player.queued_ms() == 150
    player.advance(40.5)
    assert playback.observe({"type": "output_audio_buffer.cleared"}) == [item_truncate("i1", 40)]
    assert player.queued_ms() == player.played_ms() == 40.5
    playback.observe(delta)  # late audio of the stopped response is not played
    assert player.queued_ms() == 40.5
    # A reply that had played out is not truncated.
    playback.observe({**delta, "response_id": "r2", "item_id": "i2"})
    player.advance(500)
    assert playback.observe({"type": "output_audio_buffer.cleared"}) == []
    # For servers that do not say so, speech stops the reply at once.
    eager = Playback(BufferPlayer(), stop_on_speech=True)
    eager.observe(delta)
    assert eager.observe({"type": "input_audio_buffer.speech_started", "item_id": "u1"})[0]["audio_end_ms"] == 0


def test_typed_events_and_builders_are_the_protocols():
    from clients.python import events

    assert events.session_update(instructions="Hi") == {"type": "session.update",
                                                         "session": {"type": "realtime", "instructions": "Hi"}}
    assert events.response_create() == {"type": "response.create"}
    assert events.response_create(tool_choice="none")["response"] == {"tool_choice": "none"}
    assert events.function_call_output("c1", {"ok": True})["item"] == {"type": "function_call_output",
                                                                        "call_id": "c1", "output": '{"ok": true}'}
    assert events.audio_append(b"\x01\x00") == {"type": "input_audio_buffer.append", "audio": "AQA="}
    delta = {"type": "response.output_audio.delta", "delta": "AQA=", "response_id": "r", "item_id": "i"}
    assert events.typed(delta) == events.AudioDelta("r", "i", b"\x01\x00")
    call = events.typed({"type": "response.function_call_arguments.done", "call_id": "c", "name": "f",
                         "arguments": '{"a": 1}', "item_id": "i", "response_id": "r"})
    assert isinstance(call, FunctionCall) and call.parsed_arguments() == {"a": 1}
    assert events.typed({"type": "session.created"}) is None


def test_backoff_waits_grow_to_their_cap_with_jitter():
    waits = list(Backoff(first_s=0.1, factor=2, max_s=0.5, jitter=0.1, attempts=6).waits())
    assert len(waits) == 6
    for wait, nominal in zip(waits, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5], strict=True):
        assert nominal * 0.9 <= wait <= nominal * 1.1


def test_the_sdk_works_without_sounddevice():
    assert "sounddevice" not in sys.modules  # nothing imported it
    from clients.python.devices import Speaker

    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(RuntimeError, match="audio"):
            Speaker()


async def test_barge_in_stops_playback_and_truncates_to_the_ms_played(engine):
    async with server_on(engine) as server:
        player = RealTimePlayer()
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{server.port}/v1/realtime", player=player)
        seen: list[dict] = []
        recorder = asyncio.create_task(collect(client, seen))
        try:
            await client.send({"type": "session.update", "session": {"type": "realtime", **STORYTELLER}})
            await client.send_text("Tell me a long story about a brave dragon.")
            await poll(lambda: player.played_ms() >= 1500)  # the user listens a while, then talks over it
            await client.stream_audio(load_wav_pcm24(DATA / FORWARD), trailing_silence_ms=2500)
            await poll(lambda: any(e["type"] == "conversation.item.truncated" for e in seen))
        finally:
            await client.close()
            await player.close()
            await asyncio.gather(recorder, return_exceptions=True)
    first = next(e for e in seen if e["type"] == "response.output_audio.delta")
    truncated = next(e for e in seen if e["type"] == "conversation.item.truncated")
    [sent] = client.playback.truncations
    assert truncated["item_id"] == first["item_id"] == sent["item_id"]
    assert truncated["audio_end_ms"] == sent["audio_end_ms"]
    # It is what the player had played of the reply when it stopped: that audio, and no more of it.
    [stopped_at] = player.cleared_at_ms
    assert sent["audio_end_ms"] == int(stopped_at) and sent["audio_end_ms"] >= 1500
    reply = b"".join(base64.b64decode(e["delta"]) for e in seen
                     if e["type"] == "response.output_audio.delta" and e["response_id"] == first["response_id"])
    played_of_reply = bytes(player.played[:int(stopped_at * 48) // 2 * 2])
    assert played_of_reply == reply[:len(played_of_reply)] and len(reply) > len(played_of_reply)
    kinds = [e["type"] for e in seen]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("output_audio_buffer.cleared")


async def test_the_client_reconnects_with_backoff_when_the_server_restarts(engine):
    async with server_on(engine) as first_server:
        port = first_server.port
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                              reconnect=Backoff(first_s=0.1, max_s=0.5))
        created = await next_event(client, "session.created")
        await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
        await next_event(client, "session.updated")
    down_at = time.monotonic()
    await asyncio.sleep(1.0)  # the client tries, and fails, meanwhile
    try:
        async with server_on(engine, port):
            again = await next_event(client, "session.created", timeout=30)
            assert again["session"]["id"] != created["session"]["id"]
            updated = await next_event(client, "session.updated", timeout=30)
            assert updated["session"]["instructions"] == "Be brief."  # the settings went with it
            assert client.reconnects == 1 and time.monotonic() - down_at >= 1.0
            await client.send_text("Say hello.")
            done = await next_event(client, "response.done")
            assert done["response"]["status"] == "completed"
    finally:
        await client.close()


async def test_a_tool_call_goes_to_the_callback_and_its_output_back_for_the_reply(engine):
    calls: list[FunctionCall] = []

    async def run_tool(call: FunctionCall) -> dict:
        calls.append(call)
        return {"ok": True, "room": call.parsed_arguments()["room"]}

    async with server_on(engine) as server:
        # The bundled SmolLM2 calls when it must (tool_choice required; its grammar writes the
        # arguments); the follow-up asks for words.
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{server.port}/v1/realtime", on_tool_call=run_tool,
                                              tool_follow_up={"tool_choice": "none"})
        try:
            seen: list[dict] = []
            await client.send({"type": "session.update", "session": {
                "type": "realtime", "tools": [SET_LIGHT], "tool_choice": "required"}})
            await next_event(client, "session.updated", seen)
            await client.stream_audio(load_wav_pcm24(DATA / LAMP), trailing_silence_ms=2500)
            called = await next_event(client, "response.done", seen)
            answered = await next_event(client, "response.done", seen)
        finally:
            await client.close()
    [call] = calls
    assert call.name == "set_light" and set(call.parsed_arguments()) == {"room", "on"}
    assert called["response"]["output"][0]["type"] == "function_call"
    assert called["response"]["output"][0]["call_id"] == call.call_id
    [output] = [e["item"] for e in seen if e["type"] == "conversation.item.added"
                and e["item"]["type"] == "function_call_output"]
    assert output["call_id"] == call.call_id and json.loads(output["output"])["ok"] is True
    assert answered["response"]["status"] == "completed"
    assert answered["response"]["output"][0]["type"] == "message"
    assert answered["response"]["output"][0]["content"][0]["transcript"]


@pytest.mark.parametrize("where", ["websocket", "in-process"])
async def test_the_same_code_holds_a_two_turn_conversation_remote_or_in_process(engine, where):
    async def frames(pcm: bytes):  # a microphone: 20 ms frames as they are captured
        start = time.monotonic()
        for index in range(0, len(pcm), 960):
            await asyncio.sleep(max(0.0, start + index / 48_000 - time.monotonic()))
            yield pcm[index:index + 960]

    async with server_on(engine) as server:
        client = await (RealtimeClient.connect(f"ws://127.0.0.1:{server.port}/v1/realtime") if where == "websocket"
                        else RealtimeClient.local(server))
        try:
            seen: list[dict] = []
            replies = []
            for wav in (LAMP, FORWARD):  # two spoken turns, each answered in turn
                await client.stream_microphone(frames(load_wav_pcm24(DATA / wav) + bytes(48 * 2500)))
                replies.append(await next_event(client, "response.done", seen))
        finally:
            await client.close()
    heard = [e["transcript"] for e in seen if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(heard) == 2 and wer(reference(LAMP), heard[0]) <= 0.25 and wer(reference(FORWARD), heard[1]) <= 0.25
    for done in replies:
        assert done["response"]["status"] == "completed" and done["response"]["output"][0]["content"][0]["transcript"]
    assert replies[0]["response"]["id"] != replies[1]["response"]["id"]
