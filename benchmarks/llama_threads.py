"""What it costs llama.cpp to be called from several threads, and what one compute thread saves.

llama.cpp's CPU backend runs each graph on a libgomp team owned by the calling thread
(voice/llm/compute_thread.py). Each case runs in a fresh process, since teams outlive the calls
that made them: SmolLM2 (the cascade's Q8_0 copy) generates `--tokens` tokens greedily after a
short chat prompt, driven

- `one thread`: always from the same thread (what a single-threaded script does);
- `pool, unrouted`: from a pool of worker threads, each decode on the thread that asks (the server
  before voice/llm/compute_thread.py);
- `pool, routed`: from the same pool, each decode on the compute thread (the server now);
- `two at once, unrouted` / `routed`: two replies generated at the same time from two threads.

Prints and saves the median time per generated token and to the first token.

    python -m benchmarks.llama_threads [--tokens 30] [--repeats 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.report import provenance, save_results

OUT = Path(__file__).parent / "results"
CASES = {
    "one thread": ("one", False),
    "pool, unrouted": ("pool", False),
    "pool, routed": ("pool", True),
    "two at once, unrouted": ("concurrent", False),
    "two at once, routed": ("concurrent", True),
}
PROMPT = [{"role": "system", "content": "You are a helpful voice assistant. Answer briefly."},
          {"role": "user", "content": "Turn on the living room lamp."}]


def _generate(llama: Any, tokens: int) -> tuple[float, list[float]]:
    """(ms to the first token, ms between tokens) of one greedy reply."""
    started = time.perf_counter()
    stamps = [time.perf_counter() for _ in llama.create_chat_completion(
        messages=PROMPT, stream=True, max_tokens=tokens, temperature=0.0)]
    return 1e3 * (stamps[0] - started), [1e3 * (b - a) for a, b in zip(stamps, stamps[1:], strict=False)]


def run_case(how: str, routed: bool, tokens: int, repeats: int) -> dict[str, Any]:
    """One case, in this process (call it in a fresh one)."""
    from llama_cpp import Llama

    from voice import models
    from voice.llm.compute_thread import route_decodes

    path = str(models.llama_file(models.gguf_model(None)))
    contexts = [Llama(model_path=path, n_ctx=1024, n_threads=2, verbose=False) for _ in range(2)]
    if routed:
        for context in contexts:
            route_decodes(context)
    _generate(contexts[0], 2)  # load the weights' pages
    firsts: list[float] = []
    gaps: list[float] = []

    def record(result: tuple[float, list[float]]) -> None:
        firsts.append(result[0])
        gaps.extend(result[1])

    if how == "one":
        for _ in range(repeats):
            record(_generate(contexts[0], tokens))
    elif how == "pool":
        with ThreadPoolExecutor(4) as pool:
            for _ in range(repeats):  # the pool hands the calls to different workers over time
                record(pool.submit(_generate, contexts[0], tokens).result())
                time.sleep(0.01)
    else:
        with ThreadPoolExecutor(2) as pool:
            for _ in range(repeats):
                for future in [pool.submit(_generate, context, tokens) for context in contexts]:
                    record(future.result())
    return {"first_token_ms": round(statistics.median(firsts), 1),
            "per_token_ms": round(statistics.median(gaps), 2), "replies": len(firsts)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # one case, this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*CASES[args.case], args.tokens, args.repeats)))
        return {}
    summary: dict[str, Any] = {}
    for name in CASES:
        done = subprocess.run([sys.executable, "-m", "benchmarks.llama_threads", "--case", name,
                               "--tokens", str(args.tokens), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=True)
        summary[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, summary[name], flush=True)
    result = {**provenance("benchmarks.llama_threads", argv), "tokens": args.tokens, "repeats": args.repeats,
              "summary": summary}
    save_results(args.out, "llama_threads.json", result)
    return result


if __name__ == "__main__":
    main()
