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
def native_projector(artifacts: Path) -> Path:
    """The bundled trained projector, or (before one is trained) an untrained one of the same shape."""
    from voice.models import BUNDLED_PROJECTOR
    from voice.native.projector import NumpyProjector, ProjectorConfig

    if BUNDLED_PROJECTOR.is_file():
        return BUNDLED_PROJECTOR
    return NumpyProjector.init(ProjectorConfig()).save(artifacts / "untrained-projector.npz")


@pytest.fixture(scope="session")
def voice_server(artifacts: Path, native_projector: Path):
    """One `voice serve` on the bundled models (offering both pipelines, cascade by default, and
    Kokoro's af_heart beside Piper's voice where the `kokoro` extra is installed) for the whole test
    session; yields its port."""
    import importlib.util

    voices = ["--tts", "piper,kokoro:af_heart"] if importlib.util.find_spec("kokoro_onnx") else []
    process, port = start_voice_server("--native-projector", str(native_projector), *voices,
                                       log_path=artifacts / "voice-server.log")
    yield port
    stop(process)


@pytest.fixture(scope="session")
def silero():
    from voice.vad import SileroModel

    return SileroModel()


@pytest.fixture(scope="session")
def engine():
    """The bundled models loaded once in this process, for servers the tests embed (server/app.py)."""
    from server.config import SessionConfig
    from voice.engine import Engine, EngineConfig

    loaded = Engine.load(EngineConfig()).warm(SessionConfig().instructions)
    yield loaded
    loaded.close()
