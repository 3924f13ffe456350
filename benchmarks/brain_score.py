"""Scoring a voice assistant's replies: accepted answers, markdown/list/emoji leaks, tool calls.

A request's `accept` lists alternatives, any of which makes a reply correct:
- a phrase ("paris", "ground floor"), found as whole words in the reply (or with a plural "s");
- a list of phrases, all of which must be found (["15", "october"]);
- {"number": 62.1, "tolerance": 1}: some number in the reply within the tolerance (default 0);
- "re:PATTERN", a regular expression searched in the reply.
`reject` lists phrases (or "re:" patterns) that make a reply wrong even when it has an accepted one.
Only a reply's first SCORED_WORDS words count: an answer that comes after a recital of the
instructions, or at the end of a ramble, is not one a listener waits for.
Reply and phrases are normalised alike: number words become digits ("twenty-three" -> 23,
"fifty six" -> 56), thousands separators and ordinal suffixes go ("1,000" -> 1000, "15th" -> 15),
case and punctuation go.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_KEEP = re.compile(r"[^\w\s.:]|(?<!\d)[.:]|[.:](?!\d)")  # drops punctuation, keeps 1.5 and 10:30

MARKDOWN = re.compile(r"\*\*|__|`|^\s{0,3}#{1,6}\s|\[[^\]]+\]\([^)]+\)|^\s*\|.*\|\s*$", re.MULTILINE)
LIST = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+\S", re.MULTILINE)
SCORED_WORDS = 50
EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d]")


def normalise(text: str) -> str:
    """Lower case, number words as digits, no punctuation but decimal points and clock colons."""
    from text_to_num import alpha2digit

    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text, flags=re.IGNORECASE)  # twenty-three, well-known
    text = alpha2digit(text, "en", threshold=0)
    text = _THOUSANDS.sub("", text.lower())
    text = _ORDINAL.sub(r"\1", text)
    text = text.replace("%", " percent ").replace("°", " degrees ")
    return " ".join(_KEEP.sub(" ", text).split())


def numbers(text: str) -> list[float]:
    """Every number in a normalised text."""
    return [float(match) for match in _NUMBER.findall(text)]


def _has_phrase(normalised: str, phrase: str) -> bool:
    if phrase.startswith("re:"):
        return re.search(phrase[3:], normalised) is not None
    wanted = normalise(phrase)
    if not wanted:
        raise ValueError(f"accepted phrase {phrase!r} normalises to nothing")
    plural = "(?:e?s)?" if wanted[-1].isalpha() else ""  # "assistance dog" in "assistance dogs"
    return re.search(rf"(?<![\w.]){re.escape(wanted)}{plural}(?![\w]|\.\d)", normalised) is not None


def _matches(normalised: str, alternative: Any) -> bool:
    if isinstance(alternative, str):
        return _has_phrase(normalised, alternative)
    if isinstance(alternative, list):
        return all(_has_phrase(normalised, phrase) for phrase in alternative)
    if isinstance(alternative, dict) and "number" in alternative:
        target, tolerance = float(alternative["number"]), float(alternative.get("tolerance", 0))
        return any(abs(value - target) <= tolerance + 1e-9 for value in numbers(normalised))
    raise ValueError(f"not an accepted answer: {alternative!r}")


def is_correct(reply: str, accept: list[Any], reject: list[str] | None = None) -> bool:
    """Whether `reply` holds one of the `accept` alternatives and none of the `reject` phrases."""
    if not accept:
        raise ValueError("a request needs at least one accepted answer")
    normalised = " ".join(normalise(reply).split()[:SCORED_WORDS])
    if any(_has_phrase(normalised, phrase) for phrase in reject or []):
        return False
    return any(_matches(normalised, alternative) for alternative in accept)


def leaks(raw: str) -> list[str]:
    """What a voice should not read out, found in a raw reply: markdown, a list, emoji."""
    found = []
    if MARKDOWN.search(raw):
        found.append("markdown")
    if LIST.search(raw):
        found.append("list")
    if EMOJI.search(raw):
        found.append("emoji")
    return found


def word_count(text: str) -> int:
    return len(re.findall(r"\w+(?:['’]\w+)?", text))


@dataclass(frozen=True)
class CallScore:
    called: bool
    """A function_call output item came back."""
    valid: bool
    """The expected function, with arguments that parse and validate against its JSON schema."""
    correct: bool
    """Valid, and the arguments say what was asked (the room, the minutes, the city)."""
    detail: str = ""


def score_call(expected: dict[str, Any], items: list[dict[str, Any]], tools: list[dict[str, Any]]) -> CallScore:
    """The first function_call among a response's output `items`, against the `expected` call
    ({"name", "arguments"}) and the declared `tools` (Realtime function tools)."""
    import jsonschema

    calls = [item for item in items if item.get("type") == "function_call"]
    if not calls:
        return CallScore(False, False, False, "no function_call")
    call = calls[0]
    if call.get("name") != expected["name"]:
        return CallScore(True, False, False, f"called {call.get('name')!r}")
    schema = next((t.get("parameters") or {} for t in tools if t.get("name") == expected["name"]), None)
    if schema is None:
        raise ValueError(f"{expected['name']} is not a declared tool")
    try:
        arguments = json.loads(call.get("arguments") or "")
        jsonschema.validate(arguments, schema)
    except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
        return CallScore(True, False, False, f"arguments: {str(exc).splitlines()[0]}")
    wrong = [name for name, value in expected["arguments"].items() if not argument_matches(value, arguments.get(name))]
    if wrong:
        return CallScore(True, True, False, f"arguments {json.dumps(arguments)}: wrong {', '.join(wrong)}")
    return CallScore(True, True, True)


def argument_matches(expected: Any, actual: Any) -> bool:
    """Strings: the expected words appear in the actual value ("living room" in "Living Room lamp");
    numbers: equal values; anything else: equal."""
    if isinstance(expected, bool) or expected is None:
        return actual is expected
    if isinstance(expected, int | float):
        return isinstance(actual, int | float) and not isinstance(actual, bool) and float(actual) == float(expected)
    if isinstance(expected, str):
        return isinstance(actual, str) and _has_phrase(normalise(actual), expected)
    return expected == actual
