"""Loads the models once and hands the shared, thread-safe stages to every session."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voice import backends, models
from voice.asr.base import Heard, Hints, Transcriber
from voice.jobs import JobRunner
from voice.llm.base import ChatMessage, ChatModel
from voice.llm.compute_thread import set_load_probe
from voice.pipeline import CascadeResponder, NaiveResponder, NativeResponder, Responder
from voice.tts.base import Synthesizer
from voice.tts.voices import Voice, VoiceBook, sex_of
from voice.vad import SileroModel

if TYPE_CHECKING:
    from voice.end_of_turn import EndOfTurn, EndScore
    from voice.native.base import AudioChatModel

log = logging.getLogger(__name__)


class ContextExecutor(ThreadPoolExecutor):
    """Runs each job in a copy of its submitter's context, so a worker's log lines carry the session id
    (`loop.run_in_executor`, unlike `asyncio.to_thread`, does not copy it)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - ThreadPoolExecutor's own
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


@dataclass(frozen=True)
class EngineConfig:
    asr_model: str = models.DEFAULT
    """faster-whisper model: `bundled`, a CTranslate2 directory, or a hub name."""
    asr_compute_type: str = "int8"
    naive: bool = False
    """Serve the naive baseline pipeline only (benchmarks): Whisper on padded 30 s windows, the whole
    reply before any synthesis."""
    llm_model: str = models.DEFAULT
    """GGUF path for llama.cpp in-process (ignored with `llm_url`)."""
    llm_url: str | None = None
    """Base URL of an OpenAI-compatible server (vLLM, llama.cpp server), e.g. http://127.0.0.1:8080/v1."""
    llm_name: str | None = None
    """Model name to ask that server for (default: the first it lists)."""
    llm_api_key: str | None = None
    llm_timeout_s: float = 20.0
    """How long to wait for the LLM server to connect or send its next bytes before the turn fails."""
    llm_context: int = 2048
    llm_parallel: int = 4
    """llama.cpp contexts serving replies at the same time (in-process LLM only). Each also keeps
    its last conversation cached, so with one per active session a turn evaluates only itself."""
    native_projector: str | None = None
    """Trained projector (.npz) for the native pipeline: a path, `bundled`, or None (cascade only)."""
    native_url: str | None = None
    """Base URL of an OpenAI-compatible server taking audio (vLLM with Ultravox, `voice audio-api`):
    the native pipeline's model instead of the embedded one."""
    native_name: str | None = None
    native_api_key: str | None = None
    tts_voice: str = models.DEFAULT
    """Piper voice: `bundled`, an .onnx path, or a voice name."""
    tts: str | None = None
    """The voices offered, comma-separated, the first the default (voice/tts/voices.py): `piper`
    (`tts_voice`) or `piper:VOICE`, `kokoro` (the voices shipped here) or `kokoro:VOICE`, `url`
    (those `tts_url` lists) or `url:NAME`. None: `url` with a `tts_url`, else `piper`."""
    tts_url: str | None = None
    """Base URL of an OpenAI-compatible speech server (`POST /audio/speech`), e.g. http://gpu-host:8002/v1."""
    tts_name: str = "tts-1"
    """Model name to ask that server for."""
    tts_api_key: str | None = None
    turn_model: str = models.DEFAULT
    """The voice's end-of-turn model (Smart Turn): `bundled`, an ONNX path, or `off` (the words alone)."""
    threads: int = 2
    """CPU threads per model; more than the cores makes llama.cpp and CTranslate2 crawl."""


def build_asr(config: EngineConfig) -> Transcriber:
    from voice.asr.whisper import WhisperTranscriber

    spec = models.whisper_model(config.asr_model)
    try:
        return WhisperTranscriber(spec, compute_type=config.asr_compute_type, cpu_threads=config.threads,
                                  short_window=not config.naive)
    except Exception as exc:
        if Path(spec).exists():
            raise
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise models.ModelNotFoundError(f"--asr-model {spec!r} is not cached and cannot be downloaded here "
                                        f"({reason}): give a CTranslate2 directory") from exc


def build_llm(config: EngineConfig) -> ChatModel:
    if config.llm_url:
        from voice.llm.openai_http import OpenAICompatibleChat

        return OpenAICompatibleChat(config.llm_url, model=config.llm_name, api_key=config.llm_api_key,
                                    timeout=config.llm_timeout_s)
    from voice.llm.llamacpp import LlamaCppChat

    return LlamaCppChat(models.gguf_model(config.llm_model), n_ctx=config.llm_context, n_threads=config.threads,
                        parallel=config.llm_parallel)


def build_native(config: EngineConfig, asr: Transcriber) -> AudioChatModel | None:
    """The native pipeline's model: served (`native_url`), or embedded, sharing the ASR's Whisper
    encoder when it has one."""
    if config.native_url:
        from voice.native.served import ServedAudioChat

        return ServedAudioChat(config.native_url, model=config.native_name, api_key=config.native_api_key,
                               timeout=config.llm_timeout_s)
    if config.native_projector is None:
        return None
    from voice.native.model import NativeAudioChat

    projector = models.native_projector(config.native_projector)
    llm = None if config.llm_url else config.llm_model
    return NativeAudioChat(projector, llm_model=None if llm == models.DEFAULT else llm,
                           encoder=getattr(asr, "whisper_model", None), n_threads=config.threads,
                           parallel=config.llm_parallel)


def build_end_of_turn(config: EngineConfig) -> EndOfTurn:
    """The end-of-turn scorer: the bundled SmolLM2 reads the words, Smart Turn hears the voice."""
    from voice.end_of_turn import EndOfTurn, SmartTurn, TextEnd

    voice = None if config.turn_model == "off" else SmartTurn(models.smart_turn_model(config.turn_model))
    return EndOfTurn(TextEnd(models.gguf_model(None)), voice)


def build_tts(config: EngineConfig) -> Synthesizer:
    """The default voice alone."""
    return build_voices(config)[0][1]


def build_voices(config: EngineConfig) -> list[tuple[Voice, Synthesizer]]:
    """The voices `config.tts` names, in its order (the first is the default)."""
    voices: list[tuple[Voice, Synthesizer]] = []
    kokoro = None  # one graph for all Kokoro voices
    for entry in (config.tts or ("url" if config.tts_url else "piper")).split(","):
        engine, _, spec = entry.strip().partition(":")
        if engine == "piper":
            from voice.tts.piper import PiperSynthesizer

            spec = spec or config.tts_voice
            model, voice_config = models.piper_voice(spec)
            piper = PiperSynthesizer(model, voice_config, threads=config.threads, cache_dir=models.models_dir())
            voices.append((Voice(piper.name, "piper", "male" if spec == models.DEFAULT else None), piper))
        elif engine == "kokoro":
            from voice.tts.kokoro import KokoroModel, KokoroSynthesizer

            kokoro = kokoro or KokoroModel(models.kokoro_model(), threads=config.threads)
            for path in [models.kokoro_voice(spec)] if spec else sorted(models.KOKORO_VOICES_DIR.glob("*.bin")):
                synthesizer = KokoroSynthesizer(kokoro, path)
                voices.append((Voice(synthesizer.name, "kokoro", sex_of(synthesizer.name)), synthesizer))
        elif engine == "url":
            from voice.tts.speech_api import SpeechApiSynthesizer, listed_voices

            if not config.tts_url:
                raise models.ModelNotFoundError(f"--tts {entry}: give the speech server with --tts-url")
            names = [spec] if spec else listed_voices(config.tts_url, api_key=config.tts_api_key) or ["alloy"]
            voices += [(Voice(name, "url", sex_of(name)),
                        SpeechApiSynthesizer(config.tts_url, name, model=config.tts_name, api_key=config.tts_api_key,
                                             timeout=config.llm_timeout_s)) for name in names]
        else:
            raise models.ModelNotFoundError(f"--tts {entry!r}: each voice is piper[:VOICE], kokoro[:VOICE] or "
                                            "url[:NAME]")
    ids = [voice.id for voice, _ in voices]
    if len(set(ids)) < len(ids):
        raise models.ModelNotFoundError(f"--tts names a voice twice: {', '.join(ids)}")
    return voices


class Engine:
    """The shared model stages, the pipelines' responders, and the worker threads that run them."""

    def __init__(self, asr: Transcriber, llm: ChatModel, tts: Synthesizer, vad: SileroModel,
                 workers: int = 16, native: AudioChatModel | None = None, naive: bool = False,
                 end_of_turn: EndOfTurn | None = None, voices: list[tuple[Voice, Synthesizer]] | None = None) -> None:
        self.asr = asr
        self.end_of_turn = end_of_turn
        self.native = native
        self.llm = llm
        self.tts = tts
        """The default voice."""
        self.vad = vad
        voices = voices or [(Voice(tts.name, "piper"), tts)]
        self.voices = VoiceBook(tuple(voice for voice, _ in voices))
        """The voices sessions choose among (`session.update`'s `voice`)."""
        speakers = {voice.id: synthesizer for voice, synthesizer in voices}
        self.responders: dict[str, Responder] = {"naive": NaiveResponder(llm, tts, speakers)} if naive else {
            "cascade": CascadeResponder(llm, tts, speakers),
            **({"native": NativeResponder(native, llm, tts, speakers)} if native is not None else {}),
        }
        self.executor = ContextExecutor(max_workers=workers, thread_name_prefix="model")
        self.jobs = JobRunner(self.executor, slots=workers)
        """Every session's model work goes through it: fair across sessions (voice/scheduler.py)."""
        self.remote: dict[str, str] = {}
        """The model servers this engine calls, {backend: base URL}."""
        self.remote_down: dict[str, str] = {}
        """Those that did not answer at start-up, {backend: why}."""
        self._jobs = 0  # model jobs under way
        self._jobs_lock = threading.Lock()
        set_load_probe(lambda: self._jobs)

    @property
    def pipelines(self) -> tuple[str, ...]:
        """The pipelines sessions may choose."""
        return tuple(self.responders)

    @property
    def busy(self) -> bool:
        """Whether any model job (a transcription, a reply) is under way: partial transcripts,
        which only feed the display, are skipped then, leaving the CPU to work someone waits for."""
        return self._jobs > 0

    @contextmanager
    def job(self) -> Iterator[None]:
        """Count a model job while it runs."""
        with self._jobs_lock:
            self._jobs += 1
        try:
            yield
        finally:
            with self._jobs_lock:
                self._jobs -= 1

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None, hints: Hints | None = None) -> Heard:
        """Run the ASR stage (in a worker thread), counting the jobs under way."""
        with self.job():
            return self.asr.hear(audio, cancel, hints)

    def score_end(self, transcript: str, audio: np.ndarray) -> EndScore:
        """Has the user finished, at this pause (in a worker thread)? Counted as a model job."""
        if self.end_of_turn is None:
            raise RuntimeError("no end-of-turn model is loaded")
        with self.job():
            return self.end_of_turn.score(transcript, audio)

    def prefill(self, pipeline: str, messages: list[ChatMessage], audio: np.ndarray | None = None) -> None:
        """Evaluate a reply's prompt ahead of time, where the pipeline's model can (in a worker
        thread); for a pipeline that answers speech, with the user's speech so far (`audio`, 16 kHz)."""
        responder = self.responders[pipeline]
        if audio is not None:
            # Not counted as a job: it comes every 250 ms while the user speaks, and the partial
            # transcripts must not give way to it.
            responder.prefill(messages, threading.Event(), audio)
            return
        with self.job():
            responder.prefill(messages, threading.Event())

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        started = time.perf_counter()
        asr = build_asr(config)
        native = None if config.naive else build_native(config, asr)
        end_of_turn = None if config.naive else build_end_of_turn(config)
        voices = build_voices(config)
        engine = cls(asr, build_llm(config), voices[0][1], SileroModel(), native=native, naive=config.naive,
                     end_of_turn=end_of_turn, voices=voices)
        log.info("models loaded in %.1f s (asr=%s, llm=%s, tts=%s)", time.perf_counter() - started,
                 config.asr_model, engine.llm.name, ", ".join(engine.voices.ids))
        tts_url = config.tts_url if any(voice.engine == "url" for voice in engine.voices.voices) else None
        engine.remote = {name: url for name, url in (("llm", config.llm_url), ("native", config.native_url),
                                                     ("tts", tts_url)) if url}
        engine.remote_down = backends.unreachable(engine.remote)
        for name, why in engine.remote_down.items():
            log.warning("the %s server is down: %s (its replies fail until it answers; /healthz tells)", name, why)
        return engine

    def warm(self, instructions: str) -> Engine:
        """Evaluate the system prompt in every LLM context of the backends that cache prompts (the
        cascade's LLM, the embedded native model), so that no session's first turn pays for it."""
        for backend in (self.llm, self.native):
            warm = getattr(backend, "warm", None)
            if warm is not None:
                started = time.perf_counter()
                warm([ChatMessage("system", instructions)])
                log.info("%s contexts warmed in %.1f s", backend.name, time.perf_counter() - started)
        return self

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.native is not None:
            self.native.close()
