"""The `voice` command: `voice talk` against a running `voice serve`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading

import pytest
import soundfile

from tests.helpers import DATA, ROOT, free_port, reference, wer

WAV = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"


def test_voice_talk_prints_the_conversation_and_saves_the_reply(voice_server, tmp_path):
    out = tmp_path / "reply.wav"
    wav = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "talk", str(DATA / wav), "--url",
         f"ws://127.0.0.1:{voice_server}/v1/realtime", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("  user (partial):") for line in lines)
    user = [line.removeprefix("user: ") for line in lines if line.startswith("user: ")]
    assert len(user) == 1 and wer(reference(wav), user[0]) <= 0.25
    assert any(line.startswith("assistant: ") for line in lines)
    assert any("llm_first_token=" in line for line in lines)
    audio, rate = soundfile.read(out)
    assert rate == 24_000 and len(audio) > 0.3 * rate


def test_voice_serve_refuses_a_missing_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--llm-model", str(tmp_path / "no.gguf")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "GGUF model not found" in result.stderr


# ---------------------------------------------------------------- ordinary mistakes: one line, exit code 2
def voice(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2 and a single `voice: error:` line naming `words`, no traceback."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("voice: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in errors[0] for word in words), errors[0]


def test_serve_on_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line(voice("serve", "--port", str(port)), f"127.0.0.1:{port}", "already in use", "--port")


def test_serve_on_a_host_that_is_not_here():
    assert_one_line(voice("serve", "--host", "no-such-host.invalid", "--port", "0"), "--host")
    assert_one_line(voice("serve", "--host", "192.0.2.1", "--port", "0"), "192.0.2.1", "--host")


def test_serve_with_an_unknown_asr_model():
    assert_one_line(voice("serve", "--port", "0", "--asr-model", "nonexistent"), "--asr-model 'nonexistent'")


def test_serve_with_a_missing_llm_model(tmp_path):
    assert_one_line(voice("serve", "--port", "0", "--llm-model", str(tmp_path / "no.gguf")), "GGUF model not found")


def test_a_piper_voice_that_needs_a_download_says_how_to_give_a_local_one(tmp_path):
    from voice import models

    with pytest.raises(models.ModelNotFoundError) as raised:
        models.piper_voice("en_US-nobody-medium", tmp_path)
    message = str(raised.value)
    assert "cannot be downloaded here" in message and "--tts-voice PATH.onnx" in message and "\n" not in message


def test_talk_with_a_missing_file():
    assert_one_line(voice("talk", "no-such-recording.wav"), "no-such-recording.wav", "no such file")


def test_talk_to_an_http_url():
    assert_one_line(voice("talk", str(DATA / WAV), "--url", "http://127.0.0.1:8000/v1/realtime"),
                    "not a websocket URL", "ws://")


def test_talk_with_no_server_running():
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    assert_one_line(voice("talk", str(DATA / WAV), "--url", url), url, "no server is listening")


def test_talk_to_a_server_that_requires_a_key():
    """A server still loading its models checks keys already: enough to see the refusal."""
    from server.app import ServerOptions, VoiceServer
    from server.config import SessionConfig

    ready, stopped = threading.Event(), threading.Event()
    port = free_port()

    async def run() -> None:
        server = VoiceServer(None, SessionConfig(), ServerOptions(port=port, api_key="secret"))
        listening = await server.start()
        ready.set()
        await asyncio.to_thread(stopped.wait)
        listening.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        ready.wait(10)
        result = voice("talk", str(DATA / WAV), "--url", f"ws://127.0.0.1:{port}/v1/realtime", "--api-key", "")
        assert_one_line(result, "requires an API key", "--api-key")
    finally:
        stopped.set()
        thread.join(10)


def test_log_options_are_taken_after_the_subcommand_too():
    from server.cli import build_parser

    after = build_parser().parse_args(["talk", "x.wav", "--log-json", "--log-level", "DEBUG"])
    before = build_parser().parse_args(["--log-json", "--log-level", "DEBUG", "talk", "x.wav"])
    neither = build_parser().parse_args(["talk", "x.wav"])
    assert (after.log_json, after.log_level) == (before.log_json, before.log_level) == (True, "DEBUG")
    assert neither.log_json is False


def test_talk_on_a_clip_without_speech_says_so_and_writes_nothing(voice_server, tmp_path):
    out = tmp_path / "reply.wav"
    result = voice("talk", str(DATA / "23_leopard_empty_synthetic_nospeech.wav"), "--url",
                   f"ws://127.0.0.1:{voice_server}/v1/realtime", "--out", str(out), "--speed", "2")
    assert result.returncode == 0, result.stderr
    assert "no speech heard" in result.stdout and not out.exists()
