from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import start_voice_server, stop

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def voice_server(artifacts: Path):
    """One `voice serve` on the bundled models for the whole test session; yields its port."""
    process, port = start_voice_server(log_path=artifacts / "voice-server.log")
    yield port
    stop(process)


@pytest.fixture(scope="session")
def silero():
    from voice.vad import SileroModel

    return SileroModel()
