"""The README's code blocks run as written: its Python against a live server, its `voice talk` line too."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
DEFAULT_ADDRESS = "127.0.0.1:8000"  # where the README's examples expect `bin/serve`


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_the_blocks_this_test_runs():
    assert blocks("python") and any("voice talk" in block for block in blocks("sh"))


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_a_python_block_runs_against_a_live_server(index, voice_server):
    code = blocks("python")[index].replace(DEFAULT_ADDRESS, f"127.0.0.1:{voice_server}")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example prints what the server said"


def test_the_voice_talk_line_runs_against_a_live_server(voice_server, tmp_path):
    line = next(line for block in blocks("sh") for line in block.splitlines() if " talk " in line)
    command = shlex.split(line.split("#")[0])
    assert command[0] == ".venv/bin/voice"
    command = [sys.executable, "-m", "server.cli", *command[1:], "--url", f"ws://127.0.0.1:{voice_server}/v1/realtime"]
    command[command.index("--out") + 1] = str(tmp_path / "reply.wav")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "assistant: " in result.stdout and (tmp_path / "reply.wav").is_file()
