"""Brain benchmark: how well each LLM answers what people ask a voice assistant, over the Realtime protocol.

Every request (benchmarks/data/brain_requests.jsonl: facts, arithmetic, dates, unit conversions,
kiosk questions answered from the kiosk's instructions, and requests that need a tool) is asked on a
fresh session of a `voice serve --llm-model BRAIN`, one server per brain, one after another:
- typed, as a user message and `response.create`, once for text out (the raw reply: its accuracy,
  its length, its markdown/list/emoji leaks, the first text after `response.create`) and once for
  audio out (what is heard: its transcript's accuracy, the first audio after `response.create`);
- spoken, synthesised by Piper's bundled voice, espeak-ng and flite in turn and streamed at
  real-time pace with the server's turn detection (the reply's transcript, the first audio after the
  end of the speech).
The sessions declare the profile's tools (`session.update` `tools`); a tool request counts when the
response has a `function_call` item naming the expected function, with arguments that validate
against its schema and say what was asked.

    python -m benchmarks.brain                              # every request, every brain
    python -m benchmarks.brain --typed 30 --spoken 10       # a subset spread over the categories
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.brain_score import is_correct, leaks, score_call, word_count
from benchmarks.latency import percentile
from benchmarks.report import machine
from clients.python.client import RealtimeClient

DATA = Path(__file__).resolve().parent / "data"
OUT = Path(__file__).resolve().parent / "results"
BRAINS = ["bundled", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
MODES = ("typed_text", "typed_audio", "spoken")
WARM_ASKS = 4  # one per llama.cpp context of a default server (--llm-parallel 4): each then holds the prompt


@dataclass(frozen=True)
class Profile:
    """Who the assistant is for a request: its instructions and its tools."""

    name: str
    instructions: str | None = None
    """Its own instructions; None: the server's default, followed by `instructions_suffix`."""
    instructions_suffix: str = ""
    tools: tuple[dict[str, Any], ...] = ()

    def session(self, default_instructions: str) -> dict[str, Any]:
        instructions = self.instructions if self.instructions is not None else default_instructions + \
            self.instructions_suffix
        return {"type": "realtime", "instructions": instructions, "tools": list(self.tools), "tool_choice": "auto"}


@dataclass(frozen=True)
class Request:
    id: str
    category: str
    profile: str
    text: str
    accept: tuple[Any, ...] = ()
    reject: tuple[str, ...] = ()
    call: dict[str, Any] | None = None
    """The expected tool call, {"name", "arguments"}; a request has this or `accept`."""
    say: str | None = None
    """What a voice says, where the typed text would not read aloud well."""


def load_profiles(path: Path = DATA / "brain_profiles.json") -> dict[str, Profile]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: Profile(name, spec.get("instructions"), spec.get("instructions_suffix", ""),
                          tuple(spec.get("tools", ()))) for name, spec in raw.items()}


def load_requests(path: Path = DATA / "brain_requests.jsonl",
                  profiles: dict[str, Profile] | None = None) -> list[Request]:
    """The requests of a JSON-lines file, checked: each names a known profile and has accepted
    answers or an expected call to one of its profile's tools."""
    profiles = profiles if profiles is not None else load_profiles()
    requests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        spec = json.loads(line)
        request = Request(spec["id"], spec["category"], spec["profile"], spec["text"], tuple(spec.get("accept", ())),
                          tuple(spec.get("reject", ())), spec.get("call"), spec.get("say"))
        where = f"{path.name} line {number} ({request.id})"
        if request.profile not in profiles:
            raise ValueError(f"{where}: unknown profile {request.profile!r}")
        if bool(request.accept) == bool(request.call):
            raise ValueError(f"{where}: needs either accepted answers or an expected call")
        if request.call and request.call["name"] not in {t["name"] for t in profiles[request.profile].tools}:
            raise ValueError(f"{where}: {request.call['name']} is not a tool of profile {request.profile}")
        requests.append(request)
    if len({r.id for r in requests}) != len(requests):
        raise ValueError(f"{path.name}: request ids repeat")
    return requests


def spread(requests: list[Request], count: int | None) -> list[Request]:
    """`count` requests taken in turn from each category (all of them with None), in file order."""
    if count is None or count >= len(requests):
        return list(requests)
    queues: dict[str, list[Request]] = {}
    for request in requests:
        queues.setdefault(request.category, []).append(request)
    chosen: list[Request] = []
    while len(chosen) < count:
        for queue in queues.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    order = {r.id: k for k, r in enumerate(requests)}
    return sorted(chosen, key=lambda r: order[r.id])


@dataclass
class Answer:
    """One ask of one request, scored."""

    request: str
    category: str
    mode: str
    voice: str | None = None
    reply: str = ""
    said: str | None = None
    """What the voice said (spoken asks)."""
    heard: str | None = None
    """What the server transcribed of it."""
    correct: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    """The response's function_call items (name and arguments)."""
    call_valid: bool | None = None
    call_detail: str | None = None
    spurious_call: bool = False
    leaks: list[str] = field(default_factory=list)
    words: int = 0
    latency_ms: float | None = None
    """First text (typed_text) or audio (typed_audio: after response.create; spoken: after the speech)."""
    failure: str | None = None


def score(answer: Answer, request: Request, items: list[dict[str, Any]], profile: Profile) -> Answer:
    """Fill in what the reply and the response's output `items` earn."""
    answer.words = word_count(answer.reply)
    answer.calls = [{"name": i.get("name"), "arguments": i.get("arguments")} for i in items
                    if i.get("type") == "function_call"]
    if answer.mode == "typed_text":
        answer.leaks = leaks(answer.reply)
    if request.call:
        call = score_call(request.call, items, list(profile.tools))
        answer.correct, answer.call_valid, answer.call_detail = call.correct, call.valid, call.detail or None
    else:
        answer.spurious_call = bool(answer.calls)
        answer.correct = not answer.spurious_call and is_correct(answer.reply, list(request.accept),
                                                                 list(request.reject))
    return answer


def reply_text(items: list[dict[str, Any]]) -> str:
    """The assistant's words in a response's output items (its transcript, for audio)."""
    parts = [part.get("transcript") or part.get("text") or "" for item in items if item.get("type") == "message"
             for part in item.get("content") or []]
    return " ".join(p for p in parts if p).strip()


async def _open(url: str, profile: Profile) -> RealtimeClient:
    """A fresh session set up for `profile` (the server's default instructions come from its
    session.created)."""
    client = await RealtimeClient.connect(url)
    try:
        created = await _next(client, {"session.created"}, 20)
        await client.send({"type": "session.update",
                           "session": profile.session(created["session"].get("instructions") or "")})
        await _next(client, {"session.updated"}, 20)
    except BaseException:
        await client.close()
        raise
    return client


async def _next(client: RealtimeClient, types: set[str], timeout_s: float) -> dict[str, Any]:
    """The next event of one of `types`; an `error` event before it raises."""
    async with asyncio.timeout(timeout_s):
        async for received in client.events():
            if received.type == "error":
                error = received.event.get("error") or {}
                raise RuntimeError(f"error event: {error.get('code')}: {error.get('message')}")
            if received.type in types:
                return received.event
    raise RuntimeError("the server closed the session")


async def ask_typed(url: str, request: Request, profile: Profile, *, audio: bool, timeout_s: float = 180.0,
                    max_output_tokens: int | None = None) -> tuple[Answer, list[dict[str, Any]]]:
    """`request` typed on a fresh session, its reply asked for as audio or text; the answer
    (unscored) and the response's output items."""
    answer = Answer(request.id, request.category, "typed_audio" if audio else "typed_text")
    items: list[dict[str, Any]] = []
    try:
        client = await _open(url, profile)
    except Exception as exc:  # noqa: BLE001 - a refused session is a failed ask, reported
        answer.failure = f"session: {exc}"
        return answer, items
    try:
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": request.text}]}})
        response: dict[str, Any] = {"output_modalities": ["audio" if audio else "text"]}
        if max_output_tokens:
            response["max_output_tokens"] = max_output_tokens
        sent = time.monotonic()
        await client.send({"type": "response.create", "response": response})
        first = "response.output_audio.delta" if audio else "response.output_text.delta"
        async with asyncio.timeout(timeout_s):
            async for received in client.events():
                if received.type == first and answer.latency_ms is None:
                    answer.latency_ms = (received.at - sent) * 1000
                elif received.type == "error":
                    answer.failure = f"error: {received.event.get('error', {}).get('message')}"
                elif received.type == "response.done":
                    done = received.event["response"]
                    items = done.get("output") or []
                    if done.get("status") != "completed":
                        answer.failure = answer.failure or f"response {done.get('status')}"
                    break
    except TimeoutError:
        answer.failure = "no response.done"
    except Exception as exc:  # noqa: BLE001
        answer.failure = f"session: {exc}"
    finally:
        await client.close()
    answer.reply = reply_text(items)
    return answer, items


async def ask_spoken(url: str, request: Request, profile: Profile, voice: str,
                     timeout_s: float = 120.0) -> tuple[Answer, list[dict[str, Any]]]:
    """`request` spoken by `voice` on a fresh session at real-time pace, its end found by the
    server's turn detection; the answer (unscored) and the last response's output items."""
    from benchmarks.brain_speech import spoken_clip
    from benchmarks.turns import run_turn

    answer = Answer(request.id, request.category, "spoken", voice=voice, said=request.say or request.text)
    items: list[dict[str, Any]] = []
    clip = spoken_clip(request.id, request.say or request.text, voice)
    try:
        client = await _open(url, profile)
    except Exception as exc:  # noqa: BLE001
        answer.failure = f"session: {exc}"
        return answer, items
    events: list[tuple[float, dict[str, Any]]] = []
    try:
        turn = await run_turn(client, clip, timeout_s=timeout_s, events=events)
    finally:
        await client.close()
    answer.heard = turn.transcript
    answer.latency_ms = turn.voice_to_voice_ms
    responses = [e["response"] for _, e in events if e["type"] == "response.done"]
    if responses:
        items = responses[-1].get("output") or []
    if turn.failure and not (turn.failure == "no reply audio" and items):  # a bare function call has no audio
        answer.failure = turn.failure
    answer.reply = reply_text(items)
    return answer, items


async def run_brain(url: str, typed: list[Request], spoken: list[Request], profiles: dict[str, Profile],
                    voices: tuple[str, ...], modes: tuple[str, ...], progress: bool = True) -> list[Answer]:
    """Every ask for one server, a profile at a time (after WARM_ASKS unscored asks, so that every
    llama.cpp context holds that profile's prompt, as on a server that always serves it)."""
    answers: list[Answer] = []
    voice_of = {r.id: voices[k % len(voices)] for k, r in enumerate(spoken)}
    for name, profile in profiles.items():
        mine_typed = [r for r in typed if r.profile == name]
        mine_spoken = [r for r in spoken if r.profile == name]
        if not mine_typed and not mine_spoken:
            continue
        warm = Request("warm-up", "warm-up", name, "Hello.", accept=("hello",))
        for _ in range(WARM_ASKS):
            await ask_typed(url, warm, profile, audio=False, max_output_tokens=1)
        asks: list[tuple[Request, str]] = [(r, m) for r in mine_typed for m in modes if m != "spoken"]
        asks += [(r, "spoken") for r in mine_spoken if "spoken" in modes]
        for request, mode in asks:
            if mode == "spoken":
                answer, items = await ask_spoken(url, request, profile, voice_of[request.id])
            else:
                answer, items = await ask_typed(url, request, profile, audio=mode == "typed_audio")
            answers.append(score(answer, request, items, profile))
            if progress:
                mark = "ok " if answers[-1].correct else "-- "
                print(f"  {mark}{mode:<11} {request.id:<28} {answers[-1].failure or answers[-1].reply[:70]!r}",
                      flush=True)
    return answers


def _rate(answers: Iterable[Answer]) -> dict[str, Any]:
    answers = list(answers)
    right = sum(a.correct for a in answers)
    return {"correct": right, "of": len(answers), "rate": right / len(answers) if answers else None}


def _spread_ms(values: list[float]) -> dict[str, float | None]:
    return {"median": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


def summarise(answers: list[Answer]) -> dict[str, Any]:
    import jiwer

    from voice.asr.hallucination import normalise

    by_mode = {m: [a for a in answers if a.mode == m] for m in MODES}
    questions = {m: [a for a in group if a.call_valid is None] for m, group in by_mode.items()}
    tools = {m: [a for a in group if a.call_valid is not None] for m, group in by_mode.items()}
    categories = sorted({a.category for a in answers if a.call_valid is None})
    raw = by_mode["typed_text"]
    heard = [(normalise(a.said or ""), normalise(a.heard or "") or "-") for a in by_mode["spoken"]
             if a.heard is not None and normalise(a.said or "")]
    asr = float(jiwer.wer([said for said, _ in heard], [text for _, text in heard])) if heard else None
    return {
        "asks": {m: len(group) for m, group in by_mode.items()},
        "accuracy": {m: _rate(group) for m, group in questions.items() if group},
        "accuracy_by_category": {c: {m: _rate(a for a in group if a.category == c) for m, group in questions.items()
                                     if any(a.category == c for a in group)} for c in categories},
        "tool_calls": {m: {"valid": sum(bool(a.call_valid) for a in group), "correct": sum(a.correct for a in group),
                           "of": len(group)} for m, group in tools.items() if group},
        "spurious_calls": sum(a.spurious_call for a in answers),
        "words_per_reply": {m: statistics.median([a.words for a in group if not a.failure] or [0])
                            for m, group in by_mode.items() if group},
        "leaks": {kind: sum(kind in a.leaks for a in raw) for kind in ("markdown", "list", "emoji")}
        | {"any": sum(bool(a.leaks) for a in raw), "of": len(raw)},
        "first_text_ms": _spread_ms([a.latency_ms for a in by_mode["typed_text"] if a.latency_ms is not None]),
        "first_audio_typed_ms": _spread_ms([a.latency_ms for a in by_mode["typed_audio"]
                                            if a.latency_ms is not None]),
        "voice_to_voice_ms": _spread_ms([a.latency_ms for a in by_mode["spoken"] if a.latency_ms is not None]),
        "asr_wer": asr,
        "failed": sum(1 for a in answers if a.failure),
        "failures": sorted({a.failure for a in answers if a.failure}),
    }


def _pct(rate: dict[str, Any] | None) -> str:
    if not rate or not rate.get("of"):
        return "–"
    return f"{100 * rate['correct'] / rate['of']:.0f}% ({rate['correct']}/{rate['of']})"


def _ms(spread: dict[str, Any]) -> str:
    if not spread.get("n"):
        return "–"
    return f"{spread['median']:.0f} / {spread['p95']:.0f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Brain benchmark, {report['date']}", "",
             f"`{report['command']}` on {report['machine']['cpu']} ({report['machine']['cores']} cores); "
             f"{report['requests']['typed']} typed and {report['requests']['spoken']} spoken requests "
             f"(voices: {', '.join(report['voices'])}).", "",
             "| brain | typed, text out | typed, audio out | spoken | tool calls typed / spoken | words per reply "
             "| leaks (md/list/emoji) | first text typed ms (median / p95) | first audio typed ms | "
             "voice-to-voice ms | ASR WER | failed | load average |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for brain, result in report["brains"].items():
        s = result["summary"]
        calls = s["tool_calls"]
        tool = " / ".join(f"{calls[m]['correct']}/{calls[m]['of']}" if m in calls else "–"
                          for m in ("typed_text", "spoken"))
        leak = s["leaks"]
        wer = "–" if s["asr_wer"] is None else f"{s['asr_wer']:.3f}"
        lines.append(
            f"| {brain} | {_pct(s['accuracy'].get('typed_text'))} | {_pct(s['accuracy'].get('typed_audio'))} "
            f"| {_pct(s['accuracy'].get('spoken'))} | {tool} | {s['words_per_reply'].get('typed_text', '–')} "
            f"| {leak['markdown']}/{leak['list']}/{leak['emoji']} of {leak['of']} | {_ms(s['first_text_ms'])} "
            f"| {_ms(s['first_audio_typed_ms'])} | {_ms(s['voice_to_voice_ms'])} "
            f"| {wer} | {s['failed']} | {' → '.join(f'{v:.1f}' for v in s.get('load_average', []))} |")
    lines += ["", "Accuracy by category (typed, text out / spoken):", "",
              "| category | " + " | ".join(report["brains"]) + " |", "|---|" + "---|" * len(report["brains"])]
    categories = sorted({c for r in report["brains"].values() for c in r["summary"]["accuracy_by_category"]})
    for category in categories:
        cells = []
        for result in report["brains"].values():
            rates = result["summary"]["accuracy_by_category"].get(category, {})
            cells.append(" / ".join(_pct(rates.get(m)) for m in ("typed_text", "spoken")))
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.servers import voice_server

    profiles = load_profiles(args.profiles)
    requests = [r for r in load_requests(args.requests, profiles)
                if args.categories is None or r.category in args.categories]
    typed, spoken = spread(requests, args.typed), spread(requests, args.spoken)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.brain", *args.argv]),
        "machine": machine(),
        "requests": {"file": str(args.requests.name), "typed": len(typed), "spoken": len(spoken),
                     "typed_ids": [r.id for r in typed], "spoken_ids": [r.id for r in spoken]},
        "voices": list(args.voices),
        "modes": list(args.modes),
        "brains": {},
    }
    for brain in args.brains:
        print(f"{brain}:", flush=True)
        with voice_server("--llm-model", brain, *args.server_args, log=args.out / f"server-brain-{brain}.log",
                          timeout=600) as server:
            started, load = time.monotonic(), os.getloadavg()[0]
            answers = await run_brain(server.url, typed, spoken, profiles, tuple(args.voices), tuple(args.modes))
            summary = summarise(answers)
            summary["seconds"] = time.monotonic() - started
            # The machine's 1-minute load average (this run's server and client included) before and after.
            summary["load_average"] = [load, os.getloadavg()[0]]
        report["brains"][brain] = {"summary": summary, "answers": [asdict(a) for a in answers]}
        print(json.dumps({k: summary[k] for k in ("accuracy", "tool_calls", "voice_to_voice_ms")}), flush=True)
        save(report, args.out, args.name)  # after each brain: a long run that stops keeps what it measured
    return report


def rescore(report: dict[str, Any], requests: list[Request], profiles: dict[str, Profile]) -> dict[str, Any]:
    """`report` with every stored answer scored again, by the current scorer and accepted answers."""
    by_id = {r.id: r for r in requests}
    for result in report["brains"].values():
        answers = []
        for stored in result["answers"]:
            answer = Answer(**stored)
            request = by_id[answer.request]
            items = [{"type": "function_call", **call} for call in answer.calls]
            answers.append(score(answer, request, items, profiles[request.profile]))
        kept = {k: v for k, v in result["summary"].items() if k in ("seconds", "load_average")}
        result["summary"] = summarise(answers) | kept
        result["answers"] = [asdict(a) for a in answers]
    report["rescored"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return report


def save(report: dict[str, Any], out: Path, name: str) -> None:
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(report), encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.brain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brains", nargs="+", default=BRAINS, help="--llm-model values, one server each")
    parser.add_argument("--typed", type=int, default=None, help="typed requests (default: all)")
    parser.add_argument("--spoken", type=int, default=None, help="spoken requests (default: all)")
    parser.add_argument("--voices", nargs="+", default=["piper", "espeak", "flite"],
                        choices=["piper", "espeak", "flite"], help="voices that speak the requests, in turn")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all)")
    parser.add_argument("--requests", type=Path, default=DATA / "brain_requests.jsonl")
    parser.add_argument("--profiles", type=Path, default=DATA / "brain_profiles.json")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="more `voice serve` options, for every brain (last on the line)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--name", default="brain", help="results file stem")
    parser.add_argument("--rescore", action="store_true",
                        help="no servers: score the answers stored in OUT/NAME.json again (after a scorer or "
                             "accepted-answer change) and rewrite it")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        profiles = load_profiles(args.profiles)
        stored = json.loads((args.out / f"{args.name}.json").read_text(encoding="utf-8"))
        report = rescore(stored, load_requests(args.requests, profiles), profiles)
        save(report, args.out, args.name)
    else:
        report = asyncio.run(run(args))
    print(markdown(report))
    print(f"results in {args.out}/{args.name}.json and {args.name}.md")
    return report


if __name__ == "__main__":
    main()
