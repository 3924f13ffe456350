"""What the native path's prompt costs in llama.cpp, outside the server.

    python -m benchmarks.native_prompt --out benchmarks/results/native_prompt.json

Measured on the bundled models, in alternation: one decode call of n token ids and of n
embeddings (every call reads all the weights once, so a call has a fixed cost on top of its
positions), and a first turn's native prompt for real recordings, after the cached system prompt:
the projected audio and the chat-template tail as two calls (tokens apart) and as one call of
embeddings (the server's way, voice/native/token_embeddings.py). Also the Whisper encoder's time
for each clip. Medians over --rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.native_eval import DATA, read_16k
from benchmarks.report import provenance
from benchmarks.results_page import refresh
from server.config import DEFAULT_INSTRUCTIONS
from voice import models
from voice.llm.base import ChatMessage
from voice.native.encoder import WhisperEncoder
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.model import prompt_texts
from voice.native.projector import NumpyProjector
from voice.native.token_embeddings import TokenEmbeddings

CLIPS = ["03_v2j_turn_on_living_room_lamp.wav", "18_rstt_LJ001-0004.wav"]
SIZES = [1, 8, 16, 32, 64]


def _ms(action) -> float:  # noqa: ANN001 - a callable
    started = time.perf_counter()
    action()
    return 1e3 * (time.perf_counter() - started)


def measure(rounds: int, threads: int) -> dict:
    model_path = models.gguf_model(None)
    lookup = TokenEmbeddings(model_path)
    projector = NumpyProjector.load(models.native_projector("bundled"))
    apart = EmbeddingContext(model_path, n_threads=threads, lora=projector.adapter)  # as the native path runs
    together = EmbeddingContext(model_path, n_threads=threads, embed=lookup, lora=projector.adapter)
    encoder = WhisperEncoder(None, cpu_threads=threads)
    before, after = prompt_texts([ChatMessage("system", DEFAULT_INSTRUCTIONS)])
    head, tail = apart.tokenize(before), apart.tokenize(after)
    filler = apart.tokenize(" ".join(["the quick brown fox jumps over the lazy dog"] * 12))[: max(SIZES)]

    calls: dict[str, list[float]] = {f"{kind}_{n}": [] for n in SIZES for kind in ("tokens", "embeddings")}
    prompts: dict[str, dict[str, list[float]]] = {}
    audio = {name: read_16k(DATA / name) for name in CLIPS}
    embedded = {name: projector(encoder.encode(pcm)) for name, pcm in audio.items()}
    for _ in range(rounds):
        for n in SIZES:
            apart.start([head])
            calls[f"tokens_{n}"].append(_ms(lambda n=n: apart.feed([filler[:n]])))
            apart.start([head])
            calls[f"embeddings_{n}"].append(_ms(lambda n=n: apart.feed([lookup(filler[:n])])))
        for name in CLIPS:
            row = prompts.setdefault(name, {"encode_ms": [], "two_calls_ms": [], "one_call_ms": []})
            row["encode_ms"].append(_ms(lambda name=name: projector(encoder.encode(audio[name]))))
            apart.start([head])
            together.start([head])
            row["two_calls_ms"].append(_ms(lambda name=name: apart.start([head, embedded[name], tail])))
            row["one_call_ms"].append(_ms(lambda name=name: together.start([head, embedded[name], tail])))
    apart.close()
    together.close()
    return {
        "rounds": rounds,
        "threads": threads,
        "decode_call_ms": {key: statistics.median(values) for key, values in calls.items()},
        "native_prompt": {name: {"audio_positions": int(embedded[name].shape[0]), "tail_tokens": len(tail),
                                 **{key: statistics.median(values) for key, values in row.items()}}
                          for name, row in prompts.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_prompt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/native_prompt.json"))
    args = parser.parse_args(argv)
    report = {**provenance("benchmarks.native_prompt", argv), **measure(args.rounds, args.threads)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    refresh(args.out.parent)
    calls = report["decode_call_ms"]
    print("one decode call, ms (tokens / embeddings): " + ", ".join(
        f"{n}: {calls[f'tokens_{n}']:.0f} / {calls[f'embeddings_{n}']:.0f}" for n in SIZES))
    for name, row in report["native_prompt"].items():
        print(f"{name}: encode {row['encode_ms']:.0f} ms; {row['audio_positions']} audio positions + "
              f"{row['tail_tokens']} tail tokens: two calls {row['two_calls_ms']:.0f} ms, "
              f"one call {row['one_call_ms']:.0f} ms")
    return report


if __name__ == "__main__":
    main()
