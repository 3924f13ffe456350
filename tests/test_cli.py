"""The `voice` command: `voice talk` against a running `voice serve`."""

from __future__ import annotations

import subprocess
import sys

import soundfile

from tests.helpers import DATA, ROOT, reference, wer


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
