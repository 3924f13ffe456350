"""Piper text-to-speech (ONNX), CPU by default; a reply's first chunk starts before it is all decoded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.cache_file import file_identity, write_cached
from voice.tts.vits_graph import (
    EXACT_TOLERANCE,
    HEAD_FRAMES,
    HEAD_LATENT,
    HEAD_PREFIX,
    find_context,
    head_graph,
    max_difference,
    split_at_decoder,
)

log = logging.getLogger(__name__)

CALIBRATION_TEXT = ("That sounds like a wonderful idea for the weekend. The capital of France is Paris. "
                    "Hello! How can I help you today? I'm sorry, but I can't do that. Okay.")
"""Spoken once at load: to check the cut graph against the whole one, and to measure the voice's level."""
FIRST_FRAMES = 16
"""Frames (of 256 samples: 0.19 s at 22,050 Hz) of a `soon` chunk's first piece."""
CUT_FORMAT = 1
"""Changes whenever what the cache keeps of a cut voice does."""
_ALL_FRAMES = 2**62
"""Frames for the head to decode all of the latent (a slice's end past the end is the end)."""


class PiperSynthesizer:
    """A Piper voice loaded once; onnxruntime sessions are safe to run from several threads.

    With `stream` (the default), the voice's graph is cut at its decoder (voice/tts/vits_graph.py).
    A chunk asked for `soon` (a reply's first: the user is waiting) comes in two pieces: the head
    graph gives the latent and the first FIRST_FRAMES frames of audio in one run, then the decoder
    alone gives the rest. Other chunks run the head on all their frames: the whole graph, as Piper
    does. One session a graph: the weights are the voice's and the decoder's (a tenth of them).
    Piper scales each sentence to its own peak, which a stream cannot do, so every chunk gets one
    fixed gain instead: the one that brings the median peak of CALIBRATION_TEXT's sentences to
    `volume`. The level stays Piper's on the whole, and one chunk's is like the next one's (peak
    scaling moves it with each sentence's loudest sample). With `cache_dir`, the cut voice is kept
    there and later loads read it instead of cutting again. Should the graph not cut (another
    export, a multi-speaker voice), chunks are synthesised as Piper does.
    """

    def __init__(self, model_path: str | Path, config_path: str | Path | None = None, *, threads: int = 2,
                 length_scale: float | None = None, speaker_id: int | None = None, volume: float = 0.9,
                 stream: bool = True, cache_dir: str | Path | None = None) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        model_path = Path(model_path)
        config_path = Path(config_path or f"{model_path}.json")
        self._threads = threads
        # Without a session until it is known whether the whole graph is needed (not when cut).
        self._voice = PiperVoice(session=None,
                                 config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))))
        self._syn_config = SynthesisConfig(length_scale=length_scale, speaker_id=speaker_id, volume=volume)
        self.sample_rate = self._voice.config.sample_rate
        self.name = model_path.stem
        self._head = self._rest = None
        self._latent = self._head_audio = ""
        self._context = self._samples_per_frame = 0
        self._gain = 1.0
        if stream and speaker_id is None:
            try:
                self._cut(model_path, volume, cache_dir)
            except Exception:  # noqa: BLE001 - only an optimisation: whole chunks work as before
                self._head = self._rest = None
                log.warning("cannot cut the Piper voice %s; synthesising whole chunks", self.name, exc_info=True)
            _return_freed_memory()
        if not self.streams:
            self._voice.session = self._session(str(model_path))

    @property
    def streams(self) -> bool:
        """Whether `soon` chunks come in pieces and every chunk at one gain (False: as Piper does)."""
        return self._head is not None

    def synthesize(self, text: str, soon: bool = False) -> Iterator[np.ndarray]:
        if not self.streams:
            for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
                yield chunk.audio_float_array.astype(np.float32)
            return
        for k, phonemes in enumerate(p for p in self._voice.phonemize(text) if p):
            for audio in self._pieces(phonemes, FIRST_FRAMES if soon and k == 0 else 0):
                yield np.clip(audio * self._gain, -1.0, 1.0).astype(np.float32)

    def pieces_difference(self, text: str) -> float:
        """The largest difference between the pieces of `text` asked for `soon` and its whole
        decode by the head, both without noise (so deterministic): 0 up to rounding."""
        sentences = [p for p in self._voice.phonemize(text) if p]
        return max((max_difference(self._noiseless(p, FIRST_FRAMES), self._noiseless(p, 0)) for p in sentences),
                   default=0.0)

    def _noiseless(self, phonemes: list[str], first: int) -> np.ndarray:
        return np.concatenate(list(self._pieces(phonemes, first, noise=False)))

    def _pieces(self, phonemes: list[str], first: int, noise: bool = True) -> Iterator[np.ndarray]:
        """The sentence's audio (unscaled): with `first` frames, those from the head and then the
        rest from the decoder; else all of it from the head (the whole graph then)."""
        context, spf = self._context, self._samples_per_frame
        decoded = first + context if first else _ALL_FRAMES
        z, head = self._head.run([HEAD_LATENT, self._head_audio],
                                 self._inputs(phonemes, noise) | {HEAD_FRAMES: np.array([decoded])})
        if z.shape[-1] <= decoded:  # the head decoded all of it
            yield head.reshape(-1)
            return
        yield head.reshape(-1)[:first * spf]
        start = first - context
        yield self._decode(np.ascontiguousarray(z[..., start:]))[context * spf:]

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self._rest.run(None, {self._latent: z})[0].reshape(-1)

    def _inputs(self, phonemes: list[str], noise: bool = True) -> dict[str, np.ndarray]:
        """The voice's inputs, as Piper makes them (without noise: a deterministic run)."""
        config, ids = self._voice.config, self._voice.phonemes_to_ids(phonemes)
        length_scale = self._syn_config.length_scale or config.length_scale
        scales = [config.noise_scale, length_scale, config.noise_w_scale] if noise else [0.0, length_scale, 0.0]
        return {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32)}

    def _session(self, model: bytes | str, spin: bool = True):  # noqa: ANN202 - onnxruntime, imported lazily
        """A session on `model` (the graph, or its file); without `spin`, its threads sleep as soon
        as a run ends."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # sentence lengths vary: an arena would keep the largest forever
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])

    def _cut(self, model_path: Path, volume: float, cache_dir: str | Path | None) -> None:
        """Cut the graph (or read the cut from `cache_dir`, where the first load keeps it) and set
        the gain."""
        cached = _cache_file(Path(cache_dir), model_path, self._syn_config.length_scale) if cache_dir else None
        if cached is not None and cached.is_file():
            cut = CutVoice.load(cached)
            self._use(cut)
        else:
            cut = self._make_cut(model_path.read_bytes())  # read only when cut here
            if cut is None:
                log.info("Piper voice %s: no single latent at its decoder; synthesising whole chunks", self.name)
                return
            if cached is not None:
                try:
                    write_cached(cached, cut.save)
                except OSError as exc:  # a read-only cache: cut again at the next start
                    log.warning("cannot keep the cut Piper voice in %s: %s", cached.parent, exc)
        self._gain = volume / max(cut.peak, 1e-3)
        log.info("Piper voice %s cut at its decoder: %d frames of context, gain %.2f", self.name, cut.context,
                 self._gain)

    def _use(self, cut: CutVoice) -> None:
        # The decoder's threads must not spin once a run is done: they would take the cores the
        # head needs at the next chunk, and the LLM right after a reply's first chunk.
        self._rest, self._latent = self._session(cut.decoder, spin=False), cut.latent
        self._head, self._head_audio = self._session(cut.head), cut.head_audio
        self._context, self._samples_per_frame = cut.context, cut.samples_per_frame

    def _make_cut(self, model: bytes) -> CutVoice | None:
        """Cut the graph, find the decoder's context, check the pieces against the whole graph
        (without noise both are deterministic), and measure the level."""
        split = split_at_decoder(model)
        if split is None:
            return None
        cut = CutVoice(head_graph(split), split.decoder.SerializeToString(), split.latent,
                       HEAD_PREFIX + split.output, 0, 0, 0.0)
        self._use(cut)
        sentences = [p for p in self._voice.phonemize(CALIBRATION_TEXT) if p]
        whole = self._session(model).run(None, self._inputs(sentences[0], noise=False))[0].reshape(-1)
        z = self._head.run([HEAD_LATENT], self._inputs(sentences[0], noise=False) | {HEAD_FRAMES: np.array([1])})[0]
        self._samples_per_frame, rest = divmod(whole.size, z.shape[-1])
        context = find_context(self._decode, z, self._samples_per_frame)
        if rest or context is None:
            raise RuntimeError("the decoder's windows do not reproduce the whole graph's audio")
        self._context = context
        if any(max_difference(self._noiseless(sentences[0], first), whole) > EXACT_TOLERANCE
               for first in (FIRST_FRAMES, 0)):
            raise RuntimeError("the pieces do not reproduce the whole graph's audio")
        peak = float(np.median([np.max(np.abs(np.concatenate(list(self._pieces(p, 0))))) for p in sentences]))
        return dataclasses.replace(cut, context=context, samples_per_frame=self._samples_per_frame, peak=peak)


@dataclass(frozen=True)
class CutVoice:
    """A voice's graph cut at its decoder, and what using it needs: kept in the models' cache, so
    that later loads skip the cutting and its checks."""

    head: bytes
    decoder: bytes
    latent: str
    head_audio: str
    context: int
    samples_per_frame: int
    peak: float
    """The median peak of CALIBRATION_TEXT's sentences, before any gain."""

    def save(self, path: Path) -> None:
        meta = {field: getattr(self, field) for field in ("latent", "head_audio", "context", "samples_per_frame",
                                                          "peak")}
        with open(path, "wb") as handle:  # a handle: np.savez would add ".npz" to the temporary name
            np.savez(handle, head=np.frombuffer(self.head, np.uint8), decoder=np.frombuffer(self.decoder, np.uint8),
                     meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> CutVoice:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(data["head"].tobytes(), data["decoder"].tobytes(), **meta)


def _cache_file(directory: Path, model_path: Path, length_scale: float | None) -> Path:
    """Named by the voice file (path, size, modification time), the length scale (the level is
    measured with it) and CUT_FORMAT."""
    key = f"{file_identity(model_path)}:{length_scale}:{CUT_FORMAT}"
    return directory / f"{model_path.stem}.cut-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _return_freed_memory() -> None:
    """Give the heap's free pages back to the system: cutting the graph goes through several copies
    of it, which glibc would otherwise keep for the life of the server."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
