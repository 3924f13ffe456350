"""What the LoRA costs the native path's llama.cpp at run time, applied as an adapter or merged.

The same prompts (chat template, a real recording's projected audio, the template's tail) are
decoded and answered by three contexts: the plain model; the plain model with the projector's
adapter applied by llama.cpp (its low-rank products beside every adapted matmul); and the copy
with the adapter merged into the weights (voice/native/merge.py, what the server runs). Measured:
the prompt's evaluation (what the first token waits for) and the time per generated token, best
of `--repeats`, medians over the 20 real recordings of benchmarks/native_eval.py.

    python -m benchmarks.native_adapter --projector bundled [--tokens 24] [--repeats 3] [--clips N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.native_eval import load_recordings
from benchmarks.report import provenance, save_results
from voice import models
from voice.llm.base import ChatMessage
from voice.native.encoder import WhisperEncoder
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.merge import merged_model
from voice.native.model import prompt_texts
from voice.native.projector import NumpyProjector

OUT = Path(__file__).parent / "results"
SYSTEM = "You are a helpful voice assistant. Answer briefly."


def time_prompt(context: EmbeddingContext, pieces: list, tokens: int) -> tuple[float, float, int]:
    """(prompt ms, ms per generated token, tokens generated) for one fresh decode of `pieces`."""
    context.reset()
    started = time.perf_counter()
    context.start(pieces)
    evaluated = time.perf_counter()
    generated = sum(1 for _ in context.generate(tokens))
    ended = time.perf_counter()
    return 1e3 * (evaluated - started), 1e3 * (ended - evaluated) / max(1, generated), generated


def run(projector_spec: str, tokens: int, repeats: int, clips: int | None = None) -> dict[str, Any]:
    path = models.native_projector(projector_spec)
    projector = NumpyProjector.load(path)
    if projector.adapter is None:
        raise SystemExit(f"{path} has no LoRA adapter to measure")
    llm = models.gguf_model(None)
    encoder = WhisperEncoder(None)
    merged = merged_model(models.llama_file(llm), projector.adapter, models.models_dir())
    contexts = {"plain": EmbeddingContext(llm, n_ctx=1024),
                "adapter": EmbeddingContext(llm, n_ctx=1024, lora=projector.adapter),
                "merged": EmbeddingContext(merged, n_ctx=1024)}
    before, after = prompt_texts([ChatMessage("system", SYSTEM)])
    head, tail = contexts["plain"].tokenize(before), contexts["plain"].tokenize(after)
    rows: list[dict[str, Any]] = []
    for recording in load_recordings()[:clips]:
        pieces = [head, projector(encoder.encode(recording.audio_16k)), tail]
        row: dict[str, Any] = {"clip": recording.name, "positions": sum(len(piece) for piece in pieces)}
        for name, context in contexts.items():
            # Greedy, so every repeat generates the same tokens: the best time is the least disturbed.
            runs = [time_prompt(context, pieces, tokens) for _ in range(repeats)]
            row[name] = {"prompt_ms": round(min(r[0] for r in runs), 1),
                         "per_token_ms": round(min(r[1] for r in runs), 2), "generated": runs[0][2]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for context in contexts.values():
        context.close()
    summary = {name: {"prompt_ms_median": round(statistics.median(r[name]["prompt_ms"] for r in rows), 1),
                      "per_token_ms_median": round(statistics.median(r[name]["per_token_ms"] for r in rows), 2)}
               for name in contexts}
    for name in ("adapter", "merged"):
        summary[f"{name}_prompt_ratio"] = round(summary[name]["prompt_ms_median"]
                                                / summary["plain"]["prompt_ms_median"], 3)
        summary[f"{name}_per_token_ratio"] = round(summary[name]["per_token_ms_median"]
                                                   / summary["plain"]["per_token_ms_median"], 3)
    return {"projector": str(path), "adapter": str(projector.adapter), "tokens": tokens, "repeats": repeats,
            "clips": len(rows), "summary": summary, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projector", default="bundled", help="projector .npz with an adapter ('bundled')")
    parser.add_argument("--tokens", type=int, default=24, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=None, help="only the first CLIPS real recordings")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    stamp = provenance("benchmarks.native_adapter", argv)
    result = {**stamp, **run(args.projector, args.tokens, args.repeats, args.clips)}
    save_results(args.out, "native_adapter.json", result)
    return result


if __name__ == "__main__":
    main()
