"""The server's logs: a conversation at INFO reads on one screen; JSON mode is JSON throughout."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from clients.python.client import RealtimeClient, load_wav_pcm24
from server.turn_log import TurnLog
from tests.helpers import DATA, free_port, start_voice_server, stop

CLIPS = ("04_v2j_would_you_please_turn_on_living_room_lamp.wav", "03_v2j_turn_on_living_room_lamp.wav")


def test_turn_log_logs_one_line_per_response_with_lengths_not_words(caplog):
    turns = TurnLog()
    with caplog.at_level("INFO", logger="server.turns"):
        turns.observe({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_1",
                       "transcript": "Turn on the lamp."})
        turns.observe({"type": "response.done", "response": {
            "id": "resp_1", "status": "completed", "status_details": None,
            "output": [{"type": "message", "content": [{"type": "output_audio", "transcript": "Done."}]}],
            "metadata": {"end_of_turn_ms": "300.2", "llm_first_token_ms": "410.9", "timing_origin": "speech_end"}}})
    assert [r.getMessage() for r in caplog.records] == [
        "turn item_1 -> resp_1 completed: heard 17 chars, said 5 chars; ms: end_of_turn=300 llm_first_token=411"]


async def _turn(client: RealtimeClient, clip: str) -> None:
    await client.stream_audio(load_wav_pcm24(DATA / clip), trailing_silence_ms=2500)
    async for received in client.events():
        if received.type == "response.done" and received.event["response"]["status"] == "completed":
            return


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_two_turn_conversation_logs_on_one_screen(artifacts):
    log_path = artifacts / "voice-server-two-turns.json.log"
    process, port = start_voice_server("--log-json", log_path=log_path)  # after the subcommand
    try:
        for path in ("/", "/healthz", "/metrics", "/healthz"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{port}/v1/realtime")
        for clip in CLIPS:
            await asyncio.wait_for(_turn(client, clip), 120)
        await client.close()
        await asyncio.sleep(1)
    finally:
        stop(process)
    records = _records(log_path)  # every line is JSON, the ready line included
    messages = [r["message"] for r in records]
    assert len(records) <= 30, "\n".join(messages)
    ready = [m for m in messages if "ready" in m]
    assert len(ready) == 1 and f"http://127.0.0.1:{port}/," in ready[0]
    assert f"ws://127.0.0.1:{port}/v1/realtime" in ready[0]
    turns = [r for r in records if r["message"].startswith("turn ")]
    completed = [r for r in turns if " completed:" in r["message"]]
    assert len(completed) == 2, "\n".join(messages)
    assert all(r["session"].startswith("sess_") and "heard" in r["message"] and "llm_first_token=" in r["message"]
               for r in turns)
    assert not any("lamp" in m.lower() for m in messages)  # the words only at DEBUG
    assert any(m.startswith("GET / 200 127.0.0.1:") for m in messages)
    assert not any("/healthz" in m or "/metrics" in m for m in messages)
    assert not any("HTTP response sent" in m or "connection closed" in m for m in messages)
    assert sum(m.startswith("session opened from 127.0.0.1:") for m in messages) == 1


async def test_a_dead_llm_server_is_warned_of_and_its_failed_reply_logged_with_the_session(artifacts):
    log_path = artifacts / "voice-server-dead-llm.json.log"
    llm_url = f"http://127.0.0.1:{free_port()}/v1"
    process, port = start_voice_server("--llm-url", llm_url, "--llm-name", "x", "--log-json", log_path=log_path)
    try:
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read())
        assert health["status"] == "degraded" and llm_url in health["down"]["llm"]
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{port}/v1/realtime")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}})
        await client.send({"type": "response.create"})
        async for received in client.events():
            if received.type == "response.done":
                assert received.event["response"]["status"] == "failed"
                break
        await client.close()
    finally:
        stop(process)
    records = _records(log_path)
    assert any(r["level"] == "warning" and "llm server is down" in r["message"] and llm_url in r["message"]
               for r in records)
    failed = [r for r in records if r["message"].startswith("response failed")]
    assert failed and all(r["session"].startswith("sess_") for r in failed)
    assert any(r["message"].startswith("turn ") and " failed" in r["message"] for r in records)


def test_debug_leaves_out_the_libraries_raw_frames():
    """At DEBUG, websockets would log every frame (hundreds a turn): its lines stay at WARNING and up."""
    import logging

    from server.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("DEBUG")
        assert logging.getLogger("server.turns").isEnabledFor(logging.DEBUG)
        for name in ("websockets.server", "websockets.client", "httpcore.http11", "openai._base_client"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_model_jobs_log_with_the_session_that_started_them():
    from server.logs import session_id
    from voice.engine import ContextExecutor

    async def run() -> str:
        session_id.set("sess_1")
        with ContextExecutor(max_workers=1) as executor:
            return await asyncio.get_running_loop().run_in_executor(executor, session_id.get)

    assert asyncio.run(run()) == "sess_1"


async def test_healthz_reports_a_model_server_that_goes_down_and_comes_back(monkeypatch):
    from types import SimpleNamespace

    from server import health

    engine = SimpleNamespace(remote={"llm": "http://127.0.0.1:1/v1"}, remote_down={"llm": "refused"})
    backends = health.BackendHealth()
    assert backends.down(engine) == {"llm": "refused"}  # the start-up check, at once
    monkeypatch.setattr(health, "PROBE_EVERY_S", 0.0)
    monkeypatch.setattr(health, "unreachable", lambda urls: {})
    backends.down(engine)
    await asyncio.sleep(0.2)  # the probe runs in a worker thread
    assert backends.down(engine) == {}
    assert health.BackendHealth().down(SimpleNamespace(remote={}, remote_down={})) == {}
