"""What streaming Piper's decoder in windows does to the first audio of a chunk, its total time and level.

The chunks are those the server would speak (voice/text.py `SpeechChunker`, fed word by word as
the LLM streams) of the replies saved in a latency benchmark's JSON (`--replies`): the replies'
first chunks (what the first audio of a turn waits for) and their later chunks. Each variant runs
in a fresh process, since onnxruntime's threads outlive the runs that woke them:

- `whole`: Piper's synthesis, each chunk decoded whole and scaled to its own peak (before);
- `streamed`: voice/tts/piper.py now: every chunk at a fixed gain, and the first chunks asked for
  `soon` (as voice/response.py does), so made in two pieces by the graph cut at its decoder.

Prints and saves, per variant and kind of chunk, the median time to the first audio and to the
end, the median level (RMS, dBFS) and the share of clipped samples; and for `streamed`, the largest
difference between a first chunk's pieces and the chunk decoded whole (without noise: they must be
the same; the voice checks at load that the latter is the whole graph's audio).

    python -m benchmarks.tts_stream [--replies benchmarks/results/latency.json] [--chunks 40] [--repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import provenance, save_results

OUT = Path(__file__).parent / "results"
VARIANTS = ("whole", "streamed")


def reply_chunks(path: str | Path, limit: int) -> dict[str, list[str]]:
    """The distinct first and later chunks of the replies in a latency benchmark's JSON (at most
    `limit` of each, in the order met)."""
    from voice.text import SpeechChunker

    turns = json.loads(Path(path).read_text(encoding="utf-8"))["turns"]
    chunks: dict[str, list[str]] = {"first": [], "later": []}
    for rows in turns.values():
        for turn in rows:
            chunker = SpeechChunker()
            spoken = [c for word in re.findall(r"\s*\S+", turn.get("reply") or "") for c in chunker.feed(word)]
            for k, chunk in enumerate(spoken + chunker.flush()):
                kind = chunks["first" if k == 0 else "later"]
                if chunk not in kind and len(kind) < limit:
                    kind.append(chunk)
    return chunks


def run_variant(variant: str, chunks: dict[str, list[str]], repeats: int) -> dict[str, Any]:
    """One variant, in this process (call it in a fresh one)."""
    from voice import models
    from voice.audio import rms_dbfs
    from voice.tts.piper import PiperSynthesizer

    tts = PiperSynthesizer(*models.piper_voice(None), stream=variant == "streamed")
    if tts.streams != (variant == "streamed"):
        raise RuntimeError(f"the {variant} variant did not load as such")
    result: dict[str, Any] = {}
    for kind, texts in chunks.items():
        firsts, totals, levels, clipped, diffs = [], [], [], [], []
        for text in texts:
            for _ in range(repeats):
                started, first = time.perf_counter(), None
                pieces = []
                for piece in tts.synthesize(text, soon=kind == "first"):
                    first = first if first is not None else time.perf_counter()
                    pieces.append(piece)
                totals.append(1e3 * (time.perf_counter() - started))
                firsts.append(1e3 * ((first or time.perf_counter()) - started))
            audio = np.concatenate(pieces)
            levels.append(rms_dbfs(audio))
            clipped.append(float(np.mean(np.abs(audio) >= 0.999)))
            if tts.streams:
                diffs.append(tts.pieces_difference(text))
        result[kind] = {"chunks": len(texts), "first_audio_ms": round(statistics.median(firsts), 1),
                        "total_ms": round(statistics.median(totals), 1),
                        "level_dbfs": round(statistics.median(levels), 2),
                        "clipped_share": round(float(np.mean(clipped)), 6)}
        if diffs:
            result[kind]["pieces_max_difference"] = float(max(diffs))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", default=str(OUT / "latency.json"), help="a latency benchmark's JSON")
    parser.add_argument("--chunks", type=int, default=40, help="at most this many first and later chunks")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, this process
    args = parser.parse_args(argv)
    chunks = reply_chunks(args.replies, args.chunks)
    if args.variant:
        print(json.dumps(run_variant(args.variant, chunks, args.repeats)))
        return {}
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.tts_stream", "--variant", variant, "--replies",
                               args.replies, "--chunks", str(args.chunks), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=True)
        summary[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(variant, summary[variant], flush=True)
    for kind in chunks:
        whole, streamed = summary["whole"][kind], summary["streamed"][kind]
        print(f"{kind} chunks ({whole['chunks']}): first audio {whole['first_audio_ms']} -> "
              f"{streamed['first_audio_ms']} ms, total {whole['total_ms']} -> {streamed['total_ms']} ms, level "
              f"{whole['level_dbfs']} -> {streamed['level_dbfs']} dBFS, clipped {streamed['clipped_share']:.4%}, "
              f"pieces vs whole {streamed['pieces_max_difference']:.1e}")
    result = {**provenance("benchmarks.tts_stream", argv), "replies": args.replies, "repeats": args.repeats,
              "chunks": chunks, "summary": summary}
    save_results(args.out, "tts_stream.json", result)
    return result


if __name__ == "__main__":
    main()
