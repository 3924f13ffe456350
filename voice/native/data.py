"""Training data for the projector, made locally: nothing is downloaded.

For each example: a generated user utterance (voice/native/prompts.py) is spoken by Piper (the
bundled voice, random rate and prosody) or, when `espeak-ng` is installed, sometimes by eSpeak;
then speed perturbation, silence padding, level and noise augmentation; the Whisper encoder
states are cached (float16 .npy; the audio itself is not kept unless asked). The target is the
LLM's own reply to the utterance as text (distillation: greedy llama.cpp, cached in
replies.jsonl), plus the utterance itself for the "repeat what I said" task.

Layout of a data directory:
    info.json          encoder, LLM, seed
    manifest.jsonl     one example a line: id, text, system, reply, reply_ids, finished, features, frames, ...
    features/ID.npy    encoder states (frames, 384) float16
    replies.jsonl      the distilled replies, keyed by (system, utterance, max_tokens, LLM)
    audio/ID.wav       16 kHz audio, only with --save-audio

    python -m voice.native.data --count 2000 --out data/native
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice import models
from voice.audio import ASR_RATE, resample, rms_dbfs
from voice.llm.base import ChatMessage
from voice.native.batch_generate import BatchedGreedy
from voice.native.prompts import generate_prompts

log = logging.getLogger(__name__)

SERVER_INSTRUCTIONS = (  # the server's default session instructions (server/config.py DEFAULT_INSTRUCTIONS)
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short, plain sentences. Never use lists, markdown, code or emoji."
)
SYSTEM_PROMPTS: list[tuple[str | None, float]] = [
    (SERVER_INSTRUCTIONS, 0.7),
    (None, 0.15),  # no system message: the chat template's own default
    ("You are a helpful assistant. Answer briefly.", 0.15),
]
_ESPEAK_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m7", "+f1", "+f2", "+f3", "+f4", "+klatt"]


@dataclass(frozen=True)
class DataOptions:
    count: int = 1000
    seed: int = 0
    reply_max_tokens: int = 64
    espeak_share: float = 0.3
    """Share of examples spoken by espeak-ng (when it is installed)."""
    noise_share: float = 0.7
    save_audio: bool = False
    llm_model: str | None = None
    asr_model: str | None = None
    reply_cache: str | None = None


def load_manifest(data_dir: str | Path) -> list[dict]:
    path = Path(data_dir) / "manifest.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_features(data_dir: str | Path, example: dict) -> np.ndarray:
    """The cached encoder states of one example, float32 (frames, dim)."""
    return np.load(Path(data_dir) / example["features"]).astype(np.float32)


class Speaker:
    """Text to 16 kHz speech with random voice settings: Piper, and espeak-ng when installed."""

    def __init__(self, espeak_share: float = 0.3, threads: int = 2) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        model, config = models.piper_voice(None)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = False
        self._piper = PiperVoice(
            session=onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"]),
            config=PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8"))),
        )
        self.espeak = shutil.which("espeak-ng")
        self.espeak_share = espeak_share if self.espeak else 0.0

    def speak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        if rng.random() < self.espeak_share:
            return self._espeak(text, rng)
        return self._piper_speak(text, rng)

    def _piper_speak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        from piper.config import SynthesisConfig

        settings = {"tts": "piper", "length_scale": round(rng.uniform(0.75, 1.35), 3),
                    "noise_scale": round(rng.uniform(0.4, 0.9), 3), "noise_w_scale": round(rng.uniform(0.5, 1.1), 3)}
        config = SynthesisConfig(length_scale=settings["length_scale"], noise_scale=settings["noise_scale"],
                                 noise_w_scale=settings["noise_w_scale"])
        chunks = [chunk.audio_float_array for chunk in self._piper.synthesize(text, syn_config=config)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return resample(audio, self._piper.config.sample_rate, ASR_RATE), settings

    def _espeak(self, text: str, rng: random.Random) -> tuple[np.ndarray, dict]:
        import soundfile

        settings = {"tts": "espeak-ng", "voice": "en-us" + rng.choice(_ESPEAK_VARIANTS),
                    "speed": rng.randint(130, 210), "pitch": rng.randint(25, 75)}
        wav = subprocess.run([self.espeak, "-v", settings["voice"], "-s", str(settings["speed"]),
                              "-p", str(settings["pitch"]), "--stdout", text],
                             check=True, capture_output=True, timeout=60).stdout
        audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        return resample(audio.reshape(len(audio), -1)[:, 0], rate, ASR_RATE), settings


def augment(audio: np.ndarray, rng: np.random.Generator, noise_share: float = 0.7) -> tuple[np.ndarray, dict]:
    """Speed perturbation, silence around the speech, level, and white or pink noise at a random SNR."""
    speed = float(rng.uniform(0.9, 1.1))
    audio = resample(audio, int(ASR_RATE * speed), ASR_RATE)  # faster and higher (or slower and lower)
    lead, tail = (int(rng.uniform(0.02, 0.4) * ASR_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    level = float(rng.uniform(-38.0, -14.0))
    audio = audio * np.float32(10 ** ((level - rms_dbfs(audio)) / 20)) if audio.any() else audio
    info: dict = {"speed": round(speed, 3), "level_dbfs": round(level, 1), "noise": None}
    if rng.random() < noise_share:
        kind = "pink" if rng.random() < 0.5 else "white"
        snr = float(rng.uniform(5.0, 40.0))
        noise = _noise(audio.size, kind, rng)
        noise *= np.float32(10 ** ((rms_dbfs(audio) - snr - rms_dbfs(noise)) / 20))
        audio = audio + noise
        info.update(noise=kind, snr_db=round(snr, 1))
    return np.clip(audio, -1.0, 1.0).astype(np.float32), info


def _noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white" or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))  # 1/f power
    return np.fft.irfft(spectrum, n).astype(np.float32)


class ReplyCache:
    """The LLM's own replies to text prompts (greedy llama.cpp, `group_size` prompts decoded
    together), generated once and kept in a jsonl file."""

    def __init__(self, path: Path, llm_model: str | None, max_tokens: int, *, group_size: int = 16,
                 seq_ctx: int = 256) -> None:
        self.path = path
        self.group_size = group_size
        self.seq_ctx = seq_ctx
        self.model_path = models.gguf_model(llm_model)
        self.max_tokens = max_tokens
        self._entries: dict[str, dict] = {}
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry
        self._generator: BatchedGreedy | None = None

    def key(self, system: str | None, text: str) -> str:
        return hashlib.sha1(json.dumps([system, text, self.max_tokens, self.model_path.name]).encode()).hexdigest()

    def reply(self, system: str | None, text: str) -> dict:
        """The cached reply, generated now if it is not there yet."""
        self.prefetch([(system, text)])
        return self._entries[self.key(system, text)]

    def prefetch(self, requests: list[tuple[str | None, str]],
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Generate the missing replies to (system, utterance) pairs, many at a time, grouped by
        system prompt (its tokens are decoded once per group)."""
        from voice.native.model import prompt_texts

        missing: dict[str, tuple[str | None, str]] = {}
        for system, text in requests:
            key = self.key(system, text)
            if key not in self._entries:
                missing[key] = (system, text)
        if not missing:
            return
        if self._generator is None:
            self._generator = BatchedGreedy(self.model_path, n_seq=self.group_size, seq_ctx=self.seq_ctx)
        pending = sorted(missing.items(), key=lambda item: item[1][0] or "")
        done = 0
        for start in range(0, len(pending), self.group_size):
            group = pending[start:start + self.group_size]
            prompts = []
            for _, (system, text) in group:
                before, after = prompt_texts([ChatMessage("system", system)] if system else [])
                prompts.append(self._generator.tokenize(before + text + after))
            generated = self._generator.generate(prompts, self.max_tokens)
            with open(self.path, "a", encoding="utf-8") as handle:
                for (key, (system, text)), reply in zip(group, generated, strict=True):
                    entry = {"key": key, "system": system, "prompt": text,
                             "reply": self._generator.detokenize(reply.ids), "reply_ids": reply.ids,
                             "finished": reply.finished}
                    handle.write(json.dumps(entry) + "\n")
                    self._entries[key] = entry
            done += len(group)
            if progress:
                progress(done, len(pending))


def build(out: str | Path, options: DataOptions, progress: Callable[[int, int], None] | None = None,
          reply_progress: Callable[[int, int], None] | None = None) -> Path:
    """Create (or complete: finished examples are kept) a data directory; returns the manifest path.
    The replies are generated first, all of them (`reply_progress`), then the speech (`progress`)."""
    import soundfile

    from voice.native.encoder import WhisperEncoder

    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    if options.save_audio:
        (out / "audio").mkdir(exist_ok=True)
    done = {example["id"] for example in load_manifest(out)}
    encoder = WhisperEncoder(options.asr_model)
    speaker = Speaker(options.espeak_share)
    if not speaker.espeak:
        log.info("espeak-ng is not installed: every example is spoken by Piper")
    replies = ReplyCache(Path(options.reply_cache) if options.reply_cache else out / "replies.jsonl",
                         options.llm_model, options.reply_max_tokens)
    info = {"encoder": encoder.name, "encoder_dim": encoder.dim, "llm": replies.model_path.name,
            "seed": options.seed, "count": options.count, "reply_max_tokens": options.reply_max_tokens,
            "espeak": bool(speaker.espeak)}
    if done and (out / "info.json").is_file():
        before = json.loads((out / "info.json").read_text(encoding="utf-8"))
        changed = [key for key in ("encoder", "llm", "seed", "reply_max_tokens") if before.get(key) != info[key]]
        if changed:
            raise SystemExit(f"{out} was made with other settings ({', '.join(changed)}): use another --out")
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    prompts = generate_prompts(options.count, options.seed)
    systems, weights = zip(*SYSTEM_PROMPTS, strict=True)
    manifest = out / "manifest.jsonl"
    pending = []  # (index, text, its random stream, its system prompt: the stream's first draw)
    for index, text in enumerate(prompts):
        if f"{index:06d}" not in done:
            rng = random.Random(f"{options.seed}-{index}")
            pending.append((index, text, rng, rng.choices(systems, weights=weights)[0]))
    replies.prefetch([(system, text) for _, text, _, system in pending], reply_progress)
    for index, text, rng, system in pending:
        example_id = f"{index:06d}"
        reply = replies.reply(system, text)
        audio, voice = speaker.speak(text, rng)
        audio, augmentation = augment(audio, np.random.default_rng([options.seed, index]), options.noise_share)
        features = encoder.encode(audio)
        np.save(out / "features" / f"{example_id}.npy", features.astype(np.float16))
        if options.save_audio:
            soundfile.write(out / "audio" / f"{example_id}.wav", audio, ASR_RATE)
        example = {"id": example_id, "text": text, "system": system, "reply": reply["reply"],
                   "reply_ids": reply["reply_ids"], "finished": reply["finished"],
                   "features": f"features/{example_id}.npy", "frames": int(features.shape[0]),
                   "seconds": round(audio.size / ASR_RATE, 3), "voice": voice, "augmentation": augmentation}
        with open(manifest, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(example) + "\n")
        if progress:
            progress(index + 1, len(prompts))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voice.native.data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="examples (distinct utterances) to make")
    parser.add_argument("--out", required=True, help="data directory (created, or completed if it exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-max-tokens", type=int, default=64, help="length cap of the distilled replies")
    parser.add_argument("--reply-cache", default=None, help="replies.jsonl to share between data directories")
    parser.add_argument("--espeak-share", type=float, default=0.3, help="share spoken by espeak-ng, if installed")
    parser.add_argument("--noise-share", type=float, default=0.7, help="share of examples with added noise")
    parser.add_argument("--save-audio", action="store_true", help="also keep the 16 kHz audio (audio/ID.wav)")
    parser.add_argument("--llm-model", default=None, help="GGUF that writes the replies (default: bundled)")
    parser.add_argument("--asr-model", default=None, help="Whisper model of the encoder (default: bundled)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = DataOptions(count=args.count, seed=args.seed, reply_max_tokens=args.reply_max_tokens,
                          espeak_share=args.espeak_share, noise_share=args.noise_share, save_audio=args.save_audio,
                          llm_model=args.llm_model, asr_model=args.asr_model, reply_cache=args.reply_cache)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            log.info("%d/%d examples (%.1f s)", done, total, time.monotonic() - started)

    def reply_progress(done: int, total: int) -> None:
        if done % 400 < 16 or done == total:
            log.info("%d/%d replies (%.1f s)", done, total, time.monotonic() - started)

    manifest = build(args.out, options, progress, reply_progress)
    log.info("%d examples in %s", len(load_manifest(args.out)), manifest)


if __name__ == "__main__":
    main()
