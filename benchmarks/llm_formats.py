"""The bundled LLM stored in other GGUF formats: prompt and token speed, and perplexity.

    python -m benchmarks.llm_formats --out benchmarks/results/llm_formats.json

The bundled SmolLM2-135M comes as Q4_1; the server loads a Q8_0 copy of it (voice/llm/requantize.py).
This measures, on the same machine and in alternation, both files and (with --formats) other
re-quantizations: milliseconds to evaluate a reply's prompt and its tail, per generated token, and
perplexity on text the model did not write (the README and generated user prompts), so that a
faster format that changes the model shows it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import provenance
from benchmarks.results_page import refresh
from server.config import DEFAULT_INSTRUCTIONS
from training.prompts import generate_prompts
from voice import models
from voice.llm.requantize import q8_0_copy, requantize

_FTYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_k": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
           "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL", "f16": "LLAMA_FTYPE_MOSTLY_F16"}


def _requantized(source: Path, name: str, directory: Path) -> Path:
    import llama_cpp

    target = directory / f"{name}.gguf"
    requantize(source, target, getattr(llama_cpp, _FTYPES[name]))
    return target


def _perplexity(llm, text: str, limit: int = 1024) -> float:  # noqa: ANN001 - llama_cpp.Llama
    tokens = llm.tokenize(text.encode(), special=True)[:limit]
    llm.reset()
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens) - 1], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits[np.arange(len(tokens) - 1), tokens[1:]] - np.log(np.exp(logits).sum(axis=1))
    return float(np.exp(-log_probs.mean()))


def _timings(llm, prompt: list[int], tail: int, rounds: int) -> dict[str, float]:  # noqa: ANN001
    prefill, rest, decode = [], [], []
    for _ in range(rounds):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt[:-tail])
        middle = time.perf_counter()
        llm.eval(prompt[-tail:])
        end = time.perf_counter()
        for token in prompt[:30]:
            llm.eval([token])
        decode.append((time.perf_counter() - end) / 30 * 1000)
        prefill.append((middle - start) * 1000)
        rest.append((end - middle) * 1000)
    return {"prompt_ms": statistics.median(prefill), "prompt_tokens": len(prompt) - tail,
            "tail_ms": statistics.median(rest), "tail_tokens": tail, "token_ms": statistics.median(decode)}


def main(argv: list[str] | None = None) -> None:
    from llama_cpp import Llama

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="*", default=[], choices=sorted(_FTYPES),
                        help="other re-quantizations to measure beside Q4_1 and the Q8_0 copy")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    stamp = provenance("benchmarks.llm_formats", argv)

    source = models.gguf_model(None)
    scratch = Path(tempfile.mkdtemp(prefix="llm-formats-"))
    files = {"q4_1 (bundled)": source, "q8_0 (served)": q8_0_copy(source, scratch)}
    files.update({name: _requantized(source, name, scratch) for name in args.formats})
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")[:6000]
    prompts = "".join(f"<|im_start|>user\n{p}<|im_end|>\n" for p in generate_prompts(200))[:6000]
    chat = (f"<|im_start|>system\n{DEFAULT_INSTRUCTIONS}<|im_end|>\n<|im_start|>user\nProduced the block books, "
            "which were the immediate predecessors of the true printed book.<|im_end|>\n<|im_start|>assistant\n")

    results: dict[str, dict[str, float]] = {}
    timers = {name: Llama(model_path=str(path), n_ctx=2048, n_threads=args.threads, verbose=False)
              for name, path in files.items()}
    prompt = next(iter(timers.values())).tokenize(chat.encode(), special=True)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in files}
    for _ in range(args.rounds):  # alternate, so that a noisy minute hits every format alike
        for name, llm in timers.items():
            rounds[name].append(_timings(llm, prompt, tail=12, rounds=1))
    for name in files:
        results[name] = {key: statistics.median(r[key] for r in rounds[name]) for key in rounds[name][0]}
    del timers
    for name, path in files.items():
        scorer = Llama(model_path=str(path), n_ctx=2048, n_threads=args.threads, logits_all=True, verbose=False)
        results[name]["perplexity_readme"] = _perplexity(scorer, readme)
        results[name]["perplexity_prompts"] = _perplexity(scorer, prompts)
        results[name]["file_mb"] = path.stat().st_size / 1e6

    print(f"{'format':16} {'prompt ms':>10} {'tail ms':>8} {'ms/token':>9} {'ppl README':>11} "
          f"{'ppl prompts':>12} {'MB':>6}")
    for name, r in results.items():
        print(f"{name:16} {r['prompt_ms']:10.0f} {r['tail_ms']:8.0f} {r['token_ms']:9.1f} "
              f"{r['perplexity_readme']:11.2f} {r['perplexity_prompts']:12.3f} {r['file_mb']:6.0f}")
    print(f"(prompt: {results[name]['prompt_tokens']} tokens, then a tail of {results[name]['tail_tokens']})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**stamp, "threads": args.threads, "results": results}, indent=2))
        print(f"saved {args.out}")
        refresh(args.out.parent)
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()


if __name__ == "__main__":
    main()
