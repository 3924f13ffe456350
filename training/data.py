"""Training data for the projector, made locally: nothing is downloaded.

Two kinds of example:
- an assistant request (training/prompts.py), with two targets: the LLM's own reply to the
  utterance as text (distillation: greedy llama.cpp, cached in replies.jsonl) and the utterance
  itself for the "repeat what I said" task;
- with --sentences, a plain English sentence (training/sentences.py: Debian's fortune files,
  WordNet's example sentences with --sentence-source wordnet, or GCIDE's quotations with
  --sentence-source gcide; none sharing four words in a row with the --holdout texts), for the
  "repeat" task only.

Each is spoken by one of several voices (training/speakers.py: Piper, and espeak-ng and flite
when they are installed), augmented (training/augment.py: speed, silence, level, and, in
shares, reverberation, equaliser colouring, band limits and noise), and its Whisper encoder states
are cached (float16 .npy; the audio itself is not kept unless asked).

Layout of a data directory:
    info.json          encoder, LLM, seed, options
    manifest.jsonl     one example a line: id, task, text, system, reply, reply_ids, finished, features, frames, ...
    features/ID.npy    encoder states (frames, 384) float16
    replies.jsonl      the distilled replies, keyed by (system, utterance, max_tokens, LLM)
    audio/ID.wav       16 kHz audio, only with --save-audio

    python -m training.data --count 2000 --out data/native
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.augment import AugmentOptions, augment
from training.batch_generate import BatchedGreedy
from training.prompts import generate_prompts
from training.sentences import MAX_WORDS, SOURCES, general_sentences
from training.speakers import Speaker
from voice import models
from voice.audio import ASR_RATE
from voice.llm.base import ChatMessage
from voice.native.early_encoding import streamed_states
from voice.native.model import ENCODER_LEFT_CONTEXT_S

if TYPE_CHECKING:
    from voice.native.encoder import WhisperEncoder

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


@dataclass(frozen=True)
class DataOptions:
    count: int = 1000
    """Assistant requests (each with a distilled reply)."""
    sentences: int = 0
    """Plain sentences for the repeat task only."""
    sentence_start: int = 0
    """How many of the seed's sentence order to pass over (those an earlier directory of the same
    seed took): the sentences are numbers `sentence_start` to `sentence_start + sentences - 1`."""
    sentence_max_words: int = MAX_WORDS
    """Longest sentence taken (in words)."""
    sentence_source: str = "fortunes"
    """Where the sentences come from (training/sentences.py: SOURCES)."""
    holdout: tuple[str, ...] = ()
    """Texts no sentence may share four words in a row with (the evaluation's transcripts)."""
    seed: int = 0
    reply_max_tokens: int = 64
    espeak_share: float = 0.3
    """Share of examples spoken by espeak-ng (when it is installed)."""
    flite_share: float = 0.0
    """Share spoken by flite (when it is installed)."""
    augment: AugmentOptions = AugmentOptions()
    save_audio: bool = False
    padded_window: bool = False
    """Encode each clip padded to Whisper's 30 s window, as llama.cpp's libmtmd does."""
    streamed_margins: tuple[float, ...] = ()
    """Encode each clip as the server evaluates speech while the user speaks (voice/native/early_encoding.py),
    with a margin drawn from these (seconds) per example; empty: one encoding of the whole clip."""
    streamed_stack: int = 4
    """Encoder frames per LLM position of the projector the streamed encodings are for."""
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
    from voice.native.encoder import WhisperEncoder

    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    if options.save_audio:
        (out / "audio").mkdir(exist_ok=True)
    done = {example["id"] for example in load_manifest(out)}
    encoder = WhisperEncoder(options.asr_model)
    speaker = Speaker(options.espeak_share, options.flite_share)
    for name in ("espeak", "flite"):
        if not getattr(speaker, name):
            log.info("%s is not installed: it speaks none of the examples", name)
    replies = ReplyCache(Path(options.reply_cache) if options.reply_cache else out / "replies.jsonl",
                         options.llm_model, options.reply_max_tokens)
    info = {"encoder": encoder.name, "encoder_dim": encoder.dim, "llm": replies.model_path.name,
            "seed": options.seed, "count": options.count, "sentences": options.sentences,
            "sentence_start": options.sentence_start, "sentence_max_words": options.sentence_max_words,
            "sentence_source": options.sentence_source,
            "reply_max_tokens": options.reply_max_tokens, "espeak": speaker.espeak_share,
            "flite": speaker.flite_share, "augment": asdict(options.augment),
            "padded_window": options.padded_window, "streamed_margins": list(options.streamed_margins),
            "streamed_stack": options.streamed_stack}
    if done and (out / "info.json").is_file():
        before = json.loads((out / "info.json").read_text(encoding="utf-8"))
        before.setdefault("sentence_max_words", MAX_WORDS)  # directories made before the options
        before.setdefault("sentence_source", "fortunes")
        before.setdefault("padded_window", False)
        before.setdefault("streamed_margins", [])
        before.setdefault("streamed_stack", 4)
        # The sentences are picked by index from a list these settings decide: completing a directory
        # with others would give an id another text.
        changed = [key for key in ("encoder", "llm", "seed", "reply_max_tokens", "sentence_max_words",
                                   "sentence_source", "padded_window", "streamed_margins", "streamed_stack")
                   if before.get(key) != info[key]]
        if changed:
            raise SystemExit(f"{out} was made with other settings ({', '.join(changed)}): use another --out")
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    systems, weights = zip(*SYSTEM_PROMPTS, strict=True)
    # (id, text, its random stream, its system prompt: the stream's first draw, its augmentation stream)
    requests, sentences = [], []
    for index, text in enumerate(generate_prompts(options.count, options.seed)):
        if f"{index:06d}" not in done:
            rng = random.Random(f"{options.seed}-{index}")
            requests.append((f"{index:06d}", text, rng, rng.choices(systems, weights=weights)[0],
                             [options.seed, index]))
    if options.sentences:
        missing = [path for path in options.holdout if not Path(path).is_file()]
        if missing:
            raise SystemExit(f"--holdout: no such file: {', '.join(missing)}")
        holdout = [Path(path).read_text(encoding="utf-8") for path in options.holdout]
        texts = general_sentences(options.sentence_start + options.sentences, options.seed, holdout,
                                  max_words=options.sentence_max_words, source=options.sentence_source)
        for index, text in enumerate(texts[options.sentence_start:], options.sentence_start):
            if f"s{index:06d}" not in done:
                sentences.append((f"s{index:06d}", text, random.Random(f"{options.seed}-s{index}"), None,
                                  [options.seed, index, 1]))
    replies.prefetch([(system, text) for _, text, _, system, _ in requests], reply_progress)
    jobs = [(request, replies.reply(request[3], request[1])) for request in requests]
    jobs += [(sentence, None) for sentence in sentences]
    for number, ((example_id, text, rng, system, stream), reply) in enumerate(jobs, len(done) + 1):
        _make_example(out, example_id, text, rng, np.random.default_rng(stream), system, options, speaker,
                      encoder, reply)
        if progress:
            progress(number, len(done) + len(jobs))
    return out / "manifest.jsonl"


def _make_example(out: Path, example_id: str, text: str, rng: random.Random, noise_rng: np.random.Generator,
                  system: str | None, options: DataOptions, speaker: Speaker, encoder: WhisperEncoder,
                  reply: dict | None) -> None:
    """Speak, augment and encode one example; append it to the manifest."""
    import soundfile

    audio, voice = speaker.speak(text, rng)
    audio, augmentation = augment(audio, noise_rng, options.augment)
    streamed: dict = {}
    if options.streamed_margins:
        margin = rng.choice(options.streamed_margins)
        features, early = streamed_states(encoder.encode, audio, margin_s=margin, stack=options.streamed_stack,
                                          left_context_s=ENCODER_LEFT_CONTEXT_S)
        streamed = {"streamed_margin_s": margin, "early_positions": early}
    else:
        features = encoder.encode(audio, pad_to_window=options.padded_window)
    np.save(out / "features" / f"{example_id}.npy", features.astype(np.float16))
    if options.save_audio:
        soundfile.write(out / "audio" / f"{example_id}.wav", audio, ASR_RATE)
    example = {"id": example_id, "task": "both" if reply else "repeat", "text": text, "system": system,
               "reply": reply and reply["reply"], "reply_ids": reply and reply["reply_ids"],
               "finished": reply and reply["finished"], "features": f"features/{example_id}.npy",
               "frames": int(features.shape[0]), "seconds": round(audio.size / ASR_RATE, 3), "voice": voice,
               "augmentation": augmentation, **streamed}
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(example) + "\n")


def non_negative(text: str) -> int:
    """An argparse type: a whole number of 0 or more."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=non_negative, default=1000,
                        help="assistant requests (distinct utterances) to make")
    parser.add_argument("--sentences", type=non_negative, default=0,
                        help="plain sentences (from --sentence-source), for the repeat task only")
    parser.add_argument("--sentence-start", type=non_negative, default=0,
                        help="pass over the first N sentences of this seed's order (those a directory made "
                             "with the same seed and source took); ids keep their place in the order")
    parser.add_argument("--sentence-source", choices=sorted(SOURCES), default="fortunes",
                        help="Debian's fortune files, WordNet's example sentences or GCIDE's quotations "
                             "(default fortunes)")
    parser.add_argument("--sentence-max-words", type=int, default=MAX_WORDS,
                        help=f"longest sentence taken, in words (default {MAX_WORDS})")
    parser.add_argument("--holdout", nargs="*", default=[],
                        help="text files (the evaluation's transcripts) no sentence may share 4 words in a row with")
    parser.add_argument("--out", required=True, help="data directory (created, or completed if it exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-max-tokens", type=int, default=64, help="length cap of the distilled replies")
    parser.add_argument("--reply-cache", default=None, help="replies.jsonl to share between data directories")
    parser.add_argument("--espeak-share", type=float, default=0.3, help="share spoken by espeak-ng, if installed")
    parser.add_argument("--flite-share", type=float, default=0.0, help="share spoken by flite, if installed")
    parser.add_argument("--noise-share", type=float, default=0.7, help="share of examples with added noise")
    parser.add_argument("--reverb-share", type=float, default=0.0, help="share with room reverberation")
    parser.add_argument("--eq-share", type=float, default=0.0, help="share with a random equaliser colouring")
    parser.add_argument("--band-share", type=float, default=0.0, help="share band-limited (4-6 kHz)")
    parser.add_argument("--save-audio", action="store_true", help="also keep the 16 kHz audio (audio/ID.wav)")
    parser.add_argument("--padded-window", action="store_true",
                        help="encode each clip padded to Whisper's 30 s window, as llama.cpp serves the model "
                             "(training/mmproj.py); training then lays the prompt out as llama-server does")
    parser.add_argument("--streamed-margins", type=float, nargs="*", default=[],
                        help="encode each clip as the server evaluates speech while the user speaks, with a "
                             "margin (s) drawn from these per example (voice/native/early_encoding.py)")
    parser.add_argument("--streamed-stack", type=int, default=4,
                        help="encoder frames per position of the projector the streamed encodings are for")
    parser.add_argument("--llm-model", default=None, help="GGUF that writes the replies (default: bundled)")
    parser.add_argument("--asr-model", default=None, help="Whisper model of the encoder (default: bundled)")
    args = parser.parse_args(argv)
    if args.streamed_margins and args.padded_window:
        parser.error("--streamed-margins and --padded-window are two ways to encode a clip: choose one")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    augmentation = AugmentOptions(noise_share=args.noise_share, reverb_share=args.reverb_share,
                                  eq_share=args.eq_share, band_share=args.band_share)
    options = DataOptions(count=args.count, sentences=args.sentences, sentence_start=args.sentence_start,
                          sentence_max_words=args.sentence_max_words,
                          sentence_source=args.sentence_source,
                          holdout=tuple(args.holdout), seed=args.seed,
                          reply_max_tokens=args.reply_max_tokens, espeak_share=args.espeak_share,
                          flite_share=args.flite_share, augment=augmentation, save_audio=args.save_audio,
                          llm_model=args.llm_model, asr_model=args.asr_model, reply_cache=args.reply_cache,
                          padded_window=args.padded_window, streamed_margins=tuple(args.streamed_margins),
                          streamed_stack=args.streamed_stack)
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
