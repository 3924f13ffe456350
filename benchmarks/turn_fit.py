"""Fit the end-of-turn decision (voice/end_of_turn.py, voice/turn_taking.py) on the signal study's table.

    python -m benchmarks.turn_fit [benchmarks/results/turn_signals.csv]

1. A logistic regression of "this pause ends the utterance" on the words' signals at each pause:
   the LLM's end probability (`lm_end`, as voice.end_of_turn.TextEnd computes it), a final question
   mark, and an utterance of two words or fewer. Its area under the ROC curve is cross-validated
   by script (every voice of a text held out together).
2. For each eagerness, the silence windows and thresholds (with Smart Turn allowed to hold a turn)
   that give the fewest false cut-offs on internal pauses while finished utterances end within the
   eagerness's latency budget: the median end-of-turn delay at most 300 ms and the p95 at most 600
   (`high`) or 2000 ms (`auto`), or the median 500 ms and the p95 3000 ms (`low`).
3. For `auto`, asking the voice again later in a pause the words left open (`EndPolicy.recheck_ms`):
   the probe time, words' threshold and voice threshold that end the most finished utterances by then
   while adding at most RECHECK_EXTRA_CUTS false cut-offs per 100 pauses.
The figures are in-sample for the thresholds: the online benchmark (benchmarks.turn_taking) is the test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import provenance
from benchmarks.turn_signals import OUT, read_rows

FEATURES = ("lm_end_logit", "question", "short", "bias")
PROBE_MS = "150"  # the transcript and its score are in by then
# Finished utterances' end-of-turn delay: median, p95.
BUDGETS_MS = {"high": (300, 600), "auto": (300, 2000), "low": (500, 3000)}
WINDOWS_MS = [(300, 600, 1600), (300, 600, 2000), (300, 800, 2000), (300, 1000, 2000), (500, 1200, 3000)]
THRESHOLDS = [round(t, 2) for t in np.arange(0.05, 0.96, 0.05)]
VOICE_HOLDS = [0.0, 0.02, 0.05, 0.1, 0.2]
RECHECKS = list(itertools.product([400, 600, 800], [0.4, 0.5, 0.55, 0.6], [0.9, 0.95, 0.98]))
RECHECK_EXTRA_CUTS = 1.0


def features(row: dict[str, str]) -> list[float]:
    text = row["transcript"].strip()
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    p = min(max(float(row["lm_end"] or 0.0), 1e-6), 1 - 1e-6)
    return [math.log(p / (1 - p)), float(text.endswith("?")), float(len(words) <= 2), 1.0]


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 3000, rate: float = 0.1) -> np.ndarray:
    weights = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ weights))
        weights -= rate * (x.T @ (p - y) + l2 * weights) / len(y)
    return weights


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    negative, positive_scores = scores[~positive], scores[positive]
    return float(np.mean(negative[:, None] < positive_scores[None, :])
                 + 0.5 * np.mean(negative[:, None] == positive_scores[None, :]))


def pauses(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per pause (the probe at PROBE_MS), with its signals."""
    return [row for row in rows if row["probe_ms"] == PROBE_MS and row["lm_end"] != ""]


def voice_at(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], float]:
    """Smart Turn's score at every (item, pause start, probe time)."""
    return {(row["item"], row["pause_start_ms"], row["probe_ms"]): float(row["smart_turn"])
            for row in rows if row["smart_turn"]}


def fit(rows: list[dict[str, str]]) -> dict[str, Any]:
    later = voice_at(rows)
    rows = pauses(rows)
    x = np.array([features(row) for row in rows])
    ends = np.array([row["boundary"] != "internal" for row in rows])
    scripts = np.array([row["item"].rsplit("-", 1)[0] for row in rows])
    held_out = np.zeros(len(rows))
    for script in set(scripts):
        mask = scripts == script
        held_out[mask] = 1 / (1 + np.exp(-x[mask] @ logistic(x[~mask], ends[~mask].astype(float))))
    weights = logistic(x, ends.astype(float))
    finished = 1 / (1 + np.exp(-x @ weights))
    voice = np.array([float(row["smart_turn"]) if row["smart_turn"] else 0.5 for row in rows])
    internal = ~ends
    length = np.array([float(row["pause_ms"] or "inf") for row in rows])
    plain = np.array([row["finished"] == "True" for row in rows])
    policies = {}
    for eagerness, (median_ms, p95_ms) in BUDGETS_MS.items():
        best = None
        for (finished_ms, unsure_ms, hold_ms), high, low, hold_below in itertools.product(
                WINDOWS_MS, THRESHOLDS, THRESHOLDS, VOICE_HOLDS):
            if low > high:
                continue
            going_on = voice < hold_below
            window = np.where((finished >= high) & ~going_on, finished_ms,
                              np.where((finished >= low) & ~going_on, unsure_ms, hold_ms))
            delays = window[plain]
            if np.median(delays) > median_ms or np.percentile(delays, 95) > p95_ms:
                continue
            cuts = float(np.mean(window[internal] < length[internal]) * 100)
            if best is None or cuts < best["cuts_per_100"]:
                best = {"cuts_per_100": round(cuts, 1), "finished_median_ms": float(np.median(delays)),
                        "finished_p95_ms": float(np.percentile(delays, 95)), "finished_ms": finished_ms,
                        "unsure_ms": unsure_ms, "hold_ms": hold_ms, "finished_at": high, "unsure_at": low,
                        "voice_goes_on_below": hold_below}
        policies[eagerness] = best
    policies["auto"] = _recheck(policies["auto"], rows, later, finished, voice, internal, length, plain)
    return {
        "pauses": int(internal.sum()), "ends": int(ends.sum()), "finished_utterances": int(plain.sum()),
        "features": FEATURES, "weights": [round(float(w), 2) for w in weights],
        "auc_words_cross_validated": round(auc(held_out, ends), 3),
        "auc_lm_end_alone": round(auc(x[:, 0], ends), 3), "auc_smart_turn_alone": round(auc(voice, ends), 3),
        "policies": policies,
    }


def _recheck(policy: dict[str, Any] | None, rows: list[dict[str, str]], later: dict[tuple[str, str, str], float],
             finished: np.ndarray, voice: np.ndarray, internal: np.ndarray, length: np.ndarray,
             plain: np.ndarray) -> dict[str, Any] | None:
    """`policy` with the recheck that ends the most finished utterances early for at most
    RECHECK_EXTRA_CUTS more false cut-offs per 100 pauses (unchanged if none does)."""
    if policy is None:
        return None
    going_on = voice < policy["voice_goes_on_below"]
    window = np.where((finished >= policy["finished_at"]) & ~going_on, policy["finished_ms"],
                      np.where((finished >= policy["unsure_at"]) & ~going_on, policy["unsure_ms"], policy["hold_ms"]))
    best = None
    heard_at = {probe_ms: np.array([later.get((row["item"], row["pause_start_ms"], str(probe_ms)), 0.0)
                                    for row in rows]) for probe_ms in {probe for probe, _, _ in RECHECKS}}
    for probe_ms, words_at, voice_at_least in RECHECKS:
        heard = heard_at[probe_ms]
        ends = (window > probe_ms) & (finished >= words_at) & (heard >= voice_at_least)
        rechecked = np.where(ends, probe_ms, window)
        cuts = float(np.mean(rechecked[internal] < length[internal]) * 100)
        early = int(np.sum(ends & plain))
        if cuts <= policy["cuts_per_100"] + RECHECK_EXTRA_CUTS and (best is None or early > best[0]):
            delays = rechecked[plain]
            best = (early, {"cuts_per_100": round(cuts, 1), "finished_median_ms": float(np.median(delays)),
                            "finished_p95_ms": float(np.percentile(delays, 95)), "recheck_ms": probe_ms,
                            "recheck_at": words_at, "voice_finished_at": voice_at_least,
                            "finished_ended_by_recheck": early, "without_recheck": dict(policy)})
    return policy if best is None else {**policy, **best[1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", type=Path, default=OUT / "turn_signals.csv")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    result = {**provenance("benchmarks.turn_fit", argv),
              **fit(read_rows(args.table))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "turn_fit.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("date", "command", "machine")}, indent=1))
    return result


if __name__ == "__main__":
    main()
