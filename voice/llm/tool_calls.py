"""Tool calls in a model's own text format (Qwen2.5's and Hermes': `<tool_call>{"name": ..., "arguments": ...}`).

Sans-I/O: the grammar that holds a call's JSON to the tools' schemas, the spotter that finds a
call's opening in streamed text (keeping the markup out of what is spoken), the parsing of a
finished call, and the chat messages a template is given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from voice.llm.base import ChatMessage, Tool, ToolCall

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

# For chat templates that know nothing of tools: the same words Qwen2.5's template uses.
_FALLBACK_TOOLS = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
    "</tool_call>"
)


def call_schema(tools: tuple[Tool, ...]) -> dict[str, Any]:
    """The JSON schema of one call's body: `{"name": one of the tools, "arguments": its parameters}`."""
    def one(tool: Tool) -> dict[str, Any]:
        parameters = tool.parameters or {"type": "object"}
        return {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": parameters},
                "required": ["name", "arguments"], "additionalProperties": False}

    variants = [one(tool) for tool in tools]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def call_grammar(tools: tuple[Tool, ...]) -> str:
    """A llama.cpp GBNF grammar for a call's JSON body (after the `<tool_call>` opening), built
    from the tools' schemas: whatever the model writes under it parses and validates. A schema the
    converter cannot express falls back to any JSON object for the arguments (checked later)."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    try:
        body = json_schema_to_gbnf(json.dumps(call_schema(tools)))
    except Exception:  # noqa: BLE001 - the converter's errors are of many kinds
        loose = tuple(Tool(t.name, t.description, {"type": "object"}) for t in tools)
        try:
            body = json_schema_to_gbnf(json.dumps(call_schema(loose)))
        except Exception:  # noqa: BLE001
            return JSON_GBNF
    return body.replace("root ::= ", "call ::= ", 1) + '\nroot ::= [ \\n]* call\n'


_NAME = re.compile(r'\{\s*"name"\s*:\s*"([^"]*)"')


def called_name(body: str) -> str | None:
    """The function a call's body names, once its name is written (None before)."""
    found = _NAME.search(body)
    return found.group(1) if found else None


def parse_call(body: str) -> ToolCall:
    """A call from its JSON body (`{"name": ..., "arguments": {...}}`); ValueError if it is none."""
    value = json.loads(body.strip().removesuffix(CLOSE).strip())
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"not a tool call: {body[:80]!r}")
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        arguments = json.loads(arguments)
    return ToolCall(value["name"], json.dumps(arguments, ensure_ascii=False))


def repeats(call: ToolCall, messages: list[ChatMessage]) -> bool:
    """Whether `call` is one already made and answered since the user last spoke: small models call
    again after the output instead of saying the result, and that call is dropped for words."""
    for message in reversed(messages):
        if message.role == "user":
            return False
        for made in message.tool_calls:
            if made.name == call.name and _as_object(made.arguments) == _as_object(call.arguments):
                return True
    return False


# Number words a spoken request gives a number argument with ("half an hour", "a dozen").
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "half quarter dozen couple few hour hours minute minutes second seconds".split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _choices(schema: Any) -> set[str]:
    """The strings a schema offers to choose from (`enum`, `const`), anywhere in it."""
    if isinstance(schema, list):
        return {choice for item in schema for choice in _choices(item)}
    if not isinstance(schema, dict):
        return set()
    offered = {str(v) for v in schema.get("enum", ())} | ({str(schema["const"])} if "const" in schema else set())
    return offered | {choice for value in schema.values() for choice in _choices(value)}


def grounded(call: ToolCall, said: str, tools: tuple[Tool, ...] = ()) -> bool:
    """Whether `call`'s arguments come from what the user said: each free-text argument shares a
    word with it (by its first four letters: "lights" names "light"), and a number argument has a
    number or a number word to come from. True/false arguments and a schema's own choices (`enum`)
    need no words."""
    heard = _words(said)
    stems = {word[:4] for word in heard}
    choices = {choice for tool in tools if tool.name == call.name for choice in _choices(tool.parameters)}
    for leaf in _leaves(_as_object(call.arguments)):
        if isinstance(leaf, bool) or leaf is None or (isinstance(leaf, str) and leaf in choices):
            continue
        if isinstance(leaf, (int, float)):
            if not any(word.isdigit() or word in _NUMBER_WORDS for word in heard):
                return False
        elif isinstance(leaf, str) and (words := _words(leaf)) and not any(word[:4] in stems for word in words):
            return False
    return True


def text_call(body: str, tools: tuple[Tool, ...]) -> ToolCall | None:
    """A call to one of `tools` written as text after its opening (markup, bare JSON or a fenced
    block), as servers that did not parse it pass it on; None if it is none. The first whole JSON
    object counts: a model that is made to call (`tool_choice` required) without a grammar may
    write the call again and again until its token limit."""
    start = body.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(body, start)
        call = parse_call(json.dumps(value))
    except (ValueError, json.JSONDecodeError):
        return None
    return call if any(tool.name == call.name for tool in tools) else None


@dataclass
class Spotted:
    """What a piece of streamed text holds: words to say, and whether a call opened after them."""

    text: str
    opened: bool = False
    rest: str = ""
    """Once opened: what came after the opening in the same piece (the call's body begins there)."""


# Where a call opens inside a reply's text: the markup, or the JSON or fence models write instead
# of it, after words ("Here is the call: {"name": ...}"), which a reply never says otherwise.
_BARE_OPENINGS = ('{"name"', "```json")


class CallSpotter:
    """Finds a call's opening in streamed reply text: the `<tool_call>` markup; a reply that begins
    with `{` or a code fence (small models leave the markup out; nobody says a brace); or a call's
    JSON or fence after words. Text that cannot be the start of an opening passes at once; a tail
    that might be (`<`, `<tool`, `{"na`) waits for the next piece, so the markup is never spoken."""

    def __init__(self, opening: str = OPEN) -> None:
        self.opening = opening
        self._held = ""
        self._begun = False  # words came before
        self.opened = False

    def feed(self, piece: str) -> Spotted:
        if self.opened:
            return Spotted("", True)
        text = self._held + piece
        self._held = ""
        if not self._begun:
            if not text.strip():
                self._held = text
                return Spotted("")
            self._begun = True
            if text.lstrip().startswith(("{", "`")):
                self.opened = True
                return Spotted("", True, text.lstrip())
        found = [(at, opening) for opening in (self.opening, *_BARE_OPENINGS) if (at := text.find(opening)) >= 0]
        if found:
            at, opening = min(found)
            self.opened = True
            rest = text[at + len(opening):] if opening == self.opening else text[at:]
            return Spotted(text[:at], True, rest)
        for keep in range(min(max(map(len, (self.opening, *_BARE_OPENINGS))) - 1, len(text)), 0, -1):
            if any(opening.startswith(text[-keep:]) for opening in (self.opening, *_BARE_OPENINGS)):
                self._held = text[-keep:]
                return Spotted(text[:-keep])
        return Spotted(text)

    def flush(self) -> str:
        """The text still held at the end of the reply (it was not an opening after all)."""
        held, self._held = self._held, ""
        return held


def template_messages(messages: list[ChatMessage], tools: tuple[Tool, ...], template_knows_tools: bool
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages (and tools) as a chat template wants them. A template that knows tools (it reads
    `tools`, and its calls' arguments as objects) gets them as they are; one that does not gets the
    tools described in its system message, calls and results written as text in the Hermes format."""
    if template_knows_tools:
        rendered = []
        for message in messages:
            item = message.as_dict()
            if message.tool_calls:
                item["tool_calls"] = [{"id": c.call_id, "type": "function",
                                       "function": {"name": c.name, "arguments": _as_object(c.arguments)}}
                                      for c in message.tool_calls]
            rendered.append(item)
        return rendered, [tool.as_dict() for tool in tools] or None
    rendered = []
    for message in messages:
        if message.role == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"})
        elif message.tool_calls:
            calls = "\n".join(f'{OPEN}\n{{"name": {json.dumps(c.name)}, "arguments": {c.arguments}}}\n{CLOSE}'
                              for c in message.tool_calls)
            rendered.append({"role": "assistant", "content": f"{message.content}\n{calls}".strip()})
        else:
            rendered.append({"role": message.role, "content": message.content})
    if tools and rendered and rendered[0]["role"] == "system":
        listing = "".join("\n" + json.dumps(tool.as_dict(), ensure_ascii=False) for tool in tools)
        rendered[0] = {"role": "system", "content": rendered[0]["content"] + _FALLBACK_TOOLS.format(tools=listing)}
    return _merge_roles(rendered), None


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive messages of one role as one (templates want user and assistant in turn)."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"] and len(merged) > 1:
            merged[-1] = {**merged[-1], "content": f"{merged[-1]['content']}\n{message['content']}"}
        else:
            merged.append(message)
    return merged


def _as_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return {}
