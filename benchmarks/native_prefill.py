"""What evaluating the user's speech while they speak costs the native model, and saves it.

The session gives the native model the turn's audio every 250 ms while the user speaks
(`NativeAudioChat.prefill`); the model evaluates the audio positions that have AUDIO_MARGIN_S of
audio after them, and the reply then evaluates only the rest. Whisper's encoder attends both ways,
so those early positions are not exactly what encoding the whole turn gives. This measures, on
the 20 real recordings of benchmarks/native_eval.py and on synthetic utterances the projector was
not trained on (prompts after the training set's 5,000, spoken by the data script's voices):

- quality: the per-token loss of the right "repeat what I said" answer (the reference text) and
  of the LLM's own reply to the text (what the projector is trained towards), with the whole-turn
  encoding and with the early-evaluated rows, for each margin, and for each limit on the audio the
  encoder sees before the positions it computes (`--left-contexts`; ENCODER_LEFT_CONTEXT_S);
- latency: the time from the end of speech to the reply's first token, with the speech evaluated
  early and without (the same audio, the same context, best of `--repeats`);
- with `--reuse-tolerances`, the same for tentative rows kept within a tolerance
  (AUDIO_REUSE_TOLERANCE): losses, the positions the reply decodes, and its first token.

    python -m benchmarks.native_prefill [--margins 0.5 1.0] [--left-contexts 1 2] [--reuse-tolerances 0.1]
        [--synthetic 20] [--clips N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.native_eval import INSTRUCTIONS, load_recordings
from benchmarks.report import provenance, save_results
from voice import models
from voice.audio import ASR_RATE
from voice.llm.base import ChatMessage, GenerationOptions
from voice.native import model as native_model
from voice.native.base import REPEAT_INSTRUCTION
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.model import NativeAudioChat, prompt_texts
from voice.turn_taking import EVALUATE_EVERY_MS

OUT = Path(__file__).resolve().parent / "results"
STEP = EVALUATE_EVERY_MS * ASR_RATE // 1000  # the session's cadence


def synthetic(count: int) -> list[tuple[str, np.ndarray, str]]:
    """Utterances after the 5,000 the bundled projector was trained on, spoken and augmented as
    the data script does."""
    from training.augment import augment
    from training.prompts import generate_prompts
    from training.speakers import Speaker

    speaker, rng, noise_rng = Speaker(), random.Random(7), np.random.default_rng(7)
    items = []
    for i, text in enumerate(generate_prompts(5000 + count)[5000:]):
        audio, _ = speaker.speak(text, rng)
        audio, _ = augment(audio, noise_rng)
        items.append((f"synthetic-{i:02d}", audio, text))
    return items


def speak(native: NativeAudioChat, messages: list[ChatMessage], audio: np.ndarray) -> None:
    """What the session sends while the user speaks: the speech so far, every EVALUATE_EVERY_MS."""
    for end in range(STEP, audio.size, STEP):
        native.prefill(messages, threading.Event(), audio_16k=audio[:end])


def early_embeddings(native: NativeAudioChat, messages: list[ChatMessage],
                     audio: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The audio rows a reply decodes after the session's prefills (every EVALUATE_EVERY_MS of
    the speech), as its KV cache holds them; how many of them were final when evaluated early, and
    how many positions the reply decodes (audio rows and the text after them)."""
    context = native.contexts[0]
    context.reset()
    speak(native, messages, audio)
    before, after = prompt_texts(messages)
    before_tokens = context.tokenize(before)
    rows, held, _ = native._reply_rows(context, before_tokens, audio)
    reused = context.start([before_tokens, rows, context.tokenize(after)], tolerance=native_model.AUDIO_REUSE_TOLERANCE)
    return context.cached_embeddings(before_tokens).copy(), held, context.n_past - reused


def variants(margins: list[float], left_contexts: list[float],
             tolerances: list[float] | None = None) -> dict[str, tuple[float, float | None, float]]:
    """The early-evaluation settings compared, by name: (AUDIO_MARGIN_S, ENCODER_LEFT_CONTEXT_S,
    AUDIO_REUSE_TOLERANCE). Each margin with the left context and tolerance in use; each left
    context and each tolerance with the margin in use."""
    left_in_use, tolerance = native_model.ENCODER_LEFT_CONTEXT_S, native_model.AUDIO_REUSE_TOLERANCE
    named = {f"margin_{m}": (m, left_in_use, tolerance) for m in margins}
    margin = native_model.AUDIO_MARGIN_S
    named.update({f"margin_{margin}_left_{left}": (margin, left, tolerance) for left in left_contexts})
    named.update({f"margin_{margin}_reuse_{t}": (margin, left_in_use, t) for t in tolerances or []})
    return named


@contextlib.contextmanager
def early_setting(margin: float, left: float | None, tolerance: float) -> Iterator[None]:
    """The native model with this AUDIO_MARGIN_S, ENCODER_LEFT_CONTEXT_S and AUDIO_REUSE_TOLERANCE."""
    names = ("AUDIO_MARGIN_S", "ENCODER_LEFT_CONTEXT_S", "AUDIO_REUSE_TOLERANCE")
    in_use = [getattr(native_model, name) for name in names]
    for name, value in zip(names, (margin, left, tolerance), strict=True):
        setattr(native_model, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, in_use, strict=True):
            setattr(native_model, name, value)


def target_loss(context: EmbeddingContext, messages: list[ChatMessage], instruction: str | None,
                rows: np.ndarray, target: list[int]) -> float:
    """Mean next-token cross-entropy of `target` after the prompt with `rows` as the audio."""
    before, after = prompt_texts(messages, instruction)
    context.reset()
    context.start([context.tokenize(before), rows, context.tokenize(after)])
    total = 0.0
    for i, token in enumerate(target):
        logits = context.logits().astype(np.float64)
        logits -= logits.max()
        total -= logits[token] - np.log(np.exp(logits).sum())
        if i < len(target) - 1:
            context.feed_tokens([token])
    return total / len(target)


def text_reply(context: EmbeddingContext, messages: list[ChatMessage], text: str, max_tokens: int) -> list[int]:
    """The LLM's greedy reply to the text (token ids, end token included when it ends)."""
    before, after = prompt_texts(messages)
    context.reset()
    context.start([context.tokenize(before + text + after)])
    reply = list(context.generate(max_tokens))
    return reply + (context.tokenize("<|im_end|>") if len(reply) < max_tokens else [])


def first_token_ms(native: NativeAudioChat, messages: list[ChatMessage], audio: np.ndarray, early: bool,
                   repeats: int) -> float:
    """From the end of speech (the reply asked for) to its first token, best of `repeats`."""
    options = GenerationOptions(max_tokens=1, temperature=0.0)
    best = float("inf")
    for _ in range(repeats):
        native.contexts[0].reset()
        native.prefill(messages, threading.Event())  # the history, as the session does at the speech start
        if early:
            speak(native, messages, audio)
        started = time.perf_counter()
        next(iter(native.stream_reply(audio, messages, options, threading.Event())), None)
        best = min(best, 1e3 * (time.perf_counter() - started))
    return best


def run(margins: list[float], n_synthetic: int, repeats: int, clips: int | None = None,
        max_tokens: int = 48, left_contexts: list[float] | None = None, projector: str = "bundled",
        tolerances: list[float] | None = None) -> dict[str, Any]:
    native = NativeAudioChat(models.native_projector(projector), parallel=1)
    context = native.contexts[0]
    system = [ChatMessage("system", INSTRUCTIONS)]
    items = [(r.name, r.audio_16k, r.reference) for r in load_recordings()[:clips]] + synthetic(n_synthetic)
    end = context.tokenize("<|im_end|>")
    rows: list[dict[str, Any]] = []
    compared = variants(margins, left_contexts or [], tolerances)
    for name, audio, text in items:
        whole = native.audio_embeddings(audio)
        repeat_target = context.tokenize(text) + end
        reply_target = text_reply(context, system, text, max_tokens)
        row: dict[str, Any] = {
            "clip": name, "kind": "synthetic" if name.startswith("synthetic") else "real",
            "seconds": round(audio.size / ASR_RATE, 2), "positions": len(whole),
            "whole": {"repeat_loss": round(target_loss(context, [], REPEAT_INSTRUCTION, whole, repeat_target), 4),
                      "reply_loss": round(target_loss(context, system, None, whole, reply_target), 4)},
        }
        for variant, setting in compared.items():
            with early_setting(*setting):
                spliced, held, decoded = early_embeddings(native, system, audio)
                first_ms = first_token_ms(native, system, audio, True, repeats) if setting[2] > 0 else None
            row[variant] = {
                "early_positions": held, "reply_positions": decoded,
                "repeat_loss": round(target_loss(context, [], REPEAT_INSTRUCTION, spliced, repeat_target), 4),
                "reply_loss": round(target_loss(context, system, None, spliced, reply_target), 4)}
            if first_ms is not None:
                row[variant]["first_token_ms"] = round(first_ms, 1)
        row["first_token_ms"] = {"whole": round(first_token_ms(native, system, audio, False, repeats), 1),
                                 "early": round(first_token_ms(native, system, audio, True, repeats), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    native.close()

    summary: dict[str, Any] = {}
    for kind in ("real", "synthetic"):
        chosen = [row for row in rows if row["kind"] == kind]
        if not chosen:
            continue
        summary[kind] = {"clips": len(chosen)}
        for variant in ["whole", *compared]:
            summary[kind][variant] = {loss: round(statistics.mean(row[variant][loss] for row in chosen), 4)
                                      for loss in ("repeat_loss", "reply_loss")}
            for measure in ("reply_positions", "first_token_ms"):
                if variant != "whole" and measure in chosen[0][variant]:
                    summary[kind][variant][f"{measure}_median"] = statistics.median(
                        row[variant][measure] for row in chosen)
        summary[kind]["first_token_ms_median"] = {
            way: round(statistics.median(row["first_token_ms"][way] for row in chosen), 1)
            for way in ("whole", "early")}
    return {"projector": projector,
            "margin_in_use_s": native_model.AUDIO_MARGIN_S,
            "encoder_left_context_in_use_s": native_model.ENCODER_LEFT_CONTEXT_S,
            "reuse_tolerance_in_use": native_model.AUDIO_REUSE_TOLERANCE, "margins": margins,
            "left_contexts": left_contexts or [], "reuse_tolerances": tolerances or [], "repeats": repeats,
            "summary": summary, "clips": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--left-contexts", type=float, nargs="*", default=[],
                        help="encoder left contexts (s) to compare, at the margin in use")
    parser.add_argument("--reuse-tolerances", type=float, nargs="*", default=[],
                        help="AUDIO_REUSE_TOLERANCE values to compare, at the margin in use (each also timed)")
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=None, help="only the first CLIPS real recordings")
    parser.add_argument("--projector", default="bundled", help="projector .npz (and the LoRA it names) to measure")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    stamp = provenance("benchmarks.native_prefill", argv)
    result = {**stamp, **run(args.margins, args.synthetic, args.repeats, args.clips,
                             left_contexts=args.left_contexts, projector=args.projector,
                             tolerances=args.reuse_tolerances)}
    save_results(args.out, "native_prefill.json", result)
    return result


if __name__ == "__main__":
    main()
