"""benchmarks/RESULTS.md: one page of the latest results, rendered from the JSON in benchmarks/results/;
benchmarks/DETAILS.md: the measurements behind single design decisions (formats, threads, the native path's parts).

Each benchmark saves its JSON there and calls `refresh`, so a run rewrites its own table; the pages
hold nothing a benchmark did not write (git keeps the earlier pages). By hand:

    python -m benchmarks.results_page [--results benchmarks/results] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE / "RESULTS.md"
DETAILS_PAGE = HERE / "DETAILS.md"
NOT_RECORDED = "not recorded"


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _machine(result: dict[str, Any]) -> str:
    machine = result.get("machine")
    if not machine:
        return NOT_RECORDED
    return f"{machine.get('cpu') or 'unknown CPU'}, {machine.get('cores', '?')} cores"


def _command(result: dict[str, Any]) -> str:
    command = result.get("command")
    return f"`{command.strip()}`" if command else NOT_RECORDED


def provenance(result: dict[str, Any]) -> str:
    """The line under a section's title: the command that wrote the table, the machine and the date."""
    return (f"Command: {_command(result)} · machine: {_machine(result)} · "
            f"date: {result.get('date') or NOT_RECORDED}")


def latency(result: dict[str, Any]) -> list[str]:
    lines = [f"Clips: {', '.join(result['clips'])}; {result['runs']} sessions per pipeline. Voice-to-voice: from "
             "the end of the user's speech leaving the client to the first reply audio reaching it; stage columns "
             "are the server's medians in ms after the end of speech; `-ptt` rows are push-to-talk (no silence "
             "window). Column notes: [results/latency.md](results/latency.md).", ""]
    lines += [*report.LATENCY_HEADER, *report.latency_rows(result), ""]
    return lines + report.latency_ratios(result)


def soak(results: list[dict[str, Any]]) -> list[str]:
    header = ["date", "machine", "command", "turns", "failed", "latency median ms (first third -> last)",
              "idle RSS MB (start -> end)", "idle RSS growth", "trend MB/min"]
    rows = [[r.get("date") or NOT_RECORDED, _machine(r), _command(r), r["turns"], r["failed"],
             f"{_ms(r['latency_median_ms'])} ({_ms(r['latency_median_first_third_ms'])} -> "
             f"{_ms(r['latency_median_last_third_ms'])})",
             f"{_ms(r['rss_idle_start_mb'])} -> {_ms(r['rss_idle_end_mb'])}",
             f"{r['rss_idle_growth_percent']:.1f}%", _ms(r["rss_idle_trend_mb_per_minute"], 1)]
            for r in results]
    return ["Sessions come and go against one server; resident memory is sampled while it is idle between "
            "rounds. One row per soak run kept in benchmarks/results/.", "", *_table(header, rows)]


def fairness(result: dict[str, Any]) -> list[str]:
    quiet, flood, targets = result["quiet"], result["flood"], result["targets"]
    rows = [[name, r["turns"], r["failed"], _ms(r["median_ms"]), _ms(r["p90_ms"])]
            for name, r in (("quiet", quiet), (f"one session flooding at {result['speed']:g}x", flood))]
    sent = result["flood_session"]
    ratio = result["median_ratio"]
    names = {"median_within_20_percent": "median within 20%", "no_failed_turn": "no failed turn",
             "rss_growth_under_100_mib": "memory growth under 100 MiB"}
    met = ", ".join(f"{names.get(name, name)}: {'yes' if ok else 'NO'}" for name, ok in targets.items())
    return [f"{result['sessions']} sessions hold normal conversations while one more streams real speech at "
            f"{result['speed']:g} times real time; phases of {result['seconds']:g} s alternate with quiet ones "
            f"({result['rounds']} of each). Voice-to-voice ms of the normal sessions' turns.", "",
            *_table(["phase", "turns", "failed", "median ms", "p90 ms"], rows), "",
            f"Median flood / quiet: {'-' if ratio is None else f'{ratio:.2f}'}. Resident memory at rest "
            f"{_ms(result['rss_rest_start_mb'])} -> {_ms(result['rss_rest_end_mb'])} MB "
            f"({result['rss_growth_mb']:+.0f}); peak under the flood minus the quiet peak "
            f"{result['rss_peak_flood_minus_quiet_mb']:+.0f} MB. The flood sent {sent['audio_sent_s']:.0f} s of "
            f"audio, {sent['audio_refused_s']:.0f} s refused (`input_audio_rate_exceeded`); waiting jobs peaked "
            f"at {result['jobs_waiting_peak']['flood']:.0f}. Targets: {met}."]


def llm_formats(result: dict[str, Any]) -> list[str]:
    rows = [[name, _ms(r["prompt_ms"]), _ms(r["tail_ms"]), _ms(r["token_ms"], 1), f"{r['perplexity_readme']:.2f}",
             f"{r['perplexity_prompts']:.3f}", _ms(r["file_mb"])] for name, r in result["results"].items()]
    first = next(iter(result["results"].values()))
    return [f"The bundled SmolLM2 in other GGUF formats, {result['threads']} threads; a prompt of "
            f"{first['prompt_tokens']} tokens, then a tail of {first['tail_tokens']}.", "",
            *_table(["format", "prompt ms", "tail ms", "ms/token", "perplexity (README)", "perplexity (prompts)",
                     "MB"], rows)]


def llama_threads(result: dict[str, Any]) -> list[str]:
    rows = [[name, _ms(r["first_token_ms"], 1), _ms(r["per_token_ms"], 2), r["replies"]]
            for name, r in result["summary"].items()]
    return [f"llama.cpp called from one thread, from a pool, or routed to the compute thread; {result['tokens']} "
            f"tokens, {result['repeats']} repeats, medians.", "",
            *_table(["case", "first token ms", "ms/token", "replies"], rows)]


def tts_stream(result: dict[str, Any]) -> list[str]:
    rows = []
    for variant, kinds in result["summary"].items():
        for kind, r in kinds.items():
            difference = r.get("pieces_max_difference")
            rows.append([variant, kind, r["chunks"], _ms(r["first_audio_ms"], 1), _ms(r["total_ms"], 1),
                         f"{r['level_dbfs']:.1f}", f"{r['clipped_share']:.4%}",
                         "-" if difference is None else f"{difference:.1e}"])
    return [f"Piper's first audio for the speech chunks of saved replies (`{result.get('replies', '?')}`), "
            f"each chunk whole or cut at its decoder (`streamed`); medians of {result['repeats']} repeats.", "",
            *_table(["variant", "chunk", "count", "first audio ms", "total ms", "level dBFS", "clipped",
                     "pieces vs whole"], rows)]


def native_eval(result: dict[str, Any]) -> list[str]:
    from benchmarks.native_eval import markdown

    return markdown(result).rstrip("\n").splitlines()


def native_prefill(result: dict[str, Any]) -> list[str]:
    rows, first_tokens = [], []
    for kind, summary in result["summary"].items():
        for encoding, r in summary.items():
            if isinstance(r, dict) and "repeat_loss" in r:
                rows.append([f"{kind} ({summary['clips']})", encoding, f"{r['repeat_loss']:.4f}",
                             f"{r['reply_loss']:.4f}"])
        first = summary.get("first_token_ms_median")
        if first:
            first_tokens.append(f"{kind} {_ms(first['whole'], 1)} -> {_ms(first['early'], 1)}")
    lines = [f"The speech evaluated while the user speaks (margin in use {result['margin_in_use_s']} s): mean "
             "per-token losses of the right answers with the whole-turn encoding and with the early rows.", "",
             *_table(["clips", "encoding", "repeat loss", "reply loss"], rows)]
    if first_tokens:
        lines += ["", "First token after the end of speech, median ms, whole turn -> evaluated early: "
                  + "; ".join(first_tokens) + "."]
    return lines


def native_adapter(result: dict[str, Any]) -> list[str]:
    summary = result["summary"]
    rows = [[name, _ms(summary[name]["prompt_ms_median"], 1), _ms(summary[name]["per_token_ms_median"], 2),
             "1.000" if name == "plain" else f"{summary[f'{name}_prompt_ratio']:.3f}",
             "1.000" if name == "plain" else f"{summary[f'{name}_per_token_ratio']:.3f}"]
            for name in ("plain", "adapter", "merged") if name in summary]
    return [f"The native path's LoRA at run time: none, applied by llama.cpp, or merged (the server's way); "
            f"medians over {result['clips']} recordings, best of {result['repeats']}.", "",
            *_table(["model", "prompt ms", "ms/token", "prompt / plain", "token / plain"], rows)]


def native_prompt(result: dict[str, Any]) -> list[str]:
    calls = result["decode_call_ms"]
    sizes = sorted({int(key.split("_")[1]) for key in calls})
    lines = [f"One llama.cpp decode call of n tokens or n embeddings, and a first turn's native prompt; medians of "
             f"{result['rounds']} rounds, {result['threads']} threads.", "",
             *_table(["n", "tokens ms", "embeddings ms"],
                     [[n, _ms(calls[f"tokens_{n}"], 1), _ms(calls[f"embeddings_{n}"], 1)] for n in sizes]), ""]
    rows = [[name, r["audio_positions"], r["tail_tokens"], _ms(r["encode_ms"], 1), _ms(r["two_calls_ms"], 1),
             _ms(r["one_call_ms"], 1)] for name, r in result["native_prompt"].items()]
    return lines + _table(["clip", "audio positions", "tail tokens", "encode ms", "two calls ms", "one call ms"],
                          rows)


def ab(result: dict[str, Any]) -> list[str]:
    rows = [[side, f"`{result[side]['tree']}`", result[side]["turns"], result[side]["failed"],
             _ms(result[side]["voice_to_voice_ms"]["median"]), _ms(result[side]["voice_to_voice_ms"]["p90"]),
             _ms(result[side]["voice_to_voice_ms"]["p95"])] for side in ("a", "b")]
    lines = ["Two source trees served side by side, their turns interleaved on the same clips.", "",
             *_table(["side", "tree", "turns", "failed", "v2v median", "p90", "p95"], rows), ""]
    for key, label in (("b_minus_a", "voice-to-voice"), ("b_minus_a_first_token", "first token")):
        diff = result.get(key)
        if diff and diff["pairs"]:
            lines.append(f"B - A, {label}, paired by clip and round: median {diff['median_ms']:+.0f} ms "
                         f"(quartiles {diff['p25_ms']:+.0f} to {diff['p75_ms']:+.0f}), B faster in "
                         f"{diff['b_faster']} of {diff['pairs']}.")
    return lines


def turn_taking(results: list[dict[str, Any]]) -> list[str]:
    """Each run's headline figures (before and after a change, say), then the latest full run's tables."""
    from benchmarks.turn_taking import markdown

    def ms(d: dict[str, Any]) -> str:
        return f"{_ms(d['median'])} / {_ms(d['p95'])}" if d.get("n") else "-"

    rows = []
    for r in results:
        u, sounds = r["utterances"], r["interruptions"]
        cuts = "-" if u["false_cut_offs_per_100_pauses"] is None else \
            f"{u['false_cut_offs_per_100_pauses']:.1f} ({u['false_cut_offs']} in {u['internal_pauses']})"
        said = sounds.get("interruption", {})
        rows.append([r.get("label") or "-", r["date"], _machine(r), f"`{r['command']}`", cuts,
                     ms(u["end_of_turn_ms"]["finished"]), ms(u["voice_to_voice_ms"]["finished"]),
                     *(f"{sounds[k]['reply_cancelled']} of {sounds[k]['trials']}" if k in sounds else "-"
                       for k in ("nonspeech", "backchannel", "interruption")),
                     ms(said.get("speech_started_ms", {}))])
    # The tables of the latest full run of this tree's own server (a run with --url measured another).
    full = [r for r in results if r["utterances"]["utterances"] and "--url" not in r["command"]]
    # Its measures only: the per-pause and per-sound tables are in the benchmark's own markdown.
    lines = markdown(full[-1]).split("\n") if full else []
    details = lines[2:lines.index("", lines.index("| measure | value |"))] if full else []
    return [*_table(["run", "date", "machine", "command", "false cut-offs / 100 pauses",
                     "end of turn, finished (median / p95 ms)", "voice-to-voice, finished",
                     "noises cancelling", "backchannels cancelling",
                     "interruptions cancelling", "interruption speech_started (median / p95 ms)"], rows),
            "", "The latest full run of this tree's server:", "", *details]


def turn_fit(result: dict[str, Any]) -> list[str]:
    rows = [[name, p["cuts_per_100"], _ms(p["finished_median_ms"]), _ms(p["finished_p95_ms"]),
             f"{p['finished_ms']} / {p['unsure_ms']} / {p['hold_ms']}", f"{p['finished_at']} / {p['unsure_at']}",
             p["voice_goes_on_below"],
             f"{p['recheck_ms']} ms: words {p['recheck_at']}, voice {p['voice_finished_at']}"
             if "recheck_ms" in p else "-"]
            for name, p in result["policies"].items() if p]
    return [f"{result['pauses']} internal pauses, {result['ends']} ends ({result['finished_utterances']} finished "
            f"utterances); in-sample. Area under the ROC curve, ends against pauses: the words "
            f"{result['auc_words_cross_validated']} (cross-validated by script), SmolLM2's end probability alone "
            f"{result['auc_lm_end_alone']}, Smart Turn alone {result['auc_smart_turn_alone']}.", "",
            *_table(["eagerness", "false cut-offs / 100", "finished median ms", "p95 ms",
                     "windows ms (finished / unsure / hold)", "words thresholds", "voice holds below", "recheck"],
                    rows)]


def brain(results: list[dict[str, Any]]) -> list[str]:
    """The latest brain run's tables, and each brain's latency run (benchmarks/results/brain_latency/)."""
    from benchmarks.brain import markdown

    result = results[-1]
    lines = [provenance(result), "", *markdown(result).splitlines()[4:], ""]
    timed = runs(RESULTS / "brain_latency", ["*.json"])
    if timed:
        lines += ["The latency benchmark per brain (`python -m benchmarks.latency --pipelines cascade --runs 3 "
                  "--concurrency '' --fresh-sessions --skip-native-eval --llm-model BRAIN`; "
                  f"{_machine(timed[-1])}; {timed[-1].get('date')}):", "",
                  "| brain | " + report.LATENCY_HEADER[0].lstrip("| "), "|---" + report.LATENCY_HEADER[1]]
        for run in timed:
            name = run.get("llm_model") or run.get("config", {}).get("llm_model") or "bundled"
            lines += [f"| {name} " + row for row in report.latency_rows(run)]
    return lines


def latest(section: Callable[[dict[str, Any]], list[str]]) -> Callable[[list[dict[str, Any]]], list[str]]:
    """A section of one run (the latest found), under its command, machine and date."""
    return lambda runs: [provenance(runs[-1]), "", *section(runs[-1])]


Section = tuple[str, list[str], Callable[[list[dict[str, Any]]], list[str]], str]
# Title, the JSON files in the results directory (glob patterns), how they render, the command that makes them.
SECTIONS: list[Section] = [
    ("Latency", ["latency.json"], latest(latency), "python -m benchmarks.latency"),
    ("Brain", ["brain.json"], brain, "python -m benchmarks.brain"),
    ("Turn-taking", ["turn_taking*.json"], turn_taking, "python -m benchmarks.turn_taking"),
    ("Fairness", ["fairness.json"], latest(fairness), "python -m benchmarks.fairness"),
    ("Soak", ["soak.json", "*/soak.json"], soak, "python -m benchmarks.soak"),
]
DETAIL_SECTIONS: list[Section] = [
    ("End-of-turn fit", ["turn_fit.json"], latest(turn_fit), "python -m benchmarks.turn_fit"),
    ("A/B", ["ab.json"], latest(ab), "python -m benchmarks.ab"),
    ("Piper's first audio", ["tts_stream.json"], latest(tts_stream), "python -m benchmarks.tts_stream"),
    ("LLM formats", ["llm_formats.json"], latest(llm_formats), "python -m benchmarks.llm_formats"),
    ("llama.cpp threads", ["llama_threads.json"], latest(llama_threads), "python -m benchmarks.llama_threads"),
    ("Native understanding", ["native_eval.json"], latest(native_eval), "python -m benchmarks.native_eval"),
    ("Native speech evaluated while spoken", ["native_prefill.json"], latest(native_prefill),
     "python -m benchmarks.native_prefill"),
    ("Native LoRA at run time", ["native_adapter.json"], latest(native_adapter),
     "python -m benchmarks.native_adapter"),
    ("Native prompt cost", ["native_prompt.json"], latest(native_prompt), "python -m benchmarks.native_prompt"),
]
_INTROS = {
    PAGE: ("Benchmark results", "The latest run of each benchmark that measures what a user gets"),
    DETAILS_PAGE: ("Benchmark details", "The latest run of each benchmark behind a single design decision"),
}
PAGES = {PAGE: SECTIONS, DETAILS_PAGE: DETAIL_SECTIONS}


def runs(results: Path, patterns: list[str]) -> list[dict[str, Any]]:
    """The JSON files matching `patterns` in `results`, oldest first (by their recorded date)."""
    files = sorted({path for pattern in patterns for path in results.glob(pattern) if path.is_file()})
    found = [json.loads(path.read_text(encoding="utf-8")) for path in files]
    return sorted(found, key=lambda run: run.get("date") or "")


def render(results: Path = RESULTS, page: Path = PAGE) -> str:
    """`page` (RESULTS.md or DETAILS.md) for the JSON files in `results`: one section per benchmark."""
    title, intro = _INTROS[page]
    other = DETAILS_PAGE if page == PAGE else PAGE
    lines = [f"# {title}", "",
             f"{intro}, written by the benchmarks from their JSON in [results/](results/) "
             "(`python -m benchmarks.results_page` renders it again); earlier runs are in git's history of this "
             f"file; the rest is in [{other.name}]({other.name}). Figures depend on the machine: compare rows of one "
             "run only.", ""]
    for heading, patterns, section, command in PAGES[page]:
        found = runs(results, patterns)
        lines += [f"## {heading}", "", *(section(found) if found else [f"Not run yet: `{command}`."]), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write(results: Path = RESULTS, out: Path = HERE) -> list[Path]:
    """Write both pages into the directory `out`."""
    written = []
    for page in PAGES:
        target = out / page.name
        target.write_text(render(results, page), encoding="utf-8")
        written.append(target)
    return written


def refresh(out: str | Path) -> None:
    """Rewrite the pages after a benchmark saved its JSON in `out`, when `out` is the results directory
    they are made of (a run saved elsewhere leaves them alone)."""
    if Path(out).resolve() == RESULTS:
        for page in write():
            print(f"refreshed {page}")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.results_page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory of the benchmarks' JSON files")
    parser.add_argument("--out", type=Path, default=HERE, help="the directory to write RESULTS.md and DETAILS.md in")
    args = parser.parse_args(argv)
    pages = write(args.results, args.out)
    for page in pages:
        print(f"wrote {page}")
    return pages


if __name__ == "__main__":
    main()
